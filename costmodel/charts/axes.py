"""Axes for the charts: linear or log scales with 1-2-5 ticks, drawn as SVG fragments."""

from __future__ import annotations

import math
from dataclasses import dataclass
from xml.sax.saxutils import escape

FONT = "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\""


def num(x: float) -> str:
    """A coordinate with 2 decimals, without a trailing ``.00`` (deterministic)."""
    s = f"{x:.2f}"
    return s[:-3] if s.endswith(".00") else s


def nice_step(span: float, target: int) -> float:
    """A 1-2-5 tick step giving about ``target`` ticks over ``span``."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / target
    mag = 10.0 ** math.floor(math.log10(raw))
    for f in (1.0, 2.0, 5.0, 10.0):
        if f * mag >= raw:
            return f * mag
    return 10.0 * mag


def fmt(v: float) -> str:
    """A tick value: thousands separated, at most 3 significant decimals."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:.3g}" if a < 100 else f"{v:.0f}"
    return f"{v:.2g}"


@dataclass
class Scale:
    """Maps data ``lo..hi`` onto pixels ``p0..p1`` (``p1 < p0`` for a y axis)."""

    lo: float
    hi: float
    p0: float
    p1: float
    log: bool = False

    @classmethod
    def fit(cls, values: list[float], p0: float, p1: float, *, log: bool | None = None,
            pad: float = 0.06, zero: bool = False) -> Scale:
        """A scale holding ``values`` with ``pad`` of the span each side; log when asked, or
        (``log=None``) when the values are positive and span more than 30×."""
        vals = [v for v in values if math.isfinite(v)] or [0.0, 1.0]
        lo, hi = min(vals), max(vals)
        if log is None:
            log = lo > 0 and hi / lo > 30
        if log:
            lo, hi = math.log10(max(lo, 1e-300)), math.log10(max(hi, 1e-300))
        if zero and not log:
            lo = min(lo, 0.0)
        if hi - lo <= 0:
            d = abs(hi) * 0.1 or 1.0
            lo, hi = lo - d, hi + d
        span = hi - lo
        lo, hi = lo - span * pad, hi + span * pad
        if zero and not log and min(vals) >= 0:
            lo = max(lo, 0.0)
        if log:
            return cls(10 ** lo, 10 ** hi, p0, p1, True)
        return cls(lo, hi, p0, p1, False)

    def __call__(self, v: float) -> float:
        if self.log:
            a, b, x = math.log10(self.lo), math.log10(self.hi), math.log10(max(v, 1e-300))
        else:
            a, b, x = self.lo, self.hi, v
        return self.p0 + (x - a) / (b - a) * (self.p1 - self.p0)

    def ticks(self, target: int = 6) -> list[float]:
        if self.log:
            out: list[float] = []
            e0, e1 = math.floor(math.log10(self.lo)), math.ceil(math.log10(self.hi))
            mults = (1, 2, 5) if e1 - e0 <= 4 else (1,)
            for e in range(e0, e1 + 1):
                for m in mults:
                    v = m * 10.0 ** e
                    if self.lo <= v <= self.hi:
                        out.append(v)
            return out
        step = nice_step(self.hi - self.lo, target)
        j0, j1 = math.ceil(self.lo / step - 1e-9), math.floor(self.hi / step + 1e-9)
        return [j * step for j in range(j0, j1 + 1)]


def axes(x: Scale, y: Scale, x_label: str, y_label: str,
         x_fmt: object = fmt, y_fmt: object = fmt) -> list[str]:
    """The frame, grid, ticks and labels of a plot whose area is ``x.p0..x.p1`` ×
    ``y.p1..y.p0``."""
    fx = x_fmt if callable(x_fmt) else fmt
    fy = y_fmt if callable(y_fmt) else fmt
    left, right, top, bottom = x.p0, x.p1, y.p1, y.p0
    out = [f'<rect class="plot-area" x="{num(left)}" y="{num(top)}" '
           f'width="{num(right - left)}" height="{num(bottom - top)}" fill="#fbfbfb" '
           'stroke="#999999" stroke-width="1"/>']
    for v in x.ticks():
        px = x(v)
        out.append(f'<line class="grid" x1="{num(px)}" y1="{num(top)}" x2="{num(px)}" '
                   f'y2="{num(bottom)}" stroke="#e4e4e4" stroke-width="1"/>')
        out.append(f'<text class="x-tick" x="{num(px)}" y="{num(bottom + 16)}" {FONT} '
                   f'font-size="10" fill="#333333" text-anchor="middle">{escape(fx(v))}</text>')
    for v in y.ticks():
        py = y(v)
        out.append(f'<line class="grid" x1="{num(left)}" y1="{num(py)}" x2="{num(right)}" '
                   f'y2="{num(py)}" stroke="#e4e4e4" stroke-width="1"/>')
        out.append(f'<text class="y-tick" x="{num(left - 6)}" y="{num(py + 3.5)}" {FONT} '
                   f'font-size="10" fill="#333333" text-anchor="end">{escape(fy(v))}</text>')
    out.append(f'<text class="x-label" x="{num((left + right) / 2)}" y="{num(bottom + 36)}" '
               f'{FONT} font-size="12" fill="#222222" text-anchor="middle">'
               f'{escape(x_label)}</text>')
    cy = (top + bottom) / 2
    out.append(f'<text class="y-label" x="{num(left - 62)}" y="{num(cy)}" {FONT} '
               f'font-size="12" fill="#222222" text-anchor="middle" '
               f'transform="rotate(-90 {num(left - 62)} {num(cy)})">{escape(y_label)}</text>')
    return out


def document(width: float, height: float, title: str, body: list[str],
             subtitle: str | None = None) -> str:
    """A standalone SVG document with ``title`` (also its accessible name) and ``body``."""
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{num(width)}" height="{num(height)}" viewBox="0 0 {num(width)} '
        f'{num(height)}" role="img">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{num(width)}" height="{num(height)}" fill="#ffffff"/>',
        f'<text class="title" x="12" y="24" {FONT} font-size="15" font-weight="bold" '
        f'fill="#222222">{escape(title)}</text>',
    ]
    if subtitle:
        out.append(f'<text class="subtitle" x="12" y="42" {FONT} font-size="11" '
                   f'fill="#555555">{escape(subtitle)}</text>')
    out += body
    out.append("</svg>")
    return "\n".join(out) + "\n"
