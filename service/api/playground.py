"""The playground page at `/`: one static HTML page, its script, style sheet and icon, served from
the package (no build step, nothing from another origin). Open without the API key: the page asks
for it and sends it with its own requests. The API reference at `/docs` (Swagger UI) and `/redoc`
(ReDoc), with their assets from the `fastapi-offline` package: they work offline too."""

from __future__ import annotations

import secrets
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

STATIC = Path(__file__).resolve().parent.parent / "static"
VENDOR = Path(str(files("fastapi_offline") / "static"))  # Swagger UI's and ReDoc's bundles
MEDIA_TYPES = {
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
# Everything the page loads comes from this origin; no inline script or style, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# The API reference's files: its pages' own scripts, and the bundles the package ships.
DOCS_ASSETS = {
    "swagger-init.js": (STATIC / "swagger-init.js", "text/javascript; charset=utf-8"),
    "redoc-init.js": (STATIC / "redoc-init.js", "text/javascript; charset=utf-8"),
    "swagger-ui-bundle.js": (VENDOR / "swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": (VENDOR / "swagger-ui.css", "text/css; charset=utf-8"),
    "redoc.standalone.js": (VENDOR / "redoc.standalone.js", "text/javascript; charset=utf-8"),
}
# Hashes of the <style> elements redoc.standalone.js (ReDoc 2.5) inserts as it loads: the
# scroll bars' styles, and an empty one. Another bundle may insert others: the browser test
# (tests/browser/test_docs.py) then sees them refused and names them.
REDOC_LOAD_STYLES = (
    "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc=' "
    "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidate, so an upgraded service never runs an old script
}

router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
async def page() -> FileResponse:
    """The playground page."""
    return FileResponse(
        STATIC / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS
    )


@router.api_route("/static/{name}", methods=["GET", "HEAD"])
async def static_file(name: str) -> FileResponse:
    """One of the page's own files (a fixed list: no path from the request reaches the disk)."""
    media_type = MEDIA_TYPES.get(name)
    if media_type is None:
        raise HTTPException(404, f"no static file {name!r}")
    return FileResponse(STATIC / name, media_type=media_type, headers=HEADERS)


@router.api_route("/docs", methods=["GET", "HEAD"])
async def swagger_ui() -> FileResponse:
    """The API reference in Swagger UI (try each operation from the page)."""
    return FileResponse(
        STATIC / "docs.html", media_type="text/html; charset=utf-8", headers=HEADERS
    )


@router.api_route("/redoc", methods=["GET", "HEAD"])
async def redoc() -> HTMLResponse:
    """The API reference in ReDoc."""
    # ReDoc's styles go into <style> elements: the policy admits those with this answer's nonce,
    # and the two the bundle inserts as it loads, before it is given the nonce, by their hashes
    nonce = secrets.token_urlsafe(16)
    policy = CONTENT_SECURITY_POLICY.replace(
        "style-src 'self'", f"style-src 'self' 'nonce-{nonce}' {REDOC_LOAD_STYLES}"
    ).replace("img-src 'self'", "img-src 'self' data:")  # its icons are data: SVG images
    page = (STATIC / "redoc.html").read_text().replace("{style_nonce}", nonce)
    return HTMLResponse(page, headers={**HEADERS, "Content-Security-Policy": policy})


@router.api_route("/docs/assets/{name}", methods=["GET", "HEAD"])
async def docs_asset(name: str) -> FileResponse:
    """One of the API reference's files (a fixed list, as for the playground's)."""
    asset = DOCS_ASSETS.get(name)
    if asset is None:
        raise HTTPException(404, f"no API reference file {name!r}")
    path, media_type = asset
    return FileResponse(path, media_type=media_type, headers=HEADERS)
