"""``POST /v1/estimates``: predict one plan's step time, throughput, memory and cost."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.auth.dependencies import PrincipalDep
from service.deps import DatabaseDep, SettingsDep
from service.errors import PROBLEM_RESPONSES
from service.estimates import service
from service.estimates.schemas import Estimate, EstimateBody

router = APIRouter(prefix="/estimates", tags=["estimates"])


@router.post("", summary="Estimate one plan", response_model=Estimate,
             responses=PROBLEM_RESPONSES)
def create_estimate(body: EstimateBody, request: Request, settings: SettingsDep,
                    db: DatabaseDep, principal: PrincipalDep) -> Estimate:
    """Step time with its breakdown, tokens/s, MFU, memory per pipeline rank and cost of the
    plan in `plan`, for the model, training job and cluster given.

    Invalid input, including plans that break a cross-field rule (heads divisible by `tp`,
    batch divisible by `dp` × `micro_batch_size`, enough GPUs in the pool, ...), answers 422
    with every broken rule in `errors`. A plan that does not fit in memory is not an error:
    `fits` is false and `memory.per_stage` shows where. `calibration_id` selects a stored
    calibration profile (`GET /v1/calibrations?gpu=...`).
    """
    # A def endpoint: FastAPI runs it in its threadpool, since the estimate is CPU-bound.
    return service.create_estimate(body, settings, db, request.app.state.heavy_estimates)
