"""The page's files as HTTP serves them: no browser needed, so these run with the unit tests.
Everything comes from this origin (the page works offline), with a policy that forbids the rest."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from service.api.playground import MEDIA_TYPES, STATIC
from service.app import create_app
from tests.service.conftest import SettingsFactory
from tests.service.support import assert_error

SVG_NAMESPACE = "http://www.w3.org/2000/svg"


@pytest.fixture(scope="module")
def plain(make_settings: SettingsFactory) -> TestClient:
    """The app without its lifespan: no model is loaded, which the page's files do not need."""
    return TestClient(create_app(make_settings()))


def test_the_page_is_served_with_a_strict_content_security_policy(plain: TestClient) -> None:
    response = plain.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="/static/playground.js"></script>' in response.text


def test_head_answers_like_get_without_a_body(plain: TestClient) -> None:
    for path in ("/", "/static/playground.js"):
        got, head = plain.get(path), plain.head(path)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-security-policy"] == got.headers["content-security-policy"]
        assert head.headers["content-length"] == str(len(got.content))


@pytest.mark.parametrize("name", sorted(MEDIA_TYPES))
def test_each_static_file_is_served_with_its_type(plain: TestClient, name: str) -> None:
    response = plain.get(f"/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == MEDIA_TYPES[name]
    assert response.content == (STATIC / name).read_bytes()


@pytest.mark.parametrize("path", ["/static/app.py", "/static/..%2fapp.py", "/static/index.html"])
def test_only_the_listed_files_are_served(plain: TestClient, path: str) -> None:
    assert_error(plain.get(path), 404, "not_found")


def test_nothing_is_loaded_from_another_origin() -> None:
    for path in STATIC.iterdir():
        urls = set(re.findall(r"\b(?:https?:)?//[\w.-]+[^\s\"')]*", path.read_text()))
        assert urls <= {SVG_NAMESPACE}, (path.name, urls)


def test_the_html_has_no_inline_script_or_style() -> None:
    html = (STATIC / "index.html").read_text()
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", html))
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html)


def test_the_page_is_open_when_an_api_key_is_required(make_settings: SettingsFactory) -> None:
    client = TestClient(create_app(make_settings(api_key="secret")))
    assert client.get("/").status_code == 200
    assert client.get("/static/playground.js").status_code == 200
    assert_error(client.post("/next-word", json={"text": "the "}), 401, "unauthorized")


def test_the_page_is_not_part_of_the_api_reference(plain: TestClient) -> None:
    paths = plain.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not any(path.startswith("/static") for path in paths)
