"""/docs (Swagger UI) and /redoc (ReDoc) in headless Chromium with the network cut: every host
name but the server's fails to resolve, as on a machine without internet. Each page must list
every operation of the OpenAPI document, with no script error and nothing refused by the
Content-Security-Policy except loads from another origin (which the page does without)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from tests.browser.conftest import (
    CHROMEDRIVER,
    CHROMIUM,
    CHROMIUM_FLAGS,
    LiveServer,
    Page,
    live_server,
)
from tests.service.conftest import SettingsFactory

pytestmark = pytest.mark.browser
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
OTHER_ORIGIN_LOAD = re.compile(r"Loading the \w+ '(https?://[^']+)' violates")


@pytest.fixture(scope="module")
def offline_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.skip(f"{' and '.join(missing)} missing: run scripts/install-browser.sh")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, OFFLINE):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-offline')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def served(make_settings: SettingsFactory) -> Iterator[LiveServer]:
    with live_server(make_settings()) as server:
        yield server


def _operations(server: LiveServer) -> dict[tuple[str, str], str]:
    """(METHOD, path) -> operationId of every operation the OpenAPI document lists."""
    paths = httpx.get(server.url + "/openapi.json").json()["paths"]
    return {
        (method.upper(), path): operation["operationId"]
        for path, methods in paths.items()
        for method, operation in methods.items()
    }


def _problems(page: Page, server: LiveServer) -> list[str]:
    """Console errors, less the refused loads from another origin (blocked, as offline)."""
    problems = []
    for message in page.script_errors():
        other = OTHER_ORIGIN_LOAD.search(message)
        if other is None or other[1].startswith(server.url):
            problems.append(message)
    return problems


def test_swagger_ui_lists_every_operation_offline(
    offline_browser: WebDriver, served: LiveServer
) -> None:
    page = Page(offline_browser)
    operations = _operations(served)
    page.open(served.url + "/docs")

    def listed() -> set[tuple[str, str]]:
        blocks = page.driver.find_elements(By.CSS_SELECTOR, ".opblock-summary")
        return {
            (
                block.find_element(By.CSS_SELECTOR, ".opblock-summary-method").text,
                block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").text.replace(
                    "\u200b", ""
                ),
            )
            for block in blocks
        }

    page.wait(lambda: listed() == set(operations), "every operation in Swagger UI")
    assert len(operations) >= 9
    assert _problems(page, served) == []


def test_redoc_lists_every_operation_offline(
    offline_browser: WebDriver, served: LiveServer, tmp_path: Path
) -> None:
    page = Page(offline_browser)
    operations = _operations(served)
    page.open(served.url + "/redoc")

    def listed() -> set[str]:
        sections = page.driver.find_elements(By.CSS_SELECTOR, "[data-section-id]")
        ids = (section.get_attribute("data-section-id") or "" for section in sections)
        return {sid.rsplit("/", 1)[-1] for sid in ids if "operation/" in sid}

    page.wait(lambda: listed() >= set(operations.values()), "every operation in ReDoc")
    # ReDoc's own styles applied (refused, its menu would be an unstyled list)
    menu = page.driver.find_element(By.CSS_SELECTOR, ".menu-content")
    assert menu.value_of_css_property("position") in {"sticky", "fixed"}
    assert _problems(page, served) == []
