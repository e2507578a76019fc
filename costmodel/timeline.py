"""The simulated pipeline timeline of one plan as SVG (``GET /v1/plans/{id}/timeline.svg``)."""

from __future__ import annotations

from typing import Any

from costmodel.estimate import pipeline_simulation
from costmodel.pipeline.svg import timeline_svg as render_timeline
from costmodel.specs.request import EstimateRequest, num_microbatches, parse

__all__ = ["timeline_svg"]


def timeline_svg(request: EstimateRequest | dict[str, Any]) -> str:
    """The pipeline timeline of an estimate request (the ``POST /v1/estimates`` body, a dict or
    :class:`~costmodel.specs.request.EstimateRequest`) as a standalone SVG document: the plan's
    stage times are evaluated and its schedule simulated exactly as :func:`costmodel.estimate`
    does (:func:`costmodel.estimate.pipeline_simulation`), then drawn by
    :func:`costmodel.pipeline.svg.timeline_svg`. Raises
    :class:`~costmodel.errors.SpecError` for an invalid request, as the estimate does."""
    req: EstimateRequest = parse(EstimateRequest, request)
    sim = pipeline_simulation(req)
    plan = req.plan
    parts = [req.model.name, plan.schedule, f"pp={plan.pp}"]
    if plan.virtual_stages > 1:
        parts.append(f"v={plan.virtual_stages}")
    parts += [f"{num_microbatches(req.training, plan)} micro-batches",
              f"tp={plan.tp} dp={plan.dp}"]
    if plan.cp > 1:
        parts.append(f"cp={plan.cp}")
    return render_timeline(sim, title=" · ".join(parts))
