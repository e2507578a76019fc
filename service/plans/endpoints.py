"""``GET /v1/plans/{id}``, ``POST`` and ``GET /v1/plans/{id}/runs``.

``GET /v1/plans/{id}/launch/{format}`` and ``GET /v1/plans/{id}/timeline.svg`` belong here
too; they take :func:`service.plans.service.estimate_request`.
"""

from __future__ import annotations

from fastapi import APIRouter

from service.auth.dependencies import PrincipalDep
from service.deps import SessionDep
from service.errors import NOT_FOUND, PROBLEM_RESPONSES
from service.plans import service
from service.plans.schemas import PlanOut
from service.runs import service as runs
from service.runs.schemas import RunBodyDep, RunOut

router = APIRouter(prefix="/plans", tags=["plans"])


@router.get("/{plan_id}", summary="A stored plan with its estimate, explanation and runs",
            responses=NOT_FOUND)
def get_plan(plan_id: str, session: SessionDep, principal: PrincipalDep) -> PlanOut:
    """The plan, its estimate and explanation, the estimate request that reproduces it, the
    cost-model version that made it, and the measured runs against the prediction."""
    return service.to_out(service.get(session, plan_id, principal, with_runs=True))


@router.post("/{plan_id}/runs", status_code=201, summary="Report a measured run of a plan",
             responses={**NOT_FOUND, **PROBLEM_RESPONSES})
def create_run(plan_id: str, body: RunBodyDep, session: SessionDep,
               principal: PrincipalDep) -> RunOut:
    """Store what `meshplan-runtime run` measured for this plan; the answer and
    `GET /v1/plans/{id}` show it against the prediction (relative error of the step time)."""
    plan = service.get(session, plan_id, principal)
    return runs.to_out(runs.create(session, plan, body, principal))


@router.get("/{plan_id}/runs", summary="The measured runs of a plan", responses=NOT_FOUND)
def list_runs(plan_id: str, session: SessionDep, principal: PrincipalDep) -> list[RunOut]:
    plan = service.get(session, plan_id, principal, with_runs=True)
    return [runs.to_out(r) for r in plan.runs]
