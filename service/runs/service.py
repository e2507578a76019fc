"""Storing a run beside its plan, with measured against predicted."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from costmodel.runs import RunReport
from service.auth.service import Principal
from service.db.models import Plan, Run
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
              predicted_source=source, relative_error=error)
    session.add(run)
    session.flush()
    session.refresh(run)
    return run


def to_dict(run: Run) -> dict[str, Any]:
    """:func:`to_out` as plain data, the stored report as it was validated on the way in."""
    return {"id": str(run.id), "plan_id": str(run.plan_id), "created": run.created_at,
            "measured_step_time_s": run.measured_step_time_s,
            "predicted_step_time_s": run.predicted_step_time_s,
            "predicted_source": run.predicted_source, "relative_error": run.relative_error,
            "report": run.report}


def to_out(run: Run) -> RunOut:
    return RunOut(id=str(run.id), plan_id=str(run.plan_id), created=run.created_at,
                  measured_step_time_s=run.measured_step_time_s,
                  predicted_step_time_s=run.predicted_step_time_s,
                  predicted_source=run.predicted_source,
                  relative_error=run.relative_error,
                  report=RunReport.model_validate(run.report))
