"""The playground page end to end: suggestions, sentiment, streamed generation and its stop
button, errors from the service, and the loading and failed states."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.browser.conftest import LiveServer, Page, live_server
from tests.service.conftest import SettingsFactory
from tests.service.support import engine_blocked, wait_until

pytestmark = pytest.mark.browser

REVIEW = "A great film with a superb cast ! The plot was moving ."


@pytest.fixture(scope="module")
def served(make_settings: SettingsFactory) -> Iterator[LiveServer]:
    """One ready server for the tests that do not change its state."""
    with live_server(make_settings()) as server:
        yield server


def _open_ready(page: Page, server: LiveServer) -> None:
    page.open(server.url + "/")
    page.wait_for_state("ready")


def _chips(page: Page) -> list[str]:
    """The suggestion chips' words (each chip reads "word 12.3%")."""
    chips = page.find("next-word-chips").find_elements(By.CSS_SELECTOR, "button.chip")
    return [chip.text.rsplit(" ", 1)[0] for chip in chips]


def test_typing_suggests_three_words_and_a_chip_appends_its_word(
    page: Page, served: LiveServer
) -> None:
    _open_ready(page, served)
    box = page.find("next-word-input")
    box.send_keys("the hist")
    page.wait(lambda: page.text("next-word-status").startswith("Completing “hist”"), "completions")
    assert set(_chips(page)) >= {"history", "historical"}
    for chip in page.find("next-word-chips").find_elements(By.CSS_SELECTOR, "button.chip"):
        assert re.fullmatch(r"\S+ \d+\.\d%", chip.text), chip.text
    # keyboard only: Tab from the text box reaches the first chip, Enter takes it
    first = _chips(page)[0]
    box.send_keys(Keys.TAB)
    page.driver.switch_to.active_element.send_keys(Keys.ENTER)
    page.wait(lambda: box.get_attribute("value") == f"the {first} ", "the chip's word appended")
    page.wait(lambda: page.text("next-word-status").startswith("Next word:"), "next words")
    page.wait(lambda: len(_chips(page)) == 3, "three suggestions")
    # a click appends the next word after the space
    word = _chips(page)[1]
    page.find("next-word-chips").find_elements(By.CSS_SELECTOR, "button.chip")[1].click()
    page.wait(lambda: box.get_attribute("value") == f"the {first} {word} ", "the click's word")
    assert page.script_errors() == []


def test_an_answer_to_an_older_text_never_replaces_the_newer_one(
    page: Page, served: LiveServer
) -> None:
    _open_ready(page, served)
    box = page.find("next-word-input")
    with engine_blocked(served.state.engine):  # answers wait until both texts were asked about
        box.send_keys("the hist")
        time.sleep(0.4)  # past the debounce: "the hist" is asked
        box.send_keys("o")
        time.sleep(0.4)  # "the histo" is asked; the first request is given up
    page.wait(lambda: page.text("next-word-status").startswith("Completing “histo”"), "answer")
    time.sleep(0.3)
    assert page.text("next-word-status").startswith("Completing “histo”")


def test_a_review_shows_its_label_shaded_tokens_and_chart(page: Page, served: LiveServer) -> None:
    expected = httpx.post(
        served.url + "/sentiment", json={"text": REVIEW, "explain": True, "trajectory": True}
    ).json()
    _open_ready(page, served)
    page.find("sentiment-input").send_keys(REVIEW)
    page.find("sentiment-input").send_keys(Keys.CONTROL, Keys.ENTER)  # submit from the keyboard
    page.wait(lambda: page.find("sentiment-result").is_displayed(), "the sentiment result")
    assert page.text("sentiment-label").lower() == expected["label"]
    assert page.text("sentiment-score") == f"{expected['score'] * 100:.1f}%"
    tokens = page.find("sentiment-tokens")
    assert tokens.text == REVIEW
    spans = tokens.find_elements(By.CSS_SELECTOR, "span.token")
    shaded = [REVIEW[t["start"] : t["end"]] for t in expected["explanation"]]
    assert [span.text for span in spans] == shaded
    for span, token in zip(spans, expected["explanation"], strict=True):
        direction = "positive" if token["contribution"] >= 0 else "negative"
        assert direction in (span.get_attribute("class") or "")
        weight = page.driver.execute_script(
            "return arguments[0].style.getPropertyValue('--weight')", span
        )
        assert 0 <= float(weight) <= 1
    assert "Strongest towards" in page.text("sentiment-summary")
    chart = page.find("sentiment-chart").find_element(By.TAG_NAME, "svg")
    line = chart.find_element(By.TAG_NAME, "polyline").get_attribute("points") or ""
    assert len(line.split()) == len(expected["trajectory"])
    assert len(chart.find_elements(By.TAG_NAME, "circle")) == len(expected["trajectory"])
    assert page.script_errors() == []


def test_a_generation_streams_the_same_text_the_api_returns(page: Page, served: LiveServer) -> None:
    settings = {"prompt": "to be", "max_new_tokens": 40, "seed": 3, "temperature": 1.0}
    expected = httpx.post(served.url + "/generate", json=settings).json()
    _open_ready(page, served)
    prompt = page.find("generate-prompt")
    prompt.clear()
    prompt.send_keys("to be")
    for field, value in (("max-tokens", 40), ("seed", 3), ("temperature", 1)):
        page.find(f"generate-{field}").clear()
        page.find(f"generate-{field}").send_keys(str(value))
    page.find("generate-submit").click()
    page.wait(lambda: page.text("generate-status").startswith("Done"), "the done event")
    assert page.find("generate-text").get_attribute("textContent") == expected["text"]
    assert page.text("generate-status").startswith("Done: 40 tokens (the limit), seed 3")
    assert page.find("generate-submit").is_enabled()
    assert not page.find("generate-stop").is_enabled()
    assert page.script_errors() == []


def _generated_tokens(server: LiveServer) -> float:
    metrics = httpx.get(server.url + "/metrics").text
    found = re.search(
        r'^lstm_serve_generated_tokens_total\{model="generate"\} (\S+)$', metrics, re.M
    )
    return float(found.group(1)) if found else 0.0


def test_the_stop_button_ends_the_stream_and_the_generation(
    page: Page, make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with live_server(make_settings()) as server:
        scheduler = server.state.engine.local_worker().served["generate"].scheduler
        assert scheduler is not None
        step = scheduler.step

        def slow_step() -> None:  # 2,000 tokens take 20 s: the stop comes long before the end
            time.sleep(0.01)
            step()

        monkeypatch.setattr(scheduler, "step", slow_step)
        _open_ready(page, server)
        page.find("generate-max-tokens").clear()
        page.find("generate-max-tokens").send_keys("2000")
        page.find("generate-submit").click()
        output = page.find("generate-text")

        def shown() -> int:
            return len(output.get_attribute("textContent") or "")

        page.wait(lambda: shown() >= 5, "the first tokens")
        for _ in range(2):  # it grows while we watch: streamed, not sent at the end
            before = shown()
            page.wait(lambda before=before: shown() > before, "more tokens")
        assert page.find("generate-stop").is_enabled()
        assert scheduler.active() == 1
        page.find("generate-stop").click()
        status = page.find("generate-status")
        page.wait(
            lambda: status.text.startswith("Stopped after"), "stopped", seen=lambda: status.text
        )
        wait_until(lambda: scheduler.active() == 0, 5, "the server to drop the generation")
        text, counted = output.get_attribute("textContent"), _generated_tokens(server)
        time.sleep(0.3)
        assert output.get_attribute("textContent") == text
        assert _generated_tokens(server) == counted < 2000
        assert page.find("generate-submit").is_enabled()
        assert not page.find("generate-stop").is_enabled()
        assert page.script_errors() == []


def test_the_services_error_message_is_shown(page: Page, served: LiveServer) -> None:
    _open_ready(page, served)
    page.paste("sentiment-input", "a" * 600)  # the tests' limit is 500 characters
    page.find("sentiment-submit").click()
    error = page.find("sentiment-error")
    page.wait(error.is_displayed, "the error")
    assert "`text` has 600 characters; the limit is 500" in error.text
    assert "HTTP 422 · validation_error · request " in error.text
    assert not page.find("sentiment-result").is_displayed()
    # the next request that succeeds clears it
    page.paste("sentiment-input", REVIEW)
    page.find("sentiment-submit").click()
    page.wait(lambda: not error.is_displayed(), "the error to clear")


def test_a_missing_model_is_reported_and_its_requests_fail_visibly(
    page: Page, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    models = ["next-word", "generate", f"sentiment={tmp_path / 'absent'}"]
    with live_server(make_settings(models=models, allow_partial=True)) as server:
        _open_ready(page, server)
        assert page.text("service-status") == "Ready, but unavailable: sentiment."
        listed = page.find("models-list")
        page.wait(lambda: "sentiment — unavailable" in listed.text, "the unavailable model")
        assert "next-word — next-word · GRU language-model" in listed.text
        page.paste("sentiment-input", REVIEW)
        page.find("sentiment-submit").click()
        error = page.find("sentiment-error")
        page.wait(error.is_displayed, "the error")
        # the model that would serve it failed to load: 503 model_unavailable, as when named
        assert "no loaded model serves sentiment; failed to load: sentiment" in error.text
        assert "HTTP 503 · model_unavailable" in error.text


def test_the_api_key_is_asked_for_and_sent(page: Page, make_settings: SettingsFactory) -> None:
    with live_server(make_settings(api_key="open sesame")) as server:
        _open_ready(page, server)  # the page itself needs no key
        page.find("next-word-input").send_keys("the ")
        error = page.find("next-word-error")
        page.wait(error.is_displayed, "the 401 error")
        assert "missing or wrong API key" in error.text and "HTTP 401" in error.text
        assert page.find("api-key").get_attribute("open") is not None
        page.find("api-key-input").send_keys("open sesame", Keys.ENTER)
        page.wait(lambda: len(_chips(page)) == 3, "suggestions with the key")
        assert not error.is_displayed()
        stored = page.driver.execute_script("return sessionStorage.getItem('lstm-serve-api-key')")
        assert stored == "open sesame"


def test_the_loading_state_is_shown_until_the_models_are_ready(
    page: Page, make_settings: SettingsFactory
) -> None:
    release = threading.Event()

    def gate(app: FastAPI) -> None:
        registry = app.state.service.registry
        load_all = registry.load_all

        def gated_load_all() -> Any:
            release.wait(20)
            return load_all()

        registry.load_all = gated_load_all

    try:
        with live_server(make_settings(), prepare=gate, ready=False) as server:
            page.open(server.url + "/")
            page.wait_for_state("loading")
            assert "loading its models" in page.text("service-status")
            for control in ("next-word-input", "sentiment-submit", "generate-submit"):
                assert not page.find(control).is_enabled(), control
            release.set()
            page.wait_for_state("ready")
            assert page.find("sentiment-submit").is_enabled()
            page.wait(lambda: "sentiment — sentiment" in page.text("models-list"), "the models")
    finally:
        release.set()


def test_a_failed_start_is_shown_with_the_reason(
    page: Page, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    models = ["sentiment", f"extra={tmp_path / 'absent'}"]
    with live_server(make_settings(models=models), ready=False) as server:
        page.open(server.url + "/")
        page.wait_for_state("failed")
        assert "failed to start" in page.text("service-status")
        page.wait(lambda: "extra — unavailable" in page.text("models-list"), "the reason")
        assert not page.find("sentiment-submit").is_enabled()


def test_the_page_fits_a_phone_screen(page: Page, served: LiveServer) -> None:
    page.driver.set_window_size(390, 844)
    _open_ready(page, served)
    overflow = page.driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow == 0
    panels = page.driver.find_elements(By.CSS_SELECTOR, ".panel")
    assert len({panel.location["x"] for panel in panels}) == 1  # stacked in one column
    assert page.script_errors() == []
