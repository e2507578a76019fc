"""``POST /v1/calibrations``, ``GET /v1/calibrations[?gpu=]``, ``GET /v1/calibrations/{id}``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.auth.dependencies import PrincipalDep
from service.calibrations import service
from service.calibrations.schemas import CalibrationBodyDep, CalibrationOut, CalibrationSummary
from service.deps import ReadSessionDep, SessionDep
from service.errors import NOT_FOUND, PROBLEM_RESPONSES

router = APIRouter(prefix="/calibrations", tags=["calibrations"])


@router.post("", status_code=201, summary="Store a calibration profile",
             responses=PROBLEM_RESPONSES)
def create_calibration(body: CalibrationBodyDep, session: SessionDep,
                       principal: PrincipalDep) -> CalibrationSummary:
    """Store a measured profile (what `meshplan-runtime calibrate` writes) for the GPU type in
    `gpu` or `provenance.gpu`. Estimates and searches then use it with `calibration_id`."""
    return service.summary(service.create(session, body, principal))


@router.get("", summary="List calibration profiles", responses=PROBLEM_RESPONSES)
def list_calibrations(
    session: ReadSessionDep, principal: PrincipalDep,
    gpu: Annotated[str | None, Query(description="Only profiles for this GPU (an alias is "
                                                 "fine).", max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[CalibrationSummary]:
    """Newest first."""
    return [service.summary(r)
            for r in service.list_calibrations(session, gpu, limit, offset)]


@router.get("/{calibration_id}", summary="One calibration profile", responses=NOT_FOUND)
def get_calibration(calibration_id: str, session: ReadSessionDep,
                    principal: PrincipalDep) -> CalibrationOut:
    return service.detail(service.get(session, calibration_id))
