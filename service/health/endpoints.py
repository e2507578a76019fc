"""``GET /healthz`` (liveness), ``GET /readyz`` (readiness), ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from service.deps import DatabaseDep, MetricsDep
from service.errors import Problem
from service.health import service
from service.jobs import metrics as job_metrics
from service.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str]


@router.get("/healthz", summary="Liveness")
def healthz() -> Health:
    return Health()


@router.get("/readyz", summary="Readiness: catalog and default profile load, database "
            "answers, migrations applied",
            responses={503: {"model": Problem, "description": "A check failed."}})
def readyz(db: DatabaseDep) -> Readiness:
    checks = service.readiness(db)
    failed = sorted(name for name, state in checks.items() if state != "ok")
    if failed:
        raise HTTPException(503, "not ready: " + ", ".join(
            f"{name} {checks[name]}" for name in failed))
    return Readiness(checks=checks)


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse,
            responses={200: {"content": {CONTENT_TYPE: {}}}})
def metrics(metrics: MetricsDep, db: DatabaseDep) -> PlainTextResponse:
    """HTTP requests of this process, and the search queue (from the database, so the same on
    every replica)."""
    return PlainTextResponse(metrics.render() + job_metrics.render(db), media_type=CONTENT_TYPE)
