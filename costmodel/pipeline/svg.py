"""A simulated pipeline schedule drawn as a standalone SVG timeline.

One row per pipeline rank, labelled ``rank r (stages …)``; every executed action is one
``<rect class="op K">`` (K = F, B, I or W, coloured by kind) placed at its simulated start and
end, labelled with its micro-batch when the box is wide enough and carrying a ``<title>`` (the
hover text: kind, stage, micro-batch, start and end in ms). Idle time is left empty on the
row's pale background, so bubbles show as gaps. A time axis in milliseconds and a legend of
the kinds drawn follow. With two model replicas (Chimera, BitPipe) a stage of the second
replica is written with a prime (``3′`` = stage 3 of replica 2).

**Windowed** when the schedule has more than ``max_actions`` actions (256 micro-batches on 16
stages are 8,192 of them, 2 MB of boxes a pixel wide): the drawing then shows three windows
of the same time scale — the warm-up from time 0, a slice of the steady state around the
middle of the step and the cool-down to its end — each holding about a third of
``max_actions`` actions, separated by marked gaps (``<g class="gap">``, labelled with the time
and the actions left out). Actions crossing a window's edge are clipped to it (their
``<title>`` keeps their true times). The windows' time ranges are
``<rect class="window" data-start-ms data-end-ms>``; the row backgrounds are drawn once per
window.

The summary line gives the step, the busiest rank's work and the bubble: idle time of the
busiest rank relative to its work, and the idle share of all ranks' time. ``marks`` (what-if
scenarios) flags ranks: their row is tinted and its label carries the mark (``×1.10``).

Times of the :class:`~costmodel.pipeline.simulator.SimResult` are read as seconds (what
:func:`costmodel.estimate` simulates). The output is deterministic (fixed number formats, no
timestamps or ids) and all text is XML-escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from xml.sax.saxutils import escape

import numpy as np

from costmodel.charts.axes import FONT, nice_step, num
from costmodel.pipeline.schedules import KIND_CODES, KINDS
from costmodel.pipeline.simulator import SimResult

__all__ = ["KIND_COLOURS", "KIND_NAMES", "MAX_ACTIONS", "idle_share", "rank_labels",
           "timeline_svg", "windows"]

#: Fill colour of each action kind (Tableau 10: colour-blind-safe, distinct in greyscale).
KIND_COLOURS: dict[str, str] = {"F": "#4e79a7", "B": "#f28e2b", "I": "#59a14f", "W": "#b07aa1"}
KIND_NAMES: dict[str, str] = {
    "F": "forward",
    "B": "backward",
    "I": "backward (input grad)",
    "W": "backward (weight grad)",
}
MAX_ACTIONS = 1200
"""Above this many actions the SVG is windowed (warm-up, steady-state slice, cool-down): a
third of it per window keeps each box a few pixels wide and the document near 400 kB."""
_IDLE = "#eeeeee"
_MARKED = "#fbe3e0"
_MARK_INK = "#c0392b"
_GAP_W = 44.0
def _fmt_ms(v: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{v:.{decimals}f}"


def _stage_label(stage: int, per_replica: int, replicas: int) -> str:
    if replicas == 1:
        return str(stage)
    rep, local = divmod(stage, per_replica)
    return str(local) + "′" * rep


def _stages_of(sim: SimResult) -> list[list[int]]:
    tl = sim.timeline
    stages_of: list[list[int]] = [[] for _ in range(sim.n_ranks)]
    if sim.stage_ranks:
        for g, r in enumerate(sim.stage_ranks):
            stages_of[r].append(g)
    else:
        for r in range(sim.n_ranks):
            stages_of[r] = sorted({int(s) for s in tl.stage[tl.rank == r]})
    return stages_of


def _per_replica(sim: SimResult) -> tuple[int, int]:
    tl = sim.timeline
    replicas = max(1, sim.replicas)
    n_stages = len(sim.stage_ranks) if sim.stage_ranks else (
        int(tl.stage.max()) + 1 if tl.stage.size else 0)
    return max(1, n_stages // replicas), replicas


def stage_name(sim: SimResult, stage: int) -> str:
    """Stage ``stage`` as the drawings write it (``3′`` = stage 3 of the second replica)."""
    per_replica, replicas = _per_replica(sim)
    return _stage_label(stage, per_replica, replicas)


def rank_labels(sim: SimResult) -> list[str]:
    """``rank r (stages …)`` of every pipeline rank."""
    per_replica, replicas = _per_replica(sim)
    return [
        f"rank {r} (stages {', '.join(_stage_label(g, per_replica, replicas) for g in st)})"
        if st else f"rank {r}"
        for r, st in enumerate(_stages_of(sim))
    ]


def idle_share(sim: SimResult) -> float:
    """Idle share of all pipeline ranks' time over the step: 1 − Σ busy / (ranks × step)."""
    total = sim.step_time * sim.n_ranks
    return 1.0 - float(sim.per_rank_busy.sum()) / total if total > 0 else 0.0


def windows(sim: SimResult, max_actions: int = MAX_ACTIONS) -> list[tuple[float, float]]:
    """The time windows a drawing of ``sim`` shows: ``[(0, step)]`` when it has at most
    ``max_actions`` actions, else the warm-up, a steady-state slice and the cool-down
    (merged where they meet), each of about ``max_actions / 3`` actions.

    The warm-up ends a couple of action lengths after the last rank to start a backward has
    started it (every rank is then in its steady state), or earlier when that window would
    hold more than its share; the cool-down starts as long before the first rank to finish
    its forwards has finished them, or later for the same reason. The slice is centred
    between the two."""
    tl = sim.timeline
    n = int(tl.start.shape[0])
    span = float(sim.step_time)
    if n <= max_actions or span <= 0:
        return [(0.0, span if span > 0 else 1.0)]
    share = max(1, max_actions // 3)
    starts = np.sort(tl.start)
    ends = np.sort(tl.end)
    longest = float((tl.end - tl.start).max())
    back = (tl.kind == KIND_CODES["B"]) | (tl.kind == KIND_CODES["I"])
    fwd = tl.kind == KIND_CODES["F"]
    first_back = [float(tl.start[(tl.rank == r) & back].min())
                  for r in range(sim.n_ranks) if ((tl.rank == r) & back).any()]
    last_fwd = [float(tl.end[(tl.rank == r) & fwd].max())
                for r in range(sim.n_ranks) if ((tl.rank == r) & fwd).any()]
    warm = max(first_back, default=span / 3) + 2 * longest
    warm = min(warm, float(starts[share]))
    cool = min(last_fwd, default=2 * span / 3) - 2 * longest
    cool = max(cool, float(ends[n - 1 - share]))
    if warm >= cool:
        return [(0.0, span)]
    mid = (warm + cool) / 2
    j = int(np.searchsorted(starts, mid))
    lo = float(starts[max(j - share // 2, 0)])
    hi = float(starts[min(j + share // 2, n - 1)])
    lo, hi = max(lo, warm), min(hi, cool)
    out: list[tuple[float, float]] = []
    for a, b in ((0.0, warm), (lo, hi), (cool, span)):
        if b <= a:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def timeline_svg(
    sim: SimResult,
    *,
    title: str | None = None,
    width: int = 1200,
    row_height: int = 24,
    max_actions: int | None = MAX_ACTIONS,
    marks: Mapping[int, str] | None = None,
    note: str | None = None,
) -> str:
    """Render ``sim`` as a standalone SVG document (see the module docstring).

    ``width`` is the drawing's width in px (the time axis gets what the labels leave);
    ``row_height`` the height of one rank's row; ``max_actions`` the most actions drawn
    whole (more are windowed; None = always whole); ``marks`` a note per flagged rank
    (tints its row); ``note`` a second summary line.
    """
    tl = sim.timeline
    n_ranks = sim.n_ranks
    replicas = max(1, sim.replicas)
    per_replica, _ = _per_replica(sim)
    span = float(sim.step_time) if sim.step_time > 0 else 1.0
    ms = 1e3
    marks = dict(marks or {})
    wins = (windows(sim, max_actions) if max_actions is not None
            else [(0.0, span)])
    windowed = len(wins) > 1 or wins[0] != (0.0, span)

    labels = rank_labels(sim)
    labels = [f"{label} {marks[r]}" if r in marks else label for r, label in enumerate(labels)]

    char_w = 6.6  # px per character of the 11 px label font (DejaVu Sans average)
    left = 12 + max((len(label) for label in labels), default=6) * char_w + 10
    right = 16
    plot_w = max(200.0, width - left - right)
    total_w = left + plot_w + right
    top = 12 + (24 if title else 0)
    subtitle_y = top + 4
    top += 22
    if note:
        top += 16
    if windowed:
        top += 30  # the line saying what is drawn, and the windows' names
    rows_h = n_ranks * row_height
    axis_y = top + rows_h
    legend_y = axis_y + 42 + (16 if windowed else 0)
    total_h = legend_y + 26

    shown = sum(b - a for a, b in wins)
    scale = (plot_w - _GAP_W * (len(wins) - 1)) / shown
    offsets = []  # x of each window's start
    x = left
    for a, b in wins:
        offsets.append(x)
        x += (b - a) * scale + _GAP_W

    def x_in(w: int, t: float) -> float:
        return offsets[w] + (t - wins[w][0]) * scale

    out: list[str] = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{num(total_w)}" '
        f'height="{num(total_h)}" viewBox="0 0 {num(total_w)} {num(total_h)}" '
        'role="img">',
        f"<title>{escape(title or 'pipeline timeline')}</title>",
        f'<rect x="0" y="0" width="{num(total_w)}" height="{num(total_h)}" fill="#ffffff"/>',
    ]
    if title:
        out.append(f'<text x="12" y="24" {FONT} font-size="15" font-weight="bold" '
                   f'fill="#222222">{escape(title)}</text>')
    busy = float(sim.max_rank_busy)
    summary = (f"step {sim.step_time * ms:.3f} ms · busiest rank {busy * ms:.3f} ms · "
               f"bubble {sim.bubble_fraction * 100:.1f}% of the busiest rank's work, "
               f"{idle_share(sim) * 100:.1f}% of all ranks' time idle")
    if replicas > 1:
        summary += f" · {replicas} model replicas (′ = stage of replica 2)"
    y_line = subtitle_y + 10
    out.append(f'<text class="summary" x="12" y="{num(y_line)}" {FONT} font-size="11" '
               f'fill="#555555">{escape(summary)}</text>')
    if note:
        y_line += 16
        out.append(f'<text class="note" x="12" y="{num(y_line)}" {FONT} font-size="11" '
                   f'fill="{_MARK_INK}">{escape(note)}</text>')
    if windowed:
        y_line += 16
        n_all = int(tl.start.shape[0])
        out.append(f'<text class="windowed" x="12" y="{num(y_line)}" {FONT} '
                   f'font-size="11" fill="#555555">{escape(_windowed_line(sim, wins, n_all))}'
                   '</text>')

    # rows: label and pale background per window (idle time shows through)
    for r in range(n_ranks):
        y = top + r * row_height
        ink = _MARK_INK if r in marks else "#222222"
        out.append(f'<text class="rank-label" x="12" y="{num(y + row_height * 0.65)}" '
                   f'{FONT} font-size="11" fill="{ink}">{escape(labels[r])}</text>')
        fill = _MARKED if r in marks else _IDLE
        for w, (a, b) in enumerate(wins):
            extra = f' data-window="{w}"' if windowed else ""
            mark = ' data-mark="1"' if r in marks else ""
            out.append(f'<rect class="row" data-rank="{r}"{extra}{mark} '
                       f'x="{num(offsets[w])}" y="{num(y + 1)}" '
                       f'width="{num((b - a) * scale)}" height="{num(row_height - 2)}" '
                       f'fill="{fill}"/>')
    if windowed:
        for w, (a, b) in enumerate(wins):
            name = _window_name(w, wins, span)
            out.append(f'<rect class="window" data-name="{name}" '
                       f'data-start-ms="{a * ms:.3f}" data-end-ms="{b * ms:.3f}" '
                       f'x="{num(offsets[w])}" y="{num(top - 14)}" '
                       f'width="{num((b - a) * scale)}" height="12" fill="none"/>')
            out.append(f'<text class="window-label" x="{num(offsets[w] + 2)}" '
                       f'y="{num(top - 4)}" {FONT} font-size="10" fill="#555555">'
                       f'{escape(name)}</text>')

    # one rect per action (per window it shows in), in timeline order
    kinds_seen: set[str] = set()
    starts, ends = tl.start, tl.end
    h = row_height - 6
    for w, (a, b) in enumerate(wins):
        sel = np.flatnonzero((ends > a) & (starts < b)) if windowed else range(len(starts))
        for i in sel:
            k = KINDS[int(tl.kind[i])]
            kinds_seen.add(k)
            r, g, mb = int(tl.rank[i]), int(tl.stage[i]), int(tl.mb[i])
            t0, t1 = float(starts[i]), float(ends[i])
            x0, x1 = x_in(w, max(t0, a)), x_in(w, min(t1, b))
            y = top + r * row_height + 3
            stage = _stage_label(g, per_replica, replicas)
            tip = (f"{KIND_NAMES[k]} · stage {stage} · micro-batch {mb} · "
                   f"{t0 * ms:.3f}–{t1 * ms:.3f} ms")
            out.append(
                f'<rect class="op {k}" data-rank="{r}" data-stage="{g}" data-mb="{mb}" '
                f'data-kind="{k}" x="{num(x0)}" y="{num(y)}" '
                f'width="{num(max(x1 - x0, 0.0))}" '
                f'height="{num(h)}" fill="{KIND_COLOURS[k]}" stroke="#ffffff" '
                f'stroke-width="0.5"><title>{escape(tip)}</title></rect>'
            )
            text = str(mb)
            if x1 - x0 >= 5.5 * len(text) + 3 and h >= 10:
                out.append(f'<text class="op-label" x="{num((x0 + x1) / 2)}" '
                           f'y="{num(y + h * 0.72)}" {FONT} font-size="9" fill="#ffffff" '
                           f'text-anchor="middle">{text}</text>')

    # gaps between windows: a break mark over the rows and what it leaves out
    for w in range(len(wins) - 1):
        g0 = offsets[w] + (wins[w][1] - wins[w][0]) * scale
        a, b = wins[w][1], wins[w + 1][0]
        hidden = int(((tl.start >= a) & (tl.end <= b)).sum())
        gx = g0 + _GAP_W / 2
        zig = " ".join(f"{num(gx + (4 if j % 2 else -4))},{num(top + j * 8)}"
                       for j in range(int(rows_h // 8) + 1))
        out.append(f'<g class="gap" data-start-ms="{a * ms:.3f}" data-end-ms="{b * ms:.3f}" '
                   f'data-hidden="{hidden}">')
        out.append(f'<rect x="{num(g0 + 3)}" y="{num(top)}" width="{num(_GAP_W - 6)}" '
                   f'height="{num(rows_h)}" fill="#f8f8f8"/>')
        out.append(f'<polyline points="{zig}" fill="none" stroke="#999999" '
                   'stroke-width="1"/>')
        out.append(f'<text x="{num(gx)}" y="{num(axis_y + 30)}" {FONT} font-size="9" '
                   f'fill="#777777" text-anchor="middle">{(b - a) * ms:.1f} ms</text>')
        out.append(f'<text x="{num(gx)}" y="{num(axis_y + 41)}" {FONT} font-size="9" '
                   f'fill="#777777" text-anchor="middle">{hidden:,} hidden</text>')
        out.append("</g>")

    # time axis in ms, per window (the same scale everywhere)
    step = nice_step(shown * ms, 8)
    for w, (a, b) in enumerate(wins):
        x0, x1 = offsets[w], x_in(w, b)
        out.append(f'<line x1="{num(x0)}" y1="{num(axis_y)}" x2="{num(x1)}" '
                   f'y2="{num(axis_y)}" stroke="#333333" stroke-width="1"/>')
        j0 = math.ceil(a * ms / step - 1e-9)
        j1 = math.floor(b * ms / step + 1e-9)
        for j in range(j0, j1 + 1):
            v = j * step
            x = x_in(w, v / ms)
            out.append(f'<line class="tick" x1="{num(x)}" y1="{num(axis_y)}" '
                       f'x2="{num(x)}" y2="{num(axis_y + 5)}" stroke="#333333" '
                       'stroke-width="1"/>')
            out.append(f'<text class="tick-label" x="{num(x)}" y="{num(axis_y + 17)}" '
                       f'{FONT} font-size="10" fill="#333333" text-anchor="middle">'
                       f'{_fmt_ms(v, step)}</text>')
    axis_label_y = axis_y + 33 + (16 if windowed else 0)
    out.append(f'<text x="{num(left + plot_w / 2)}" y="{num(axis_label_y)}" {FONT} '
               f'font-size="11" fill="#333333" text-anchor="middle">time (ms)</text>')

    # legend: the kinds drawn, and idle
    x = left
    entries = [(k, KIND_COLOURS[k], KIND_NAMES[k]) for k in KINDS if k in kinds_seen]
    entries.append(("idle", _IDLE, "idle (bubble)"))
    if marks:
        entries.append(("marked", _MARKED, "slowed rank"))
    for key, colour, name in entries:
        out.append(f'<rect class="legend" data-kind="{key}" x="{num(x)}" '
                   f'y="{num(legend_y)}" width="14" height="14" fill="{colour}" '
                   f'stroke="#999999" stroke-width="0.5"/>')
        label = f"{key} {name}" if key in KIND_NAMES else name
        out.append(f'<text x="{num(x + 19)}" y="{num(legend_y + 11)}" {FONT} '
                   f'font-size="11" fill="#222222">{escape(label)}</text>')
        x += 19 + len(label) * char_w + 18
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _window_name(w: int, wins: list[tuple[float, float]], span: float) -> str:
    a, b = wins[w]
    if a <= 0.0 and b >= span:
        return "whole step"
    if a <= 0.0:
        return "warm-up"
    if b >= span:
        return "cool-down"
    return "steady state (slice)"


def _windowed_line(sim: SimResult, wins: list[tuple[float, float]], n_all: int) -> str:
    tl = sim.timeline
    drawn = np.zeros(n_all, dtype=bool)
    for a, b in wins:
        drawn |= (tl.end > a) & (tl.start < b)
    ms = 1e3
    d = 0 if sim.step_time * ms >= 100 else 2
    parts = ", ".join(f"{_window_name(w, wins, float(sim.step_time))} "
                      f"{a * ms:.{d}f}–{b * ms:.{d}f} ms" for w, (a, b) in enumerate(wins))
    return (f"{int(drawn.sum()):,} of {n_all:,} actions drawn: {parts}; the zig-zag gaps "
            "hide the rest (timeline.html shows all)")
