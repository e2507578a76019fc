"""The versioned API: every resource router under ``/v1``, behind the API-key check (which
lets everything through unless ``MESHPLAN_AUTH`` is on)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from service.auth.dependencies import get_principal
from service.calibrations.endpoints import router as calibrations_router
from service.catalog.endpoints import router as catalog_router
from service.errors import Problem
from service.estimates.endpoints import router as estimates_router
from service.plans.endpoints import router as plans_router
from service.searches.endpoints import router as searches_router

router = APIRouter(
    prefix="/v1", dependencies=[Depends(get_principal)],
    responses={401: {"model": Problem, "description": "Missing or invalid API key (only when "
                     "the server runs with MESHPLAN_AUTH=1)."}})
router.include_router(estimates_router)
router.include_router(searches_router)
router.include_router(plans_router)
router.include_router(calibrations_router)
router.include_router(catalog_router)
