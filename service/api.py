"""The versioned API: every resource router under ``/v1``."""

from __future__ import annotations

from fastapi import APIRouter

from service.catalog.endpoints import router as catalog_router
from service.estimates.endpoints import router as estimates_router

router = APIRouter(prefix="/v1")
router.include_router(estimates_router)
router.include_router(catalog_router)
