"""Pictures of one estimate request beyond its timeline (:mod:`costmodel.timeline`): the
what-if timeline (the plan's schedule simulated under a scenario, slowed ranks marked) and
goodput against the checkpoint interval. Request in, document out; the drawing is in
:mod:`costmodel.pipeline.svg` / :mod:`costmodel.pipeline.html` and :mod:`costmodel.charts`."""

from __future__ import annotations

import math
from typing import Any, Literal

from costmodel.charts.goodput import goodput_curve_svg
from costmodel.errors import FieldProblem, SpecError
from costmodel.estimate import plan_goodput_model
from costmodel.goodput import GoodputModel
from costmodel.pipeline.html import timeline_html
from costmodel.pipeline.svg import timeline_svg
from costmodel.specs.request import EstimateRequest, parse
from costmodel.specs.scenario import Scenario
from costmodel.timeline import timeline_title
from costmodel.what_if import scenario_simulation

__all__ = ["goodput_svg", "request_goodput_model", "what_if_timeline"]


def _factor(f: float) -> str:
    return f"×{f:.2f}"


def what_if_timeline(request: EstimateRequest | dict[str, Any],
                     scenario: Scenario | dict[str, Any] | None = None,
                     fmt: Literal["svg", "html"] = "svg") -> str:
    """The timeline of ``request``'s plan under ``scenario`` (as :func:`costmodel.what_if`
    simulates it, one step without jitter): every pipeline rank the scenario slows is marked
    with its compute factor, the step before and after heads the drawing. ``fmt``: the SVG
    of :func:`costmodel.pipeline.svg.timeline_svg` (windowed when large) or the interactive
    page of :func:`costmodel.pipeline.html.timeline_html`. Raises
    :class:`~costmodel.errors.SpecError` as :func:`costmodel.what_if` does."""
    req: EstimateRequest = parse(EstimateRequest, request)
    sc: Scenario = parse(Scenario, scenario if scenario is not None else {})
    ss = scenario_simulation(req, sc)
    marks = {r: _factor(f) for r, f in enumerate(ss.factors) if not math.isclose(f, 1.0)}
    base, step = ss.baseline_step_s, ss.step_s
    change = (step - base) / base * 100 if base > 0 else 0.0
    parts = [f"what-if: step {base * 1e3:.3f} ms → {step * 1e3:.3f} ms ({change:+.1f}%)"]
    if marks:
        parts.append("slowed: " + ", ".join(f"rank {r} {m}" for r, m in marks.items()))
    if ss.p2p is not None and any(not math.isclose(f, 1.0) for f in ss.p2p):
        slow = [f"{g}→{g + 1} {_factor(f)}" for g, f in enumerate(ss.p2p)
                if not math.isclose(f, 1.0)]
        parts.append("send/recv: boundaries " + ", ".join(slow[:8])
                     + (" …" if len(slow) > 8 else ""))
    if sc.jitter is not None:
        parts.append("jitter not drawn (one step as scheduled)")
    note = " · ".join(parts)
    title = "what-if · " + timeline_title(req)
    if fmt == "html":
        return timeline_html(ss.sim, title=title, marks=marks, note=note)
    return timeline_svg(ss.sim, title=title, marks=marks, note=note)


def request_goodput_model(req: EstimateRequest) -> tuple[GoodputModel, float | None]:
    """The failure model :func:`costmodel.estimate` evaluates for ``req``'s plan (same GPUs,
    nodes, stages, NIC bandwidth and step time) and the job's own checkpoint interval (None:
    the optimum). A request without ``training.reliability`` is a
    :class:`~costmodel.errors.SpecError` on that field."""
    rel = req.training.reliability
    if rel is None:
        raise SpecError(FieldProblem(
            "training.reliability", "goodput needs a failure model: give "
            "training.reliability (gpu_mtbf_hours per pool, restart_s, checkpoint bandwidth, "
            "recovery)"))
    gm = plan_goodput_model(req.model, req.training, req.cluster, req.plan, req.calibration)
    return gm, rel.checkpoint_interval_s


def goodput_svg(request: EstimateRequest | dict[str, Any]) -> str:
    """Goodput of ``request``'s plan against its checkpoint interval, the optimum (what the
    estimate's ``goodput`` reports without a given interval) marked
    (:func:`costmodel.charts.goodput.goodput_curve_svg`)."""
    req: EstimateRequest = parse(EstimateRequest, request)
    gm, given = request_goodput_model(req)
    rel = req.training.reliability
    assert rel is not None
    return goodput_curve_svg(gm, interval_s=given,
                             title="goodput · " + timeline_title(req),
                             subtitle=f"recovery {rel.scheme}")
