"""The pictures in a real browser, offline: the interactive timeline of a 256-micro-batch,
16-stage plan (hover, zoom, pan, distinguishable colours, render time) and the Pareto plot of
its search (links to the stored plans).

The server, browser and offline guard are those of ``test_docs_browser.py`` (``meshplan
serve`` on loopback with a fresh SQLite file; Debian's headless Chromium through Playwright;
every request off loopback aborted and recorded). Screenshots go to ``artifacts/`` (the
project's convention, as the docs test) and are printed; skips as that test does.
"""

from __future__ import annotations

import json
import struct
import time
import urllib.request
import zlib
from typing import Any

import pytest

from costmodel.estimate import pipeline_simulation
from costmodel.pipeline.transfers import transfers
from costmodel.specs.request import EstimateRequest
from tests.service.test_docs_browser import (  # noqa: F401 - fixtures
    ARTIFACTS,
    LiveServer,
    Offline,
    browser_page,
    live_server,
    playwright_api,
)

BIG_SEARCH: dict[str, Any] = {
    "model": {"preset": "llama3-8b"},
    "training": {"global_batch_size": 256, "seq_len": 2048},
    "cluster": {"pools": [{"name": "a100", "gpu": "A100-SXM-80GB", "gpus_per_node": 8,
                           "nodes": 2, "price_per_gpu_hour": 1.29}]},
    "constraints": {"fixed": {"tp": 1, "pp": 16, "dp": 1, "micro_batch_size": 1},
                    "schedules": ["1F1B"]},
    "top_k": 2, "time_limit_s": 30,
}
"""Llama-3-8B with 256 micro-batches on 16 pipeline stages (8,192 actions, 7,680 transfers),
well inside the estimate limits (MESHPLAN_MAX_SCHEDULE_CELLS: 4,096 cells of 1,000,000)."""


def _post(server: LiveServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(server.url + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        out: dict[str, Any] = json.load(resp)
        return out


def _get(server: LiveServer, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(server.url + path, timeout=60) as resp:
        out: dict[str, Any] = json.load(resp)
        return out


@pytest.fixture(scope="module")
def big_search(live_server: LiveServer) -> dict[str, Any]:  # noqa: F811 - the fixture
    out = _post(live_server, "/v1/searches?wait=60", BIG_SEARCH)
    deadline = time.monotonic() + 240
    while out["status"] in ("queued", "running") and time.monotonic() < deadline:
        out = _get(live_server, f"/v1/searches/{out['id']}?wait=30")
    assert out["status"] == "succeeded", out
    return out


def png_pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit truecolour PNG (what Chromium's
    screenshots are): the IDAT stream inflated and each row's filter undone (RFC 2083 §6)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = bpp = 0
    while pos < len(png):
        (length,), kind = struct.unpack(">I", png[pos:pos + 4]), png[pos + 4:pos + 8]
        chunk = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour in (2, 6), (depth, colour)
            bpp = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) \
                    & 255
        rows.append(bytes(line))
        prev = line
    return width, bpp, rows


def colour_counts(png: bytes) -> dict[str, int]:
    """How many pixels of each colour (``#rrggbb``) the PNG holds."""
    width, bpp, rows = png_pixels(png)
    counts: dict[str, int] = {}
    for row in rows:
        for x in range(width):
            key = "#" + row[x * bpp:x * bpp + 3].hex()
            counts[key] = counts.get(key, 0) + 1
    return counts


def _rgb(hex_: str) -> tuple[int, int, int]:
    n = int(hex_[1:], 16)
    return n >> 16, (n >> 8) & 255, n & 255


def test_timeline_html_of_256_microbatches_on_16_stages(
        live_server: LiveServer,  # noqa: F811 - the fixture
        browser_page: tuple[Any, Offline, list[str]],  # noqa: F811 - the fixture
        big_search: dict[str, Any]) -> None:
    page, offline, page_errors = browser_page
    plan_id = big_search["result"]["plans"][0]["id"]
    request = _get(live_server, f"/v1/plans/{plan_id}")["request"]
    assert request["plan"]["pp"] == 16
    sim = pipeline_simulation(EstimateRequest.model_validate(request))
    tl = sim.timeline
    assert len(tl.start) == 256 * 16 * 2

    t0 = time.monotonic()
    page.goto(f"{live_server.url}/v1/plans/{plan_id}/timeline.html")
    page.wait_for_selector("body[data-ready='1']")
    load_s = time.monotonic() - t0
    api = "window.meshplanTimeline"
    first_ms = page.evaluate(f"{api}.firstRenderMs")
    counts = page.evaluate(f"{api}.counts")
    assert counts == {"actions": len(tl.start), "transfers": len(transfers(sim))}
    summary = page.inner_text("#summary")
    assert f"bubble {sim.bubble_fraction * 100:.1f}%" in summary
    print(f"\ntimeline.html of 256 mb × pp16: loaded and drawn in {load_s:.2f} s, first "
          f"draw {first_ms:.1f} ms in the page")
    assert first_ms < 5000  # a hang guard on a shared machine, not a speed target

    whole = page.screenshot(full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "timeline-256x16.png").write_bytes(whole)

    # zoom with the wheel around the middle of the plot, then with the + button
    step = page.evaluate(f"{api}.step")
    box = page.locator("#canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + 60)
    page.mouse.wheel(0, -700)
    v0, v1 = page.wait_for_function(f"{api}.view()[1] - {api}.view()[0] < {step} * 0.5"
                                    ) and page.evaluate(f"{api}.view()")
    assert 0 <= v0 < v1 <= step and v1 - v0 < step / 2
    page.click("#zoom-in")
    w0, w1 = page.evaluate(f"{api}.view()")
    assert w1 - w0 == pytest.approx((v1 - v0) / 2, rel=1e-6)
    # pan by dragging to the left: the view moves later in time
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + 100, steps=5)
    page.mouse.up()
    p0, p1 = page.evaluate(f"{api}.view()")
    assert p0 > w0 and p1 - p0 == pytest.approx(w1 - w0, rel=1e-6)

    # hover a forward of the last rank: the tooltip names it with its simulated times
    r, i = 15, 40
    act = page.evaluate(f"{api}.action({r}, {i})")
    page.evaluate(f"{api}.setView({act['start']} - 150, {act['end']} + 150)")
    page.mouse.move(page.evaluate(f"{api}.xOf({(act['start'] + act['end']) / 2})"),
                    page.evaluate(f"{api}.yOf({r})"))
    tip = page.locator("#tip")
    tip.wait_for(state="visible")
    sel = [j for j in range(len(tl.start)) if tl.rank[j] == r][i]
    kind = "FBIW"[int(tl.kind[sel])]
    text = tip.inner_text()
    assert text.startswith(f"{kind} ")
    assert f"rank {r} · stage {int(tl.stage[sel])} · micro-batch {int(tl.mb[sel])}" in text
    assert f"{tl.start[sel] * 1e3:.3f} – {tl.end[sel] * 1e3:.3f} ms" in text
    assert page.evaluate(f"{api}.labelsDrawn") > 0  # zoomed in: micro-batches are labelled
    zoomed = page.screenshot(full_page=True)
    (ARTIFACTS / "timeline-256x16-zoomed.png").write_bytes(zoomed)

    # hover a send of rank 7 (the inter-node boundary of the two 8-GPU nodes)
    tr = page.evaluate(f"{api}.transfer(7, 5)")
    page.evaluate(f"{api}.setView({tr['s']} - 0.2, {tr['e']} + 0.2)")
    page.mouse.move(page.evaluate(f"{api}.xOf({(tr['s'] + tr['e']) / 2})"),
                    page.evaluate(f"{api}.yOf(7, 'send')"))
    page.wait_for_function("document.getElementById('tip').innerText.startsWith('send')")
    send = tip.inner_text()
    assert f"rank 7 → rank {tr['to']}" in send and f"micro-batch {tr['mb']}" in send

    # distinguishable: every kind drawn shows in the screenshots in its own colours
    palette: dict[str, list[str]] = page.evaluate(f"{api}.palette")
    kinds = {"FBIW"[int(k)] for k in tl.kind} | {"send", "recv"}
    seen = colour_counts(whole)
    for name, pixels in colour_counts(zoomed).items():
        seen[name] = seen.get(name, 0) + pixels
    present = {k: [c for c in palette[k] if seen.get(c, 0) >= 4] for k in kinds}
    assert all(present.values()), present
    distinct = {c for cs in present.values() for c in cs}
    assert len(distinct) >= len(kinds)
    base = [_rgb(palette[k][1 if len(palette[k]) > 1 else 0]) for k in sorted(kinds)]
    closest = min(sum((a - b) ** 2 for a, b in zip(x, y, strict=True)) ** 0.5
                  for j, x in enumerate(base) for y in base[j + 1:])
    assert closest > 60, f"two kinds' colours are only {closest:.0f} apart in RGB"
    print(f"screenshots: {ARTIFACTS / 'timeline-256x16.png'}, "
          f"{ARTIFACTS / 'timeline-256x16-zoomed.png'}; {len(distinct)} palette colours seen "
          f"for {len(kinds)} kinds")

    assert offline.blocked == [], f"the page tried to leave loopback: {offline.blocked}"
    assert offline.refused == [] and offline.errors == [], (offline.refused, offline.errors)
    assert page_errors == [], f"uncaught errors in the page: {page_errors}"


def test_pareto_svg_links_to_the_stored_plans(
        live_server: LiveServer,  # noqa: F811 - the fixture
        browser_page: tuple[Any, Offline, list[str]],  # noqa: F811 - the fixture
        big_search: dict[str, Any]) -> None:
    page, offline, page_errors = browser_page
    sid = big_search["id"]
    plans = big_search["result"]["plans"]
    page.goto(f"{live_server.url}/v1/searches/{sid}/pareto.svg")
    links = page.locator("a.plan-link")
    links.first.wait_for()
    hrefs = sorted(links.evaluate_all("as => as.map(a => a.getAttribute('href'))"))
    assert hrefs == sorted(f"/v1/plans/{p['id']}" for p in plans)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "pareto.png"))
    print(f"\nscreenshot: {ARTIFACTS / 'pareto.png'}")
    first = next(p for p in plans if p["rank"] == 1)
    page.locator(f'a.plan-link[href="/v1/plans/{first["id"]}"] circle').click()
    page.wait_for_url(f"**/v1/plans/{first['id']}")
    assert json.loads(page.inner_text("body"))["id"] == first["id"]
    assert offline.blocked == [], offline.blocked
    assert page_errors == [], page_errors
