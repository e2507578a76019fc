"""Swagger UI and ReDoc in a real browser, offline: every operation renders, and "Try it out" on
``POST /v1/estimates`` runs the documented example with one click.

The server is the real one (``meshplan serve`` in a subprocess on a free loopback port, against
a temporary SQLite file); the browser is Debian's headless Chromium driven by Playwright, which
downloads no browser of its own. Every request the page makes to a host other than loopback is
aborted and recorded, and the test asserts there were none: the docs must work with no network.

The screenshot of the executed request is saved to ``artifacts/docs-try-it-out.png``.

Skips (visibly) only when ``/usr/bin/chromium`` or the ``playwright`` package is missing, and
fails instead when ``MESHPLAN_REQUIRE_BROWSER=1`` (CI sets it).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
LOCAL_SCHEMES = frozenset({"data", "blob", "about"})
TIMEOUT_MS = 60_000
"""A hang guard for each browser step, not a speed target: the machine is shared and slow."""
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _browser_or_skip() -> Any:
    """``playwright.sync_api.sync_playwright``, or skip (fail under MESHPLAN_REQUIRE_BROWSER=1)
    when it or Debian's chromium is missing."""
    required = os.environ.get("MESHPLAN_REQUIRE_BROWSER") == "1"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "the playwright package is not installed (pip install -e '.[dev]')"
    else:
        if CHROMIUM.exists():
            return sync_playwright
        reason = f"{CHROMIUM} is missing (apt-get install chromium, or make browser)"
    if required:
        pytest.fail(f"MESHPLAN_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def playwright_api() -> Any:
    """``sync_playwright``; checked before the server starts, so a skip costs nothing."""
    return _browser_or_skip()


@pytest.fixture(scope="module")
def live_server(playwright_api: Any,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """``meshplan serve`` on a free loopback port, with a fresh SQLite database file."""
    tmp = tmp_path_factory.mktemp("docs-browser")
    port = _free_port()
    env = {**os.environ,
           "MESHPLAN_DATABASE_URL": f"sqlite:///{tmp / 'meshplan.db'}",
           "MESHPLAN_LOG_LEVEL": "warning"}
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    server = LiveServer(f"http://127.0.0.1:{port}", proc, log)
    try:
        _wait_ready(server, deadline=time.monotonic() + 120)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(server: LiveServer, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"meshplan serve exited with {server.process.returncode}:\n"
                        f"{server.log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(server.url + "/readyz", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"meshplan serve was not ready within the deadline:\n"
                f"{server.log.read_text(errors='replace')}")


def _openapi(server: LiveServer) -> dict[str, Any]:
    with urllib.request.urlopen(server.url + "/openapi.json", timeout=30) as resp:
        doc: dict[str, Any] = json.load(resp)
        return doc


def _operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (METHOD, path) of the OpenAPI document."""
    return {(method.upper(), path) for path, item in doc["paths"].items()
            for method in item if method in HTTP_METHODS}


@dataclass
class Offline:
    """Records and aborts every request that would leave the machine, and collects the page's
    console errors.

    The pages' Content-Security-Policy (``service/docs.py``) makes the browser refuse an
    off-host resource before any request is sent; such refusals are the policy at work and are
    kept apart in ``refused`` (ReDoc's Redocly logo is one). Any other console error fails."""

    blocked: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def console(self, message: Any) -> None:
        if message.type != "error":
            return
        text = message.text
        if "violates the following Content Security Policy" in text:
            self.refused.append(text)
        else:
            self.errors.append(text)

    def handle(self, route: Any) -> None:
        url = route.request.url
        parts = urlsplit(url)
        if parts.scheme in LOCAL_SCHEMES or parts.hostname in LOOPBACK_HOSTS:
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort("internetdisconnected")


@pytest.fixture
def browser_page(playwright_api: Any,
                 live_server: LiveServer) -> Iterator[tuple[Any, Offline, list[str]]]:
    """A page of a fresh headless Chromium context that cannot reach beyond loopback; yields
    (page, offline recorder, uncaught page errors)."""
    offline = Offline()
    page_errors: list[str] = []
    with playwright_api() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.set_default_timeout(TIMEOUT_MS)
            context.route("**/*", offline.handle)
            page = context.new_page()
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            page.on("console", offline.console)
            yield page, offline, page_errors
            context.close()
        finally:
            browser.close()


def test_swagger_ui_renders_every_operation_and_runs_the_estimate_example(
        live_server: LiveServer, browser_page: tuple[Any, Offline, list[str]]) -> None:
    page, offline, page_errors = browser_page
    expected = _operations(_openapi(live_server))
    assert ("POST", "/v1/estimates") in expected
    assert {("GET", "/v1/gpus"), ("GET", "/v1/models"), ("GET", "/healthz")} <= expected

    page.goto(live_server.url + "/docs")
    page.wait_for_selector("#swagger-ui .opblock")
    # Wait until the last operation is in the DOM (Swagger UI renders tag by tag).
    page.wait_for_function(
        "n => document.querySelectorAll('#swagger-ui .opblock').length >= n", arg=len(expected))
    rendered = {
        (method.strip().upper(), path)
        for method, path in page.eval_on_selector_all(
            "#swagger-ui .opblock",
            """blocks => blocks.map(b => [
                 b.querySelector('.opblock-summary-method')?.textContent ?? '',
                 b.querySelector('.opblock-summary-path')?.getAttribute('data-path') ?? ''])""")
    }
    assert rendered == expected, (
        f"missing in Swagger UI: {sorted(expected - rendered)}; "
        f"not in the OpenAPI document: {sorted(rendered - expected)}")
    title = page.inner_text("#swagger-ui .info .title")
    assert "meshplan" in title

    # "Try it out" on POST /v1/estimates with the documented example, as a user would.
    op = page.locator("#swagger-ui .opblock.opblock-post").filter(
        has=page.locator('.opblock-summary-path[data-path="/v1/estimates"]'))
    assert op.count() == 1
    op.locator(".opblock-summary").first.click()
    op.locator("button.try-out__btn").click()
    body = op.locator("textarea.body-param__text")
    body.wait_for()
    example = json.loads(body.input_value())
    assert example["model"] == {"preset": "llama3-70b"}
    assert {p["gpu"] for p in example["cluster"]["pools"]} >= {"H100-SXM-80GB", "A100-SXM-80GB"}
    op.locator("button.execute").click()
    live = op.locator(".live-responses-table tr.response")
    status = live.locator(".response-col_status").first
    status.wait_for()
    response_body = live.locator(".response-col_description .microlight")
    response_body.first.wait_for()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "docs-try-it-out.png"), full_page=True)
    op.screenshot(path=str(ARTIFACTS / "docs-try-it-out-operation.png"))

    assert status.inner_text().strip() == "200", response_body.first.inner_text()
    shown = json.loads(response_body.first.inner_text())
    assert shown["step_time_s"] > 0
    assert shown["fits"] is True

    assert offline.blocked == [], f"the docs page tried to leave loopback: {offline.blocked}"
    assert offline.refused == [], f"the docs page asked for off-host resources: {offline.refused}"
    assert offline.errors == [], f"console errors: {offline.errors}"
    assert page_errors == [], f"uncaught errors in the page: {page_errors}"


def test_redoc_renders_every_operation_offline(
        live_server: LiveServer, browser_page: tuple[Any, Offline, list[str]]) -> None:
    page, offline, page_errors = browser_page
    doc = _openapi(live_server)
    summaries = [op["summary"] for item in doc["paths"].values()
                 for method, op in item.items() if method in HTTP_METHODS]
    assert "Estimate one plan" in summaries

    page.goto(live_server.url + "/redoc")
    page.wait_for_selector(".api-content h2")
    headings = {h.strip() for h in page.locator(".api-content h2").all_inner_texts()}
    missing = [s for s in summaries if s not in headings]
    assert not missing, f"operations missing in ReDoc: {missing}"

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "redoc.png"))
    assert offline.blocked == [], f"ReDoc tried to leave loopback: {offline.blocked}"
    # ReDoc 2.x always asks for its vendor's logo from cdn.redoc.ly; the policy refuses it.
    assert all("cdn.redoc.ly" in r for r in offline.refused), offline.refused
    assert offline.errors == [], f"console errors: {offline.errors}"
    assert page_errors == [], f"uncaught errors in the page: {page_errors}"
