"""Swagger UI at ``/docs`` and ReDoc at ``/redoc`` from an installed package: local assets only."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from tests.service.support import Api


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("src", "href") and value:
                self.refs.append(value)


def test_docs_page_uses_only_local_assets(api: Api) -> None:
    resp = api.get("/docs")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    html = resp.text
    assert "SwaggerUIBundle" in html
    assert not re.search(r"https?://", html), "the docs page must not reference remote URLs"
    assert "//cdn" not in html
    parser = _Refs()
    parser.feed(html)
    urls = [*parser.refs, *re.findall(r"url: '([^']+)'", html)]
    assert len(urls) >= 4  # css, favicon, js, the OpenAPI document
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = api.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
    assert "javascript" in api.get("/docs/assets/swagger-ui-bundle.js").headers["content-type"]
    assert api.get("/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")


def test_swagger_ui_is_version_5_and_reads_the_31_document(api: Api) -> None:
    """Swagger UI 5 renders OpenAPI 3.1 as FastAPI writes it (4.x refused it)."""
    assert api.get("/openapi.json").json()["openapi"].startswith("3.1")
    js = api.get("/docs/assets/swagger-ui-bundle.js").text
    assert re.search(r'"5\.\d+\.\d+"', js)
    assert "url: '/openapi.json'" in api.get("/docs").text


def test_redoc_uses_only_local_assets(api: Api) -> None:
    resp = api.get("/redoc")
    assert resp.status_code == 200
    html = resp.text
    assert not re.search(r"https?://", html), "ReDoc must not reference remote URLs or fonts"
    parser = _Refs()
    parser.feed(html)
    assert "/docs/assets/redoc.standalone.js" in parser.refs
    assert api.get("/docs/assets/redoc.standalone.js").status_code == 200


def test_docs_pages_may_load_and_call_their_own_origin_only(api: Api) -> None:
    """The Content-Security-Policy keeps the browser from fetching anything off-host (ReDoc
    asks for its vendor's logo from a CDN); the browser test checks the effect."""
    for url in ("/docs", "/redoc"):
        policy = api.get(url).headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'self'"
        for name, sources in directives.items():
            assert "http" not in sources and "*" not in sources, (url, name, sources)
