"""``GET /healthz`` (liveness), ``GET /readyz`` (readiness), ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from service.deps import MetricsDep
from service.errors import Problem
from service.health import service
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


@router.get("/readyz", summary="Readiness: the GPU catalog and the default profile load",
            responses={503: {"model": Problem, "description": "A check failed."}})
def readyz() -> Readiness:
    checks = service.readiness()
    failed = sorted(name for name, state in checks.items() if state != "ok")
    if failed:
        raise HTTPException(503, f"not ready: {', '.join(failed)} failed")
    return Readiness(checks=checks)


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse,
            responses={200: {"content": {CONTENT_TYPE: {}}}})
def metrics(metrics: MetricsDep) -> PlainTextResponse:
    return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)
