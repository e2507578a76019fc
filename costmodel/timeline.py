"""The simulated pipeline timeline of one plan: as SVG (``GET /v1/plans/{id}/timeline.svg``,
windowed when large) and as an interactive HTML page (``GET /v1/plans/{id}/timeline.html``)."""

from __future__ import annotations

from typing import Any

from costmodel.estimate import pipeline_simulation
from costmodel.pipeline.html import timeline_html as render_html
from costmodel.pipeline.svg import timeline_svg as render_timeline
from costmodel.specs.request import EstimateRequest, num_microbatches, parse

__all__ = ["timeline_html", "timeline_svg", "timeline_title"]


def timeline_title(req: EstimateRequest) -> str:
    """``llama3-8b · 1F1B · pp=16 · 256 micro-batches · tp=1 dp=1``: what the drawings say
    the plan is."""
    plan = req.plan
    parts = [req.model.name, plan.schedule, f"pp={plan.pp}"]
    if plan.virtual_stages > 1:
        parts.append(f"v={plan.virtual_stages}")
    parts += [f"{num_microbatches(req.training, plan)} micro-batches",
              f"tp={plan.tp} dp={plan.dp}"]
    if plan.cp > 1:
        parts.append(f"cp={plan.cp}")
    return " · ".join(parts)


def timeline_svg(request: EstimateRequest | dict[str, Any]) -> str:
    """The pipeline timeline of an estimate request (the ``POST /v1/estimates`` body, a dict or
    :class:`~costmodel.specs.request.EstimateRequest`) as a standalone SVG document: the plan's
    stage times are evaluated and its schedule simulated exactly as :func:`costmodel.estimate`
    does (:func:`costmodel.estimate.pipeline_simulation`), then drawn by
    :func:`costmodel.pipeline.svg.timeline_svg` (windowed above
    :data:`~costmodel.pipeline.svg.MAX_ACTIONS` actions). Raises
    :class:`~costmodel.errors.SpecError` for an invalid request, as the estimate does."""
    req: EstimateRequest = parse(EstimateRequest, request)
    return render_timeline(pipeline_simulation(req), title=timeline_title(req))


def timeline_html(request: EstimateRequest | dict[str, Any]) -> str:
    """The same simulation as :func:`timeline_svg`, as the self-contained interactive page of
    :func:`costmodel.pipeline.html.timeline_html` (every action and transfer; zoom, pan,
    hover)."""
    req: EstimateRequest = parse(EstimateRequest, request)
    return render_html(pipeline_simulation(req), title=timeline_title(req))
