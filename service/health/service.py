"""Readiness checks: what must work before the service can answer.

The GPU catalog and the default profile load; the database answers; its schema is at the
revision this code expects (pending migrations → not ready: run ``meshplan db upgrade``).
"""

from __future__ import annotations

import logging

from costmodel.profile import default_profile
from costmodel.specs.gpus import catalog
from service.db import migrate
from service.db.engine import Database

logger = logging.getLogger("meshplan.service")


def _catalog() -> None:
    if not catalog():
        raise RuntimeError("the GPU catalog is empty")


def _profile() -> None:
    default_profile()


CHECKS = {"gpu_catalog": _catalog, "default_profile": _profile}


def readiness(db: Database | None = None) -> dict[str, str]:
    """``{check: "ok" | "failed" | ...}``; failures are logged with their cause. With ``db``:
    ``database`` (ok | failed) and ``migrations`` (ok | pending | failed)."""
    out: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check()
            out[name] = "ok"
        except Exception:
            logger.exception("readiness check %s failed", name)
            out[name] = "failed"
    if db is not None:
        try:
            db.ping()
            out["database"] = "ok"
        except Exception as exc:
            logger.error("readiness check database failed: %s", exc)
            out["database"] = "failed"
            out["migrations"] = "failed"
            return out
        try:
            current, expected = migrate.current(db), migrate.head()
            out["migrations"] = "ok" if current == expected else "pending"
            if current != expected:
                logger.warning("database at revision %s, code expects %s: run `meshplan db "
                               "upgrade`", current, expected)
        except Exception:
            logger.exception("readiness check migrations failed")
            out["migrations"] = "failed"
    return out
