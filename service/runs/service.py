"""Storing a run beside its plan, with measured against predicted."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from costmodel.attribution import StragglerAttribution, attribute_stragglers
from costmodel.errors import FieldProblem, SpecError
from costmodel.runs import RunReport
from costmodel.specs.request import EstimateRequest
from service.auth.service import Principal
from service.db.models import Plan, Run
from service.estimates.service import COMPUTE_GATE
from service.runs.schemas import RunBody, RunOut
from service.validation import require_finite


def create(session: Session, plan: Plan, body: RunBody, principal: Principal) -> Run:
    report = RunReport.model_validate(body.model_dump())
    data = report.model_dump(mode="json")
    require_finite(data)
    measured = report.measured.step_time_s
    predicted: float | None = None
    source: str | None = None
    if report.predicted is not None:
        predicted, source = report.predicted.step_time_s, "report"
    elif not report.model_overrides:
        predicted, source = float(plan.estimate["step_time_s"]), "plan"
    error = None if predicted is None else (predicted - measured) / measured
    run = Run(plan_id=plan.id, owner_id=principal.key_id, report=data,
              measured_step_time_s=measured, predicted_step_time_s=predicted,
              predicted_source=source, relative_error=error,
              stragglers=_stragglers(plan, report))
    session.add(run)
    session.flush()
    session.refresh(run)
    return run


def _stragglers(plan: Plan, report: RunReport) -> dict[str, Any] | None:
    """The what-if straggler attribution of a run that carries per-rank compute times."""
    times = report.measured.rank_compute_s
    if times is None:
        return None
    if report.model_overrides:
        raise SpecError(FieldProblem(
            "measured.rank_compute_s", "straggler attribution simulates the plan as stored; "
            "this run scaled its model down (model_overrides), so its per-rank times do not "
            "belong to that plan"))
    req = EstimateRequest.model_validate(plan.request)
    with COMPUTE_GATE:  # simulations, like an estimate's
        found = attribute_stragglers(req, times, report.measured.step_time_s)
    return found.model_dump(mode="json")


def to_dict(run: Run) -> dict[str, Any]:
    """:func:`to_out` as plain data, the stored report as it was validated on the way in."""
    return {"id": str(run.id), "plan_id": str(run.plan_id), "created": run.created_at,
            "measured_step_time_s": run.measured_step_time_s,
            "predicted_step_time_s": run.predicted_step_time_s,
            "predicted_source": run.predicted_source, "relative_error": run.relative_error,
            "stragglers": run.stragglers, "report": run.report}


def to_out(run: Run) -> RunOut:
    return RunOut(id=str(run.id), plan_id=str(run.plan_id), created=run.created_at,
                  measured_step_time_s=run.measured_step_time_s,
                  predicted_step_time_s=run.predicted_step_time_s,
                  predicted_source=run.predicted_source,
                  relative_error=run.relative_error,
                  stragglers=(StragglerAttribution.model_validate(run.stragglers)
                              if run.stragglers is not None else None),
                  report=RunReport.model_validate(run.report))
