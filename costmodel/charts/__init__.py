"""Small standalone SVG charts of the cost model's results (pure: strings out, no web or
solver imports): the Pareto front of a search (:mod:`.pareto`) and goodput against the
checkpoint interval (:mod:`.goodput`). The pipeline timeline has its own renderers in
:mod:`costmodel.pipeline.svg` and :mod:`costmodel.pipeline.html`."""

from __future__ import annotations

from costmodel.charts.goodput import goodput_curve_svg
from costmodel.charts.pareto import ParetoPoint, pareto_front, pareto_svg

__all__ = ["ParetoPoint", "goodput_curve_svg", "pareto_front", "pareto_svg"]
