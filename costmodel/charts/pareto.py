"""A search's plans as throughput (tokens/s) against cost ($ per million tokens), the Pareto
front drawn (no other plan is both faster and cheaper), the returned plans marked.

Each point is a ``<circle class="point">`` (``data-tokens-per-s``, ``data-cost``; class
``front`` on the front, ``chosen`` for a returned plan, with ``data-rank``) carrying a
``<title>`` with the plan's layout and both figures; a point with an ``href`` is wrapped in
``<a class="plan-link" href=…>`` (the stored plan). The front is a ``<path class="front">``
through its points from cheapest to fastest. Deterministic, all text XML-escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from costmodel.charts.axes import FONT, Scale, axes, document, num

__all__ = ["ParetoPoint", "pareto_front", "pareto_svg"]


@dataclass(frozen=True)
class ParetoPoint:
    """One plan of a search: its throughput, its cost, a short description of its layout,
    the link to the stored plan (if it is stored) and its rank among the returned plans
    (None: evaluated, not returned)."""

    tokens_per_s: float
    cost_per_million_tokens: float
    label: str
    href: str | None = None
    rank: int | None = None


def pareto_front(points: Sequence[ParetoPoint]) -> list[int]:
    """Indices of the points no other point dominates (at least as fast and as cheap, better
    in one), ordered from cheapest to fastest."""
    order = sorted(range(len(points)), key=lambda i: (points[i].cost_per_million_tokens,
                                                      -points[i].tokens_per_s))
    front: list[int] = []
    best = -1.0
    for i in order:
        if points[i].tokens_per_s > best:
            front.append(i)
            best = points[i].tokens_per_s
    return front


def pareto_svg(points: Sequence[ParetoPoint], *, title: str = "throughput against cost",
               subtitle: str | None = None, width: int = 900, height: int = 560) -> str:
    """The chart of the module docstring."""
    pts = [p for p in points if p.tokens_per_s > 0 and p.cost_per_million_tokens > 0]
    left, right, top, bottom = 96.0, width - 24.0, 62.0, height - 96.0
    x = Scale.fit([p.cost_per_million_tokens for p in pts], left, right)
    y = Scale.fit([p.tokens_per_s for p in pts], bottom, top)
    ticks = x.ticks()
    step = (ticks[1] - ticks[0]) if len(ticks) > 1 and not x.log else 0.0
    decimals = max(0, -math.floor(math.log10(step))) if step > 0 else 0

    def dollars(v: float) -> str:
        if x.log or step <= 0:
            return f"${v:.3g}" if v < 1000 else f"${v:,.0f}"
        return f"${v:,.{decimals}f}"

    body = axes(x, y, "cost ($ per million tokens, lower is better)",
                "throughput (tokens/s, higher is better)", x_fmt=dollars)
    front = pareto_front(pts)
    on_front = set(front)
    if len(front) > 1:
        # a staircase: from each front point, cheaper plans reach at most its throughput
        d = []
        for j, i in enumerate(front):
            px, py = x(pts[i].cost_per_million_tokens), y(pts[i].tokens_per_s)
            if j == 0:
                d.append(f"M{num(px)},{num(py)}")
            else:
                d.append(f"H{num(px)}V{num(py)}")
        body.append(f'<path class="front" d="{"".join(d)}" fill="none" stroke="#e15759" '
                    'stroke-width="1.8" stroke-dasharray="5 3"/>')
    # draw the plain points first, the front and the chosen ones over them
    def weight(i: int) -> tuple[int, int]:
        return (pts[i].rank is not None, i in on_front)

    for i in sorted(range(len(pts)), key=weight):
        p = pts[i]
        cx, cy = x(p.cost_per_million_tokens), y(p.tokens_per_s)
        classes = ["point"] + (["front"] if i in on_front else []) + (
            ["chosen"] if p.rank is not None else [])
        fill = "#4e79a7" if p.rank is not None else ("#f28e2b" if i in on_front else "#bab0ac")
        tip = (f"{p.label}\n{p.tokens_per_s:,.0f} tokens/s · "
               f"${p.cost_per_million_tokens:.4g} per M tokens"
               + (f"\nreturned plan #{p.rank}" if p.rank is not None else "")
               + ("\non the Pareto front" if i in on_front else "")
               + (f"\n{p.href}" if p.href else ""))
        rank_attr = f' data-rank="{p.rank}"' if p.rank is not None else ""
        chosen = p.rank is not None
        stroke = ("#f28e2b" if i in on_front else "#222222") if chosen else "#ffffff"
        width_ = (3 if i in on_front else 1.5) if chosen else 1
        circle = (f'<circle class="{" ".join(classes)}"{rank_attr} '
                  f'data-tokens-per-s="{p.tokens_per_s:.6g}" '
                  f'data-cost="{p.cost_per_million_tokens:.6g}" cx="{num(cx)}" cy="{num(cy)}" '
                  f'r="{7 if p.rank is not None else 5}" fill="{fill}" '
                  f'stroke="{stroke}" stroke-width="{width_}">'
                  f"<title>{escape(tip)}</title></circle>")
        label = ""
        if p.rank is not None:
            label = (f'<text class="rank-label" x="{num(cx + 10)}" y="{num(cy - 8)}" {FONT} '
                     f'font-size="11" font-weight="bold" fill="#222222">#{p.rank}</text>')
        if p.href:
            href = quoteattr(p.href)
            body.append(f'<a class="plan-link" href={href} xlink:href={href}>{circle}{label}'
                        "</a>")
        else:
            body.append(circle + label)
    # legend, two lines
    ly = height - 44.0
    entries = [("#4e79a7", "#222222", 7, "returned plan (#rank, a link; orange ring: front)"),
               ("#f28e2b", "#ffffff", 5, "on the Pareto front"),
               ("#bab0ac", "#ffffff", 5, "other evaluated plan")]
    lx = left
    for fill, stroke, r, text in entries:
        body.append(f'<circle class="legend" cx="{num(lx + 7)}" cy="{num(ly)}" r="{r}" '
                    f'fill="{fill}" stroke="{stroke}" stroke-width="1"/>')
        body.append(f'<text x="{num(lx + 18)}" y="{num(ly + 4)}" {FONT} font-size="11" '
                    f'fill="#222222">{escape(text)}</text>')
        lx += 30 + len(text) * 6.4
    ly += 20
    body.append(f'<line x1="{num(left)}" y1="{num(ly)}" x2="{num(left + 24)}" y2="{num(ly)}" '
                'stroke="#e15759" stroke-width="1.8" stroke-dasharray="5 3"/>')
    body.append(f'<text x="{num(left + 30)}" y="{num(ly + 4)}" {FONT} font-size="11" '
                'fill="#222222">Pareto front: no other plan is both faster and cheaper</text>')
    if not pts:
        body.append(f'<text x="{num((left + right) / 2)}" y="{num((top + bottom) / 2)}" '
                    f'{FONT} font-size="13" fill="#777777" text-anchor="middle">no plans '
                    "with a throughput and a cost to draw</text>")
    n_front = len(front)
    sub = subtitle or ""
    sub = (sub + " · " if sub else "") + (f"{len(pts)} plans, {n_front} on the Pareto front, "
                                          f"{sum(p.rank is not None for p in pts)} returned")
    return document(width, height, title, body, subtitle=sub)
