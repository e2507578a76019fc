"""Readiness checks: what must load before the service can answer estimates."""

from __future__ import annotations

import logging

from costmodel.profile import default_profile
from costmodel.specs.gpus import catalog

logger = logging.getLogger("meshplan.service")


def _catalog() -> None:
    if not catalog():
        raise RuntimeError("the GPU catalog is empty")


def _profile() -> None:
    default_profile()


CHECKS = {"gpu_catalog": _catalog, "default_profile": _profile}


def readiness() -> dict[str, str]:
    """``{check: "ok" | "failed"}`` for each check; failures are logged with their cause."""
    out: dict[str, str] = {}
    for name, check in CHECKS.items():
        try:
            check()
            out[name] = "ok"
        except Exception:
            logger.exception("readiness check %s failed", name)
            out[name] = "failed"
    return out
