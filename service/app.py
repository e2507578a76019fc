"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service import __version__, docs, errors
from service.api import router as api_router
from service.db import migrate
from service.db.engine import Database
from service.estimates.heavy import HeavyEstimates
from service.health import service as health
from service.health.endpoints import router as health_router
from service.metrics import Metrics, MetricsMiddleware
from service.middleware import BodySizeLimitMiddleware
from service.settings import Settings, get_settings

logger = logging.getLogger("meshplan.service")

DESCRIPTION = """\
meshplan plans how to lay out LLM training jobs over GPUs. `POST /v1/estimates` predicts how
one layout will run — step time, throughput, MFU, memory per pipeline rank and cost — from the
model, the job, the GPU inventory and a parallel plan; `POST /v1/searches` finds the best
layouts (a durable job: 202 with its id, then poll it or pass `?wait=S`), whose plans are
stored (`GET /v1/plans/{id}`) with the runs that measured them. Errors are RFC 9457
`application/problem+json`; input errors list every broken rule as `{field, rule}` in
`errors`. With `MESHPLAN_AUTH=1` every `/v1` endpoint needs an API key (Authorize).
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    db: Database = app.state.db
    # The embedded SQLite database is migrated on start (zero setup); PostgreSQL is not.
    try:
        migrate.upgrade_if_embedded(db)
    except Exception:
        logger.exception("could not migrate the embedded database %s", db.safe_url())
    # Load the catalog and the default profile once before the first request (they are
    # cached); a failure leaves the app up and /readyz reporting it.
    checks = health.readiness(db)
    if any(state != "ok" for state in checks.values()):
        logger.warning("starting while not ready: %s", checks)
    yield
    app.state.heavy_estimates.shutdown()
    if app.state.owns_db:
        db.dispose()


def create_app(settings: Settings | None = None, *, db: Database | None = None) -> FastAPI:
    """A new app with its own settings (from the environment when not given), metrics and
    database (``db``, or one opened from the settings)."""
    settings = settings or get_settings()
    app = FastAPI(
        title="meshplan", version=__version__, description=DESCRIPTION,
        docs_url=None, redoc_url=None, lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.owns_db = db is None
    app.state.db = db or Database(settings.effective_database_url)
    app.state.heavy_estimates = HeavyEstimates(
        threshold_cells=settings.heavy_estimate_cells,
        processes=settings.heavy_estimate_processes, queue=settings.heavy_estimate_queue)

    errors.install(app)
    app.include_router(api_router)
    app.include_router(health_router)
    docs.install(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = errors.problem_openapi(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    # Added last = outermost: metrics see every response, 413s included.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics,
                       templates=lambda: [*app.openapi()["paths"], *docs.ROUTE_TEMPLATES])
    return app
