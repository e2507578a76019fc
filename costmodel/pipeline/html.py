"""A simulated pipeline schedule as one self-contained, interactive HTML page.

Where the SVG (:mod:`costmodel.pipeline.svg`) is a picture, this is a viewer for schedules of
any size: every action and every send/recv of the simulation, drawn to a ``<canvas>`` by the
page's own inline script (no library, no CDN, nothing fetched), so 256 micro-batches on 16
stages (8,192 actions and 7,680 transfers) draw in a few milliseconds.

* One row per pipeline rank; compute actions fill the upper part of the row, coloured by kind
  (forward blue, backward orange, input-gradient green, weight-gradient purple), four
  lightness steps by micro-batch (``mb % 4``) so neighbouring micro-batches stay apart, and
  labelled with the micro-batch where the box is wide enough. Below them, on the same row, a
  strip of the rank's sends (teal) and one of its receives (grey): the activation or gradient
  moving across a stage boundary, during the latency the simulator charges on that edge
  (:mod:`costmodel.pipeline.transfers`).
* Zoom with the wheel (around the pointer) or the + / − buttons, pan by dragging or with the
  ← / → buttons, "whole step" resets; hovering shows the action (kind, rank, stage,
  micro-batch, start, end and length in ms) or the transfer (from/to rank and stage).
* The step, the bubble (the busiest rank's idle time relative to its work, and the idle share
  of all ranks' time) and a legend head the page; ``marks`` flags ranks (what-if scenarios).

The data is embedded as compact JSON (``<script type="application/json" id="timeline-data">``):
times as integer nanoseconds, per rank the kinds as one string and, per action, the idle gap
since the previous action ends and the duration; transfers per sending rank with the gap
since the previous transfer's start and the index of their stage boundary's latency. The page
exposes ``window.meshplanTimeline`` (the view, the palette, coordinates of a time and a rank,
the last draw's time) for tests. Deterministic: the same simulation gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from costmodel.pipeline.schedules import KINDS
from costmodel.pipeline.simulator import SimResult
from costmodel.pipeline.svg import KIND_COLOURS, KIND_NAMES, idle_share, rank_labels, stage_name
from costmodel.pipeline.transfers import transfers

__all__ = ["RECV_COLOUR", "SEND_COLOUR", "timeline_data", "timeline_html"]

SEND_COLOUR = "#17a2b8"
RECV_COLOUR = "#8c8c8c"


def _ns(x: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(x, dtype=np.float64) * 1e9).astype(np.int64)


def timeline_data(sim: SimResult, *, title: str | None = None,
                  marks: Mapping[int, str] | None = None,
                  note: str | None = None) -> dict[str, Any]:
    """The JSON the page embeds (see the module docstring for the encoding)."""
    tl = sim.timeline
    start, end = _ns(tl.start), _ns(tl.end)
    ranks: list[dict[str, Any]] = []
    for r in range(sim.n_ranks):
        sel = np.flatnonzero(tl.rank == r)
        s0, e0 = start[sel], end[sel]
        prev_end = np.concatenate([[0], e0[:-1]])
        ranks.append({
            "k": "".join(KINDS[int(k)] for k in tl.kind[sel]),
            "s": tl.stage[sel].tolist(),
            "m": tl.mb[sel].tolist(),
            "g": (s0 - prev_end).tolist(),
            "d": (e0 - s0).tolist(),
        })
    tr = transfers(sim)
    lat = _ns(sim.p2p) if sim.p2p is not None else np.zeros(0, dtype=np.int64)
    sends: list[dict[str, Any]] = []
    t_start = _ns(tr.start)
    for r in range(sim.n_ranks):
        sel = np.flatnonzero(tr.src == r)
        st = t_start[sel]
        boundary = np.where(tr.what[sel] == 0, tr.stage[sel], tr.stage[sel] - 1)
        sends.append({
            "s": tr.stage[sel].tolist(),
            "m": tr.mb[sel].tolist(),
            "w": tr.what[sel].tolist(),
            "g": np.diff(np.concatenate([[0], st])).tolist(),
            "b": boundary.tolist(),
        })
    n_stages = len(sim.stage_ranks)
    kinds_seen = {KINDS[int(k)] for k in np.unique(tl.kind)}
    kinds = [{"code": k, "name": KIND_NAMES[k], "colour": KIND_COLOURS[k]}
             for k in KINDS if k in kinds_seen]
    return {
        "title": title or "pipeline timeline",
        "note": note,
        "step_ns": round(sim.step_time * 1e9),
        "busiest_ns": round(sim.max_rank_busy * 1e9),
        "bubble": sim.bubble_fraction,
        "idle_share": idle_share(sim),
        "replicas": max(1, sim.replicas),
        "labels": rank_labels(sim),
        "marks": {str(r): v for r, v in sorted((marks or {}).items())},
        "stage_names": [stage_name(sim, g) for g in range(n_stages)],
        "stage_ranks": list(sim.stage_ranks),
        "kinds": kinds,
        "send_colour": SEND_COLOUR,
        "recv_colour": RECV_COLOUR,
        "p2p_ns": lat.tolist(),
        "n_actions": int(tl.start.shape[0]),
        "n_transfers": len(tr),
        "ranks": ranks,
        "sends": sends,
    }


def _json(data: dict[str, Any]) -> str:
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    # inside <script>: no "</" may close it early, no "<!--" may open a comment
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def timeline_html(sim: SimResult, *, title: str | None = None,
                  marks: Mapping[int, str] | None = None, note: str | None = None) -> str:
    """The page for ``sim`` (see the module docstring)."""
    data = timeline_data(sim, title=title, marks=marks, note=note)
    bubble = (f"step {sim.step_time * 1e3:.3f} ms · bubble {sim.bubble_fraction * 100:.1f}% "
              f"of the busiest rank's work · {data['idle_share'] * 100:.1f}% of all ranks' "
              f"time idle · {data['n_actions']:,} actions, {data['n_transfers']:,} transfers")
    heading = escape(data["title"])
    return (_PAGE.replace("@@TITLE@@", heading)
            .replace("@@SUMMARY@@", escape(bubble))
            .replace("@@NOTE@@", escape(note or ""))
            .replace("@@DATA@@", _json(data)))


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>@@TITLE@@</title>
<style>
  body { font: 13px "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 12px; color: #222; }
  h1 { font-size: 16px; margin: 0 0 4px; }
  #summary { color: #555; margin: 0 0 4px; }
  #note { color: #c0392b; margin: 0 0 4px; }
  #note:empty { display: none; }
  #bar { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; margin: 6px 0; }
  #bar button { font: inherit; padding: 2px 9px; border: 1px solid #aaa; background: #f6f6f6;
                border-radius: 3px; cursor: pointer; }
  #bar button:hover { background: #e8e8e8; }
  #view { color: #555; margin-left: 8px; }
  #legend { display: flex; gap: 14px; flex-wrap: wrap; margin: 4px 0 8px; }
  .swatch { display: inline-flex; align-items: center; gap: 5px; }
  .swatch i { display: inline-block; width: 13px; height: 13px; border: 1px solid #999; }
  #wrap { position: relative; }
  canvas { display: block; cursor: grab; }
  canvas.dragging { cursor: grabbing; }
  #tip { position: absolute; pointer-events: none; background: rgba(30,30,30,.92); color: #fff;
         padding: 5px 8px; border-radius: 4px; white-space: pre; font-size: 12px;
         display: none; z-index: 2; }
</style>
</head>
<body>
<h1 id="title">@@TITLE@@</h1>
<p id="summary">@@SUMMARY@@</p>
<p id="note">@@NOTE@@</p>
<div id="bar">
  <button id="zoom-in" title="zoom in (or the mouse wheel)">+</button>
  <button id="zoom-out" title="zoom out">&minus;</button>
  <button id="pan-left" title="pan left (or drag)">&larr;</button>
  <button id="pan-right" title="pan right">&rarr;</button>
  <button id="reset" title="show the whole step">whole step</button>
  <span id="view"></span>
</div>
<div id="legend"></div>
<div id="wrap"><canvas id="canvas"></canvas><div id="tip"></div></div>
<script type="application/json" id="timeline-data">@@DATA@@</script>
<script>
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("timeline-data").textContent);
  const NR = D.ranks.length, STEP = D.step_ns / 1e6;  // times in ms from here on
  const ROW = 34, TOP = 26, LEFT_PAD = 12, RIGHT = 14, AXIS = 30;
  const BAR = [3, 21], SEND = [23, 27], RECV = [28, 32];
  const KNAME = {}, KCOL = {};
  for (const k of D.kinds) { KNAME[k.code] = k.name; KCOL[k.code] = k.colour; }
  const SHADES = [-0.22, 0, 0.2, 0.38];
  function shade(hex, f) {
    const n = parseInt(hex.slice(1), 16);
    const c = [n >> 16, (n >> 8) & 255, n & 255].map(v =>
      Math.round(f < 0 ? v * (1 + f) : v + (255 - v) * f));
    return "#" + c.map(v => v.toString(16).padStart(2, "0")).join("");
  }
  const PALETTE = {};
  for (const k of D.kinds) PALETTE[k.code] = SHADES.map(f => shade(k.colour, f));
  PALETTE.send = [D.send_colour]; PALETTE.recv = [D.recv_colour];

  // decode: per rank, typed arrays of start/end (ms), stage, micro-batch, kind
  const rows = D.ranks.map(R => {
    const n = R.d.length, s = new Float64Array(n), e = new Float64Array(n);
    let t = 0;
    for (let i = 0; i < n; i++) { t += R.g[i]; s[i] = t / 1e6; t += R.d[i]; e[i] = t / 1e6; }
    return { n, start: s, end: e, stage: R.s, mb: R.m, kind: R.k };
  });
  const sendRows = [], recvRows = [];
  for (let r = 0; r < NR; r++) { sendRows.push([]); recvRows.push([]); }
  D.sends.forEach((S, r) => {
    let t = 0;
    for (let i = 0; i < S.g.length; i++) {
      t += S.g[i];
      const fwd = S.w[i] === 0, to = S.s[i] + (fwd ? 1 : -1);
      const x = { s: t / 1e6, e: (t + D.p2p_ns[S.b[i]]) / 1e6, from: r,
                  to: D.stage_ranks[to], fs: S.s[i], ts: to, mb: S.m[i], fwd };
      sendRows[r].push(x); recvRows[x.to].push(x);
    }
  });
  const lane = rs => rs.map(list => {
    list.sort((a, b) => a.s - b.s || a.e - b.e);
    const n = list.length, s = new Float64Array(n), e = new Float64Array(n);
    let m = 0;  // running max of ends: lets a binary search on start find overlaps
    const me = new Float64Array(n);
    list.forEach((x, i) => { s[i] = x.s; e[i] = x.e; m = Math.max(m, x.e); me[i] = m; });
    return { n, start: s, end: e, maxEnd: me, items: list };
  });
  const sends = lane(sendRows), recvs = lane(recvRows);
  for (const r of rows) {
    r.maxEnd = new Float64Array(r.n);
    let m = 0;
    for (let i = 0; i < r.n; i++) { m = Math.max(m, r.end[i]); r.maxEnd[i] = m; }
  }

  // legend
  const legend = document.getElementById("legend");
  const sw = (cls, colours, text) => {
    const el = document.createElement("span");
    el.className = "swatch " + cls;
    el.innerHTML = colours.map(c => '<i style="background:' + c + '"></i>').join("") +
      " " + text.replace(/&/g, "&amp;").replace(/</g, "&lt;");
    legend.appendChild(el);
  };
  for (const k of D.kinds) sw("kind-" + k.code, PALETTE[k.code], k.code + " " + k.name +
                               " (shade = micro-batch mod 4)");
  if (D.n_transfers) {
    sw("kind-send", PALETTE.send, "send (activation or gradient)");
    sw("kind-recv", PALETTE.recv, "recv");
  }
  sw("kind-idle", ["#eeeeee"], "idle (bubble)");
  if (Object.keys(D.marks).length) sw("kind-marked", ["#fbe3e0"], "slowed rank");

  const canvas = document.getElementById("canvas"), ctx = canvas.getContext("2d");
  const tip = document.getElementById("tip"), viewText = document.getElementById("view");
  ctx.font = "11px DejaVu Sans, Helvetica, Arial, sans-serif";
  const labels = D.labels.map((l, r) => D.marks[r] ? l + " " + D.marks[r] : l);
  const LEFT = LEFT_PAD + Math.ceil(Math.max(40, ...labels.map(l => ctx.measureText(l).width)))
    + 10;
  let W = 0, H = TOP + NR * ROW + AXIS, plotW = 1;
  let v0 = 0, v1 = STEP > 0 ? STEP : 1;  // the view, ms
  const api = { renderMs: 0, draws: 0, labelsDrawn: 0, palette: PALETTE, step: STEP };

  function resize() {
    W = Math.max(480, document.getElementById("wrap").clientWidth);
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(W * dpr); canvas.height = Math.round(H * dpr);
    canvas.style.width = W + "px"; canvas.style.height = H + "px";
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    plotW = W - LEFT - RIGHT;
    draw();
  }
  const xOf = t => LEFT + (t - v0) / (v1 - v0) * plotW;
  const tOf = x => v0 + (x - LEFT) / plotW * (v1 - v0);
  function first(lane, t) {  // first index whose running max end is > t
    let lo = 0, hi = lane.n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (lane.maxEnd[mid] > t) hi = mid; else lo = mid + 1;
    }
    return lo;
  }
  function niceStep(span, target) {
    const raw = span / target, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const f of [1, 2, 5, 10]) if (f * mag >= raw) return f * mag;
    return 10 * mag;
  }
  function fill(colour, x0, x1, y0, y1) {
    let a = Math.max(x0, LEFT), b = Math.min(x1, LEFT + plotW);
    if (b <= a) return false;
    if (b - a < 1) b = a + 1;  // a box never vanishes; at most one pixel per box
    ctx.fillStyle = colour; ctx.fillRect(a, y0, b - a, y1 - y0);
    return b - a;
  }
  function drawLane(L, y, band, colour) {
    for (let i = first(L, v0); i < L.n && L.start[i] < v1; i++) {
      fill(colour, xOf(L.start[i]), xOf(L.end[i]), y + band[0], y + band[1]);
    }
  }
  function draw() {
    const t0 = performance.now();
    ctx.clearRect(0, 0, W, H);
    ctx.fillStyle = "#ffffff"; ctx.fillRect(0, 0, W, H);
    ctx.textBaseline = "middle";
    let labelled = 0;
    for (let r = 0; r < NR; r++) {
      const y = TOP + r * ROW, marked = D.marks[r] !== undefined;
      ctx.fillStyle = marked ? "#c0392b" : "#222222";
      ctx.font = "11px DejaVu Sans, Helvetica, Arial, sans-serif"; ctx.textAlign = "left";
      ctx.fillText(labels[r], LEFT_PAD, y + ROW / 2);
      ctx.fillStyle = marked ? "#fbe3e0" : "#eeeeee";
      ctx.fillRect(LEFT, y + 1, plotW, ROW - 2);
      const R = rows[r];
      ctx.font = "9px DejaVu Sans, Helvetica, Arial, sans-serif"; ctx.textAlign = "center";
      for (let i = first(R, v0); i < R.n && R.start[i] < v1; i++) {
        const k = R.kind[i], mb = R.mb[i];
        const x0 = xOf(R.start[i]), x1 = xOf(R.end[i]);
        const w = fill(PALETTE[k][mb % 4], x0, x1 > x0 + 2 ? x1 - 1 : x1, y + BAR[0], y + BAR[1]);
        if (w && w > 7 * String(mb).length + 4) {
          ctx.fillStyle = mb % 4 === 3 ? "#222222" : "#ffffff";
          ctx.fillText(String(mb), (Math.max(x0, LEFT) + Math.min(x1, LEFT + plotW)) / 2,
                       y + (BAR[0] + BAR[1]) / 2);
          labelled++;
        }
      }
      drawLane(sends[r], y, SEND, D.send_colour);
      drawLane(recvs[r], y, RECV, D.recv_colour);
    }
    // time axis
    const ay = TOP + NR * ROW;
    ctx.strokeStyle = "#333"; ctx.fillStyle = "#333"; ctx.lineWidth = 1;
    ctx.beginPath(); ctx.moveTo(LEFT, ay + 0.5); ctx.lineTo(LEFT + plotW, ay + 0.5); ctx.stroke();
    const step = niceStep(v1 - v0, 10), dec = step < 1 ? Math.ceil(-Math.log10(step)) : 0;
    ctx.font = "10px DejaVu Sans, Helvetica, Arial, sans-serif"; ctx.textAlign = "center";
    for (let v = Math.ceil(v0 / step) * step; v <= v1 + 1e-9; v += step) {
      const x = Math.round(xOf(v)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, ay); ctx.lineTo(x, ay + 5); ctx.stroke();
      ctx.fillText(v.toFixed(dec), x, ay + 13);
    }
    ctx.textAlign = "left";
    ctx.fillText("time (ms)", LEFT, ay + 25);
    ctx.textAlign = "center";
    ctx.fillText("rank", LEFT_PAD + 12, TOP - 10);
    viewText.textContent = "showing " + v0.toFixed(3) + " – " + v1.toFixed(3) + " ms of " +
      STEP.toFixed(3) + " ms (" + (STEP / (v1 - v0)).toFixed(1) + "×)";
    api.labelsDrawn = labelled; api.draws++;
    api.renderMs = performance.now() - t0;
  }
  function setView(a, b) {
    const minSpan = Math.max(STEP * 1e-6, 1e-6);
    let span = Math.min(Math.max(b - a, minSpan), STEP > 0 ? STEP : 1);
    a = Math.min(Math.max(a, 0), (STEP > 0 ? STEP : 1) - span);
    v0 = a; v1 = a + span;
    draw();
  }
  function zoom(factor, centre) {
    const c = centre === undefined ? (v0 + v1) / 2 : centre;
    setView(c - (c - v0) / factor, c + (v1 - c) / factor);
  }
  function pan(fraction) { const d = (v1 - v0) * fraction; setView(v0 + d, v1 + d); }

  // hover
  function hit(L, t, tol) {  // the lane item under time t (within tol ms), nearest start
    let best = -1;
    for (let i = first(L, t - tol); i < L.n && L.start[i] <= t + tol; i++) {
      if (L.end[i] >= t - tol) best = i;
    }
    return best;
  }
  const f3 = v => v.toFixed(3);
  function describe(x, y) {
    if (x < LEFT || x > LEFT + plotW) return null;
    const r = Math.floor((y - TOP) / ROW);
    if (r < 0 || r >= NR) return null;
    const dy = y - TOP - r * ROW, t = tOf(x), tol = (v1 - v0) / plotW;  // one pixel
    const time = (s, e) => f3(s) + " – " + f3(e) + " ms (" + f3(e - s) + " ms)";
    if (dy >= BAR[0] && dy <= BAR[1] + 1) {
      const R = rows[r], i = hit(R, t, tol);
      if (i < 0) return null;
      const k = R.kind[i];
      return { kind: k, rank: r, stage: R.stage[i], mb: R.mb[i],
               text: k + " " + KNAME[k] + "\\nrank " + r + " · stage " +
                 D.stage_names[R.stage[i]] + " · micro-batch " + R.mb[i] + "\\n" +
                 time(R.start[i], R.end[i]) };
    }
    const send = dy >= SEND[0] - 1 && dy <= SEND[1];
    const recv = dy > SEND[1] && dy <= RECV[1] + 1;
    if (!send && !recv) return null;
    const L = send ? sends[r] : recvs[r], i = hit(L, t, tol);
    if (i < 0) return null;
    const it = L.items[i], what = it.fwd ? "activation" : "gradient";
    return { kind: send ? "send" : "recv", rank: r, stage: it.fs, mb: it.mb,
             text: (send ? "send " : "recv ") + what + "\\nrank " + it.from + " → rank " +
               it.to + " · stage " + D.stage_names[it.fs] + " → " + D.stage_names[it.ts] +
               " · micro-batch " + it.mb + "\\n" + time(it.s, it.e) };
  }
  let drag = null;
  canvas.addEventListener("mousedown", ev => {
    drag = { x: ev.clientX, a: v0, b: v1 }; canvas.classList.add("dragging");
  });
  window.addEventListener("mouseup", () => { drag = null; canvas.classList.remove("dragging"); });
  canvas.addEventListener("mousemove", ev => {
    const box = canvas.getBoundingClientRect(), x = ev.clientX - box.left, y = ev.clientY - box.top;
    if (drag) {
      const d = (ev.clientX - drag.x) / plotW * (drag.b - drag.a);
      setView(drag.a - d, drag.b - d); tip.style.display = "none"; return;
    }
    const hitInfo = describe(x, y);
    api.hover = hitInfo;
    if (!hitInfo) { tip.style.display = "none"; return; }
    tip.textContent = hitInfo.text; tip.style.display = "block";
    const tw = tip.offsetWidth;
    tip.style.left = (x + 14 + tw > W ? x - tw - 10 : x + 14) + "px";
    tip.style.top = (y + 16) + "px";
  });
  canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  canvas.addEventListener("wheel", ev => {
    ev.preventDefault();
    const box = canvas.getBoundingClientRect(), x = ev.clientX - box.left;
    if (ev.shiftKey || Math.abs(ev.deltaX) > Math.abs(ev.deltaY)) {
      pan((ev.deltaX || ev.deltaY) / plotW); return;
    }
    zoom(Math.exp(-ev.deltaY * 0.002), x >= LEFT ? tOf(x) : undefined);
  }, { passive: false });
  document.getElementById("zoom-in").onclick = () => zoom(2);
  document.getElementById("zoom-out").onclick = () => zoom(0.5);
  document.getElementById("pan-left").onclick = () => pan(-0.5);
  document.getElementById("pan-right").onclick = () => pan(0.5);
  document.getElementById("reset").onclick = () => setView(0, STEP);
  window.addEventListener("resize", resize);

  api.view = () => [v0, v1];
  api.setView = setView;
  api.zoom = zoom;
  api.xOf = t => canvas.getBoundingClientRect().left + xOf(t);
  api.yOf = (r, part) => canvas.getBoundingClientRect().top + TOP + r * ROW +
    (part === "send" ? (SEND[0] + SEND[1]) / 2 : part === "recv" ? (RECV[0] + RECV[1]) / 2
     : (BAR[0] + BAR[1]) / 2);
  api.action = (r, i) => ({ start: rows[r].start[i], end: rows[r].end[i], kind: rows[r].kind[i],
                            stage: rows[r].stage[i], mb: rows[r].mb[i] });
  api.transfer = (r, i) => sendRows[r][i];
  api.counts = { actions: D.n_actions, transfers: D.n_transfers };
  const tLoad = performance.now();
  resize();
  api.firstRenderMs = performance.now() - tLoad;
  window.meshplanTimeline = api;
  document.body.dataset.ready = "1";
})();
</script>
</body>
</html>
"""
