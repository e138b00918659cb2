"""The playground page driven in headless Chromium against a real uvicorn server (in a thread of
this process, so a test can reach into the engine), serving the tiny checkpoints of the service
tests. On failure each test leaves a screenshot and the browser's console log in test-artifacts/."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from service.api.deps import ServiceState
from service.app import create_app
from service.settings import Settings

# The service tests' fixtures: tiny checkpoints written once, settings with small limits, and no
# LSTM_SERVE_* variable from the caller's shell.
from tests.service.conftest import (  # noqa: F401
    _no_service_environment,
    checkpoints,
    make_settings,
)
from tests.service.support import wait_ready, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)
REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@dataclass
class LiveServer:
    url: str
    app: FastAPI

    @property
    def state(self) -> ServiceState:
        state: ServiceState = self.app.state.service
        return state


@contextmanager
def live_server(
    settings: Settings, prepare: Callable[[FastAPI], None] | None = None, ready: bool = True
) -> Iterator[LiveServer]:
    """uvicorn on a free loopback port in a thread; `prepare` may patch the app before it starts.
    By default, yields once every model is ready."""
    app = create_app(settings)
    if prepare is not None:
        prepare(app)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound here and handed over: no race for the port
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        wait_until(lambda: server.started, 15, "uvicorn to start")
        if ready:
            with httpx.Client(base_url=url) as client:
                wait_ready(client)
        yield LiveServer(url, app)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@dataclass
class Page:
    """The browser on one page, with the waits and reads the tests share."""

    driver: WebDriver
    console: list[dict[str, Any]] = field(default_factory=list)

    def open(self, url: str) -> None:
        self.driver.get(url)

    def find(self, element_id: str) -> WebElement:
        return self.driver.find_element("id", element_id)

    def text(self, element_id: str) -> str:
        return str(self.find(element_id).text)

    def wait(
        self,
        condition: Callable[[], object],
        what: str,
        timeout: float = 10,
        seen: Callable[[], object] | None = None,
    ) -> Any:
        """Poll `condition` until it is truthy; fail naming `what` after `timeout` seconds, and
        what `seen` reads then (the state the page was left in)."""
        wait = WebDriverWait(self.driver, timeout, poll_frequency=0.05)
        try:
            return wait.until(lambda _: condition())
        except TimeoutException:
            found = f"; found {seen()!r}" if seen is not None else ""
            raise TimeoutException(f"timed out waiting for {what}{found}") from None

    def wait_for_state(self, state: str) -> None:
        status = self.find("service-status")
        self.wait(lambda: status.get_attribute("data-state") == state, f"service state {state}")

    def paste(self, element_id: str, text: str) -> None:
        """Set a text field's value at once, as a paste does (typing 600 characters is slow)."""
        element = self.find(element_id)
        self.driver.execute_script(
            "arguments[0].value = arguments[1];"
            "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
            element,
            text,
        )

    def read_console(self) -> list[dict[str, Any]]:
        self.console.extend(self.driver.get_log("browser"))
        return self.console

    def script_errors(self) -> list[str]:
        """Console errors other than failed requests (which error tests cause on purpose): a
        script exception or a Content-Security-Policy violation shows up here."""
        return [
            entry["message"]
            for entry in self.read_console()
            if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
        ]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so the page fixture knows whether the test failed."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium for the session, from Debian's packages (nothing is downloaded)."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        reason = f"{' and '.join(missing)} missing: run scripts/install-browser.sh"
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run on CI: {reason}", pytrace=False)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser: WebDriver, request: pytest.FixtureRequest) -> Iterator[Page]:
    """The browser for one test; its screenshot and console log are saved if the test fails."""
    page = Page(browser)
    yield page
    reports = request.node.stash.get(REPORTS, {})
    if any(report.failed for report in reports.values()):
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / f"{request.node.name}.png"))
        lines = [f"{e['level']} {e['message']}" for e in page.read_console()]
        (ARTIFACTS / f"{request.node.name}.console.log").write_text("\n".join(lines) + "\n")
    browser.get("about:blank")  # leave no page polling a server that is about to stop
    browser.set_window_size(1280, 900)
