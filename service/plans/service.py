"""Reading stored plans; the estimate request behind one (for launch configs and timelines)."""

from __future__ import annotations

import uuid
from typing import Literal

import pydantic_core
from pydantic import ValidationError
from sqlalchemy.orm import Session

import costmodel
from costmodel import pictures
from costmodel.errors import FieldProblem, SpecError
from costmodel.specs.request import EstimateRequest, num_microbatches
from costmodel.specs.scenario import Scenario
from costmodel.what_if import WhatIfResult
from service.auth.service import Principal
from service.db.models import Plan
from service.exceptions import Conflict, NotFound
from service.plans import repository
from service.plans.schemas import PlanOut, RunsSummary
from service.runs import service as runs
from service.settings import Settings


def get(session: Session, plan_id: str, principal: Principal, *, with_runs: bool = False
        ) -> Plan:
    """The plan, if it exists and ``principal`` may see it; :class:`NotFound` otherwise."""
    try:
        ident = uuid.UUID(plan_id)
    except ValueError:
        ident = None
    plan = repository.get(session, ident, principal, with_runs=with_runs) if ident else None
    if plan is None:
        raise NotFound(f"no plan with id {plan_id!r}")
    return plan


def estimate_request(session: Session, plan_id: str, principal: Principal) -> EstimateRequest:
    """The validated ``{model, training, cluster, plan[, calibration]}`` that reproduces the
    stored plan's estimate: what launch-config emitters and the timeline renderer take. The
    cost model's own request type (not the API body), since the emitters write it out.

    A plan stored by a cost model whose request no longer validates under this one is a
    :class:`Conflict` (409) that says so, not a server error."""
    plan = get(session, plan_id, principal)
    try:
        return EstimateRequest.model_validate(plan.request)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise Conflict(f"plan {plan_id} was stored by cost model {plan.cost_model_version} and "
                       f"its request does not validate under this version "
                       f"({problems}); run its search again") from None


def what_if(req: EstimateRequest, scenario: Scenario, settings: Settings) -> WhatIfResult:
    """:func:`costmodel.what_if` on a stored plan's request, under this server's admission
    limit and compute gate (those of estimates): the jittered steps simulate the schedule once
    each, so ``jitter.steps`` × pp·virtual_stages × micro-batches must stay within
    ``MESHPLAN_MAX_SCHEDULE_CELLS``."""
    from service.estimates.service import COMPUTE_GATE

    if scenario.jitter is not None:
        cells = req.plan.num_stages * num_microbatches(req.training, req.plan)
        steps = scenario.jitter.steps
        if steps * cells > settings.max_schedule_cells:
            raise SpecError(FieldProblem(
                "jitter.steps", f"{steps} steps of a {cells}-cell pipeline schedule are "
                f"{steps * cells} cells to simulate, over this server's limit of "
                f"{settings.max_schedule_cells} (MESHPLAN_MAX_SCHEDULE_CELLS); ask for fewer "
                "steps"))
    with COMPUTE_GATE:  # one CPU-bound evaluation at a time per process, in arrival order
        return costmodel.what_if(req, scenario)


def what_if_timeline(req: EstimateRequest, scenario: Scenario, fmt: Literal["svg", "html"]
                     ) -> str:
    """:func:`costmodel.pictures.what_if_timeline` under the compute gate of what-ifs (the
    scenario's jitter is not simulated: the timeline is one step as scheduled)."""
    from service.estimates.service import COMPUTE_GATE

    with COMPUTE_GATE:
        return pictures.what_if_timeline(req, scenario, fmt)


def goodput_svg(req: EstimateRequest, plan_id: str) -> str:
    """Goodput against the checkpoint interval of a stored plan; a plan searched without
    ``training.reliability`` has no failure model to draw (:class:`Conflict`)."""
    if req.training.reliability is None:
        raise Conflict(f"plan {plan_id} was searched without training.reliability, so it has "
                       "no failure model to draw; search again with training.reliability")
    return pictures.goodput_svg(req)


def _summary(plan: Plan) -> RunsSummary:
    errors = [r.relative_error for r in plan.runs if r.relative_error is not None]
    return RunsSummary(
        count=len(plan.runs),
        mean_relative_error=sum(errors) / len(errors) if errors else None,
        mean_abs_relative_error=sum(map(abs, errors)) / len(errors) if errors else None)


def to_json(plan: Plan) -> bytes:
    """``to_out(plan).model_dump_json()`` without validating the stored JSON again.

    The plan, estimate, explanation, request and run reports were validated when they were
    stored (by the solver's and the API's models); the hot read path only wraps them. A test
    holds this equal to :func:`to_out`'s serialisation."""
    return pydantic_core.to_json({
        "id": str(plan.id), "search_id": str(plan.search_id), "rank": plan.rank,
        "objective": plan.objective, "objective_value": plan.objective_value,
        "plan": plan.plan, "estimate": plan.estimate, "explanation": plan.explanation,
        "request": plan.request,
        "calibration_id": str(plan.calibration_id) if plan.calibration_id else None,
        "cost_model_version": plan.cost_model_version, "created": plan.created_at,
        "runs": [runs.to_dict(r) for r in plan.runs],
        "runs_summary": _summary(plan).model_dump(),
    })


def to_out(plan: Plan) -> PlanOut:
    summary = _summary(plan)
    return PlanOut(
        id=str(plan.id), search_id=str(plan.search_id), rank=plan.rank,
        objective=plan.objective, objective_value=plan.objective_value,
        plan=plan.plan, estimate=plan.estimate,
        explanation=plan.explanation,
        request=plan.request,
        calibration_id=str(plan.calibration_id) if plan.calibration_id else None,
        cost_model_version=plan.cost_model_version, created=plan.created_at,
        runs=[runs.to_out(r) for r in plan.runs], runs_summary=summary)
