"""Launch configs for a plan: what starts it on the frameworks people use.

``render(fmt, request)`` validates the request exactly as an estimate does (an invalid plan
raises the cost model's :class:`~costmodel.errors.SpecError`), then applies the framework's own
rules and either returns a :class:`LaunchConfig` (the file or command to use as is, extra files,
notes on what the user must supply) or raises :class:`LaunchError` naming the plan field and
the framework rule that it cannot express. Pure: no torch, no service code.

Formats: ``torchrun`` (the meshplan runtime worker under torchrun), ``torchtitan``,
``megatron``, ``deepspeed``, ``runtime`` (the worker's plan JSON), ``schedule-csv``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from costmodel.specs.request import EstimateRequest
from runtime.launch.base import Job, LaunchConfig, LaunchError, Refusals, prepare
from runtime.launch.deepspeed import render_deepspeed
from runtime.launch.fsdp import refuse_fsdp
from runtime.launch.megatron import render_megatron
from runtime.launch.torchtitan import render_torchtitan
from runtime.launch.worker_plan import (
    PLAN_FORMAT,
    render_runtime,
    render_schedule_csv,
    render_torchrun,
)

FORMATS = ("torchrun", "torchtitan", "megatron", "deepspeed", "runtime", "schedule-csv")

_EMITTERS: dict[str, Callable[[Job], LaunchConfig]] = {
    "torchrun": render_torchrun,
    "torchtitan": render_torchtitan,
    "megatron": render_megatron,
    "deepspeed": render_deepspeed,
    "runtime": render_runtime,
    "schedule-csv": render_schedule_csv,
}


def render(fmt: str, request: EstimateRequest | dict[str, Any]) -> LaunchConfig:
    """The launch config of ``request``'s plan in format ``fmt`` (one of :data:`FORMATS`).

    Raises :class:`LaunchError` (field ``format``) for an unknown format,
    :class:`~costmodel.errors.SpecError` for an invalid request and :class:`LaunchError` for a
    plan the framework cannot express."""
    emitter = _EMITTERS.get(fmt)
    if emitter is None:
        raise LaunchError("format", f"unknown launch format {fmt!r}; formats: "
                          f"{', '.join(FORMATS)}")
    return emitter(prepare(request))


FRAMEWORK_FORMATS: dict[str, str] = {"megatron": "megatron", "torchtitan": "torchtitan",
                                     "deepspeed": "deepspeed", "fsdp": "torchrun"}
"""The launch format of each ``training.framework``."""


def refusals(framework: str, request: EstimateRequest | dict[str, Any]) -> list[str]:
    """The rules of ``framework`` that ``request``'s plan breaks, as ``field: rule`` lines
    (empty: its emitter renders it). The check ``constraints.framework`` uses in a search."""
    try:
        job = prepare(request)
        if framework == "fsdp":
            r = Refusals()
            refuse_fsdp(job, r)
            r.raise_if_any()
        _EMITTERS[FRAMEWORK_FORMATS[framework]](job)
    except LaunchError as exc:
        return [str(p) for p in exc.problems]
    return []


__all__ = ["FORMATS", "FRAMEWORK_FORMATS", "PLAN_FORMAT", "LaunchConfig", "LaunchError",
           "refusals", "render"]
