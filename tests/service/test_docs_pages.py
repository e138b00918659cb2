"""/docs and /redoc: served from the package with the playground's policy, nothing from a CDN."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from service.api.playground import CONTENT_SECURITY_POLICY, DOCS_ASSETS


def _loaded(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', page)


def test_swagger_ui_page_loads_only_files_of_the_service(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert _loaded(response.text) == [
        "static/icon.svg",
        "docs/assets/swagger-ui.css",
        "docs/assets/swagger-ui-bundle.js",
        "docs/assets/swagger-init.js",
    ]


def test_redoc_page_admits_its_own_styles_by_a_fresh_nonce(client: TestClient) -> None:
    first, second = client.get("/redoc"), client.get("/redoc")
    assert first.status_code == 200
    nonces = []
    for response in (first, second):
        nonce = re.search(r'data-style-nonce="([\w-]{20,})"', response.text)
        assert nonce is not None, response.text
        policy = response.headers["content-security-policy"]
        assert f"style-src 'self' 'nonce-{nonce[1]}' 'sha256-" in policy
        assert "script-src 'self';" in policy and "unsafe" not in policy
        nonces.append(nonce[1])
    assert nonces[0] != nonces[1]
    assert _loaded(first.text) == [
        "static/icon.svg",
        "docs/assets/redoc.standalone.js",
        "docs/assets/redoc-init.js",
    ]


def test_every_docs_asset_is_served_from_the_package(client: TestClient) -> None:
    for name, (path, media_type) in DOCS_ASSETS.items():
        response = client.get(f"/docs/assets/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == media_type
        assert response.content == path.read_bytes()
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_an_unknown_docs_asset_is_a_404_envelope(client: TestClient) -> None:
    response = client.get("/docs/assets/..%2Fsettings.py")
    assert response.status_code == 404
    assert response.json()["error_type"] == "not_found"


def test_the_openapi_document_lists_no_docs_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [path for path in paths if path.startswith(("/docs", "/redoc"))]
