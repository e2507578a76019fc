"""A simulated pipeline schedule drawn as a standalone SVG timeline.

One row per pipeline rank, labelled ``rank r (stages …)``; every executed action is one
``<rect class="op K">`` (K = F, B, I or W, coloured by kind) placed at its simulated start and
end, labelled with its micro-batch when the box is wide enough and carrying a ``<title>`` (the
hover text: kind, stage, micro-batch, start and end in ms). Idle time is left empty on the
row's pale background, so bubbles show as gaps. A time axis in milliseconds and a legend of
the kinds drawn follow. With two model replicas (Chimera, BitPipe) a stage of the second
replica is written with a prime (``3′`` = stage 3 of replica 2).

Times of the :class:`~costmodel.pipeline.simulator.SimResult` are read as seconds (what
:func:`costmodel.estimate` simulates). The output is deterministic (fixed number formats, no
timestamps or ids) and all text is XML-escaped.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

from costmodel.pipeline.schedules import KINDS
from costmodel.pipeline.simulator import SimResult

__all__ = ["KIND_COLOURS", "KIND_NAMES", "timeline_svg"]

#: Fill colour of each action kind (Tableau 10: colour-blind-safe, distinct in greyscale).
KIND_COLOURS: dict[str, str] = {"F": "#4e79a7", "B": "#f28e2b", "I": "#59a14f", "W": "#b07aa1"}
KIND_NAMES: dict[str, str] = {
    "F": "forward",
    "B": "backward",
    "I": "backward (input grad)",
    "W": "backward (weight grad)",
}
_IDLE = "#eeeeee"
_FONT = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""


def _num(x: float) -> str:
    """A coordinate with 2 decimals, without a trailing ``.00`` (deterministic)."""
    s = f"{x:.2f}"
    return s[:-3] if s.endswith(".00") else s


def _nice_step(span: float, target: int) -> float:
    """A 1-2-5 tick step giving about ``target`` ticks over ``span``."""
    if span <= 0:
        return 1.0
    raw = span / target
    mag = 10.0 ** math.floor(math.log10(raw))
    for f in (1.0, 2.0, 5.0, 10.0):
        if f * mag >= raw:
            return f * mag
    return 10.0 * mag


def _fmt_ms(v: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{v:.{decimals}f}"


def _stage_label(stage: int, per_replica: int, replicas: int) -> str:
    if replicas == 1:
        return str(stage)
    rep, local = divmod(stage, per_replica)
    return str(local) + "′" * rep


def timeline_svg(
    sim: SimResult,
    *,
    title: str | None = None,
    width: int = 1200,
    row_height: int = 24,
) -> str:
    """Render ``sim`` as a standalone SVG document (see the module docstring).

    ``width`` is the drawing's width in px (the time axis gets what the labels leave);
    ``row_height`` the height of one rank's row.
    """
    tl = sim.timeline
    n_ranks = sim.n_ranks
    replicas = max(1, sim.replicas)
    n_stages = len(sim.stage_ranks) if sim.stage_ranks else (
        int(tl.stage.max()) + 1 if tl.stage.size else 0)
    per_replica = max(1, n_stages // replicas)
    span = float(sim.step_time) if sim.step_time > 0 else 1.0
    ms = 1e3

    stages_of: list[list[int]] = [[] for _ in range(n_ranks)]
    if sim.stage_ranks:
        for g, r in enumerate(sim.stage_ranks):
            stages_of[r].append(g)
    else:
        for r in range(n_ranks):
            stages_of[r] = sorted({int(s) for s in tl.stage[tl.rank == r]})
    labels = [
        f"rank {r} (stages {', '.join(_stage_label(g, per_replica, replicas) for g in st)})"
        if st else f"rank {r}"
        for r, st in enumerate(stages_of)
    ]

    char_w = 6.6  # px per character of the 11 px label font (DejaVu Sans average)
    left = 12 + max((len(label) for label in labels), default=6) * char_w + 10
    right = 16
    plot_w = max(200.0, width - left - right)
    total_w = left + plot_w + right
    top = 12 + (24 if title else 0)
    subtitle_y = top + 4
    top += 22
    rows_h = n_ranks * row_height
    axis_y = top + rows_h
    legend_y = axis_y + 42
    total_h = legend_y + 26

    def x_of(t: float) -> float:
        return left + t / span * plot_w

    out: list[str] = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_num(total_w)}" '
        f'height="{_num(total_h)}" viewBox="0 0 {_num(total_w)} {_num(total_h)}" '
        'role="img">',
        f"<title>{escape(title or 'pipeline timeline')}</title>",
        f'<rect x="0" y="0" width="{_num(total_w)}" height="{_num(total_h)}" fill="#ffffff"/>',
    ]
    if title:
        out.append(f'<text x="12" y="24" {_FONT} font-size="15" font-weight="bold" '
                   f'fill="#222222">{escape(title)}</text>')
    busy = float(sim.max_rank_busy)
    summary = (f"step {sim.step_time * ms:.3f} ms · busiest rank {busy * ms:.3f} ms · "
               f"bubble {sim.bubble_fraction * 100:.1f}% of the busiest rank's work")
    if replicas > 1:
        summary += f" · {replicas} model replicas (′ = stage of replica 2)"
    out.append(f'<text x="12" y="{_num(subtitle_y + 10)}" {_FONT} font-size="11" '
               f'fill="#555555">{escape(summary)}</text>')

    # rows: label and pale background (idle time shows through)
    for r in range(n_ranks):
        y = top + r * row_height
        out.append(f'<text class="rank-label" x="12" y="{_num(y + row_height * 0.65)}" '
                   f'{_FONT} font-size="11" fill="#222222">{escape(labels[r])}</text>')
        out.append(f'<rect class="row" data-rank="{r}" x="{_num(left)}" y="{_num(y + 1)}" '
                   f'width="{_num(plot_w)}" height="{_num(row_height - 2)}" fill="{_IDLE}"/>')

    # one rect per action, in timeline order (rank by rank, each in execution order)
    kinds_seen: set[str] = set()
    starts, ends = tl.start, tl.end
    for i in range(len(starts)):
        k = KINDS[int(tl.kind[i])]
        kinds_seen.add(k)
        r, g, mb = int(tl.rank[i]), int(tl.stage[i]), int(tl.mb[i])
        t0, t1 = float(starts[i]), float(ends[i])
        x0, x1 = x_of(t0), x_of(t1)
        y = top + r * row_height + 3
        h = row_height - 6
        stage = _stage_label(g, per_replica, replicas)
        tip = (f"{KIND_NAMES[k]} · stage {stage} · micro-batch {mb} · "
               f"{t0 * ms:.3f}–{t1 * ms:.3f} ms")
        out.append(
            f'<rect class="op {k}" data-rank="{r}" data-stage="{g}" data-mb="{mb}" '
            f'data-kind="{k}" x="{_num(x0)}" y="{_num(y)}" width="{_num(max(x1 - x0, 0.0))}" '
            f'height="{_num(h)}" fill="{KIND_COLOURS[k]}" stroke="#ffffff" '
            f'stroke-width="0.5"><title>{escape(tip)}</title></rect>'
        )
        text = str(mb)
        if x1 - x0 >= 5.5 * len(text) + 3 and h >= 10:
            out.append(f'<text class="op-label" x="{_num((x0 + x1) / 2)}" '
                       f'y="{_num(y + h * 0.72)}" {_FONT} font-size="9" fill="#ffffff" '
                       f'text-anchor="middle">{text}</text>')

    # time axis in ms
    out.append(f'<line x1="{_num(left)}" y1="{_num(axis_y)}" x2="{_num(left + plot_w)}" '
               f'y2="{_num(axis_y)}" stroke="#333333" stroke-width="1"/>')
    step = _nice_step(span * ms, 8)
    n_ticks = math.floor(span * ms / step + 1e-9)
    for j in range(n_ticks + 1):
        v = j * step
        x = x_of(v / ms)
        out.append(f'<line class="tick" x1="{_num(x)}" y1="{_num(axis_y)}" x2="{_num(x)}" '
                   f'y2="{_num(axis_y + 5)}" stroke="#333333" stroke-width="1"/>')
        out.append(f'<text class="tick-label" x="{_num(x)}" y="{_num(axis_y + 17)}" {_FONT} '
                   f'font-size="10" fill="#333333" text-anchor="middle">'
                   f'{_fmt_ms(v, step)}</text>')
    out.append(f'<text x="{_num(left + plot_w / 2)}" y="{_num(axis_y + 33)}" {_FONT} '
               f'font-size="11" fill="#333333" text-anchor="middle">time (ms)</text>')

    # legend: the kinds drawn, and idle
    x = left
    entries = [(k, KIND_COLOURS[k], KIND_NAMES[k]) for k in KINDS if k in kinds_seen]
    entries.append(("idle", _IDLE, "idle (bubble)"))
    for key, colour, name in entries:
        out.append(f'<rect class="legend" data-kind="{key}" x="{_num(x)}" '
                   f'y="{_num(legend_y)}" width="14" height="14" fill="{colour}" '
                   f'stroke="#999999" stroke-width="0.5"/>')
        label = f"{key} {name}" if key != "idle" else name
        out.append(f'<text x="{_num(x + 19)}" y="{_num(legend_y + 11)}" {_FONT} '
                   f'font-size="11" fill="#222222">{escape(label)}</text>')
        x += 19 + len(label) * char_w + 18
    out.append("</svg>")
    return "\n".join(out) + "\n"
