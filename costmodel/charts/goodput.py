"""Goodput against the checkpoint interval: the curve of the failure model of
:mod:`costmodel.goodput` (Young 1974 / Daly 2006, first order) for one plan, its optimum
marked and, when the job fixes its interval, that one too.

The curve is a ``<path class="curve">`` over log-spaced intervals from a thirtieth to thirty
times the optimum; the optimum is a ``<circle class="optimum" data-interval-s data-goodput>``,
a given interval a ``<circle class="given" …>``. Deterministic, all text XML-escaped.
"""

from __future__ import annotations

import math
from xml.sax.saxutils import escape

from costmodel.charts.axes import FONT, Scale, axes, document, num
from costmodel.goodput import GoodputModel

__all__ = ["goodput_curve_svg"]

SAMPLES = 161
FORMULA = ("W(τ) = (1 + δ/τ) / (1 − λ_c (R + (τ+δ)/2) − λ_n c_n); goodput = 1/W; optimum "
           "τ* = −δ + √(δ² + 2δa) (Young 1974, Daly 2006)")


def _minutes(s: float) -> str:
    if s >= 5400:
        return f"{s / 3600:.3g} h"
    if s >= 90:
        return f"{s / 60:.3g} min"
    return f"{s:.3g} s"


def goodput_curve_svg(gm: GoodputModel, *, interval_s: float | None = None,
                      title: str = "goodput against checkpoint interval",
                      subtitle: str | None = None, width: int = 900,
                      height: int = 520) -> str:
    """The chart of the module docstring for ``gm``; ``interval_s`` the job's own interval
    (``training.reliability.checkpoint_interval_s``), if it sets one."""
    left, right, top, bottom = 96.0, width - 24.0, 62.0, height - 90.0
    body: list[str] = []
    best = gm.optimal_interval() if gm.rate_ckpt > 0 else math.inf
    facts = (f"checkpoint write δ = {_minutes(gm.write_s)} · restart R = "
             f"{_minutes(gm.restart_s)} · {gm.rate * 86400:.3g} interruptions per day")
    sub = (subtitle + " · " if subtitle else "") + facts
    if not math.isfinite(best) or best <= 0:
        why = ("no checkpoints are needed: every failure is recovered from neighbours"
               if gm.rate_ckpt <= 0 else "failures come faster than the job can recover")
        body.append(f'<text class="no-curve" x="{num((left + right) / 2)}" '
                    f'y="{num((top + bottom) / 2)}" {FONT} font-size="13" fill="#555555" '
                    f'text-anchor="middle">{escape(why)}</text>')
        return document(width, height, title, body, subtitle=sub)
    lo, hi = best / 30, best * 30
    taus = [lo * (hi / lo) ** (j / (SAMPLES - 1)) for j in range(SAMPLES)]
    shares = [gm.goodput(t) * 100 for t in taus]
    marks = [(best, gm.goodput(best) * 100, "optimum")]
    if interval_s is not None and interval_s > 0:
        marks.append((interval_s, gm.goodput(interval_s) * 100, "given"))
        taus_all = [*taus, interval_s]
    else:
        taus_all = taus
    x = Scale.fit([t / 60 for t in taus_all], left, right, log=True, pad=0.02)
    y = Scale.fit([s for s in shares if s > 0] + [m[1] for m in marks], bottom, top, pad=0.08)
    body += axes(x, y, "checkpoint interval (minutes, log scale)",
                 "goodput (% of wall time that trains)",
                 x_fmt=lambda v: f"{v:g}", y_fmt=lambda v: f"{v:.4g}%")
    d: list[str] = []
    for t, s in zip(taus, shares, strict=True):
        if s <= 0:
            continue
        d.append(("M" if not d else "L") + f"{num(x(t / 60))},{num(y(s))}")
    body.append(f'<path class="curve" d="{"".join(d)}" fill="none" stroke="#4e79a7" '
                'stroke-width="2"/>')
    for t, s, kind in marks:
        px, py = x(t / 60), y(s)
        colour = "#e15759" if kind == "optimum" else "#f28e2b"
        text = (f"optimum: every {_minutes(t)} → {s:.3f}%" if kind == "optimum"
                else f"given: every {_minutes(t)} → {s:.3f}%")
        body.append(f'<line class="{kind}-line" x1="{num(px)}" y1="{num(top)}" x2="{num(px)}" '
                    f'y2="{num(bottom)}" stroke="{colour}" stroke-width="1" '
                    'stroke-dasharray="4 3"/>')
        body.append(f'<circle class="{kind}" data-interval-s="{t:.6g}" data-goodput="{s / 100:.6g}"'
                    f' cx="{num(px)}" cy="{num(py)}" r="6" fill="{colour}" stroke="#222222" '
                    f'stroke-width="1"><title>{escape(text)}</title></circle>')
        anchor = "start" if px < (left + right) / 2 else "end"
        dx = 10 if anchor == "start" else -10
        dy = -10 if kind == "optimum" else 18
        body.append(f'<text class="{kind}-label" x="{num(px + dx)}" y="{num(py + dy)}" {FONT} '
                    f'font-size="12" font-weight="bold" fill="{colour}" '
                    f'text-anchor="{anchor}">{escape(text)}</text>')
    ly = height - 30.0
    body.append(f'<text x="{num(left)}" y="{num(ly)}" {FONT} font-size="11" fill="#555555">'
                f"{escape(FORMULA)}</text>")
    return document(width, height, title, body, subtitle=sub)
