"""Swagger UI at ``/docs`` and ReDoc at ``/redoc``, served from an installed package (no CDN).

The assets come from the ``fastapi-offline`` package (Swagger UI 5, which reads FastAPI's
OpenAPI 3.1 document as it is, and ``redoc.standalone.js``); only its static files are used.

Both pages carry a Content-Security-Policy that lets them load and call this origin only:
``redoc.standalone.js`` (2.x) always renders a "Redocly" logo from ``cdn.redoc.ly`` in its side
menu, with no option to turn it off; under the policy the browser never sends that request, and
ReDoc drops the image when it fails to load (the browser test in
``tests/service/test_docs_browser.py`` checks that no page request leaves loopback).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs/assets"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'; frame-ancestors 'self'; base-uri 'self'; form-action 'self'"
)
"""Same origin only. The pages' own bootstrap scripts and the styles that Swagger UI and ReDoc
inject are inline; ReDoc runs its search index in a ``blob:`` worker."""
ROUTE_TEMPLATES = ("/openapi.json", DOCS_URL, REDOC_URL, ASSETS_URL + "/{path:path}")
"""The documentation routes, which are not in the OpenAPI document (for metrics labels)."""


def assets_dir() -> Path:
    """Directory of the Swagger UI and ReDoc files inside the installed ``fastapi_offline``."""
    return Path(str(resources.files("fastapi_offline").joinpath("static")))


def install(app: FastAPI) -> None:
    """Mount the documentation assets and add ``/docs`` and ``/redoc`` to ``app``."""
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return _same_origin_only(get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} — API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
        ))

    @app.get(REDOC_URL, include_in_schema=False)
    def redoc() -> HTMLResponse:
        return _same_origin_only(get_redoc_html(
            openapi_url=openapi_url, title=f"{app.title} — ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png", with_google_fonts=False,
        ))


def _same_origin_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page
