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

import dataclasses
from collections.abc import Callable
from typing import Any

from costmodel.specs.request import EstimateRequest
from runtime.launch.base import Job, LaunchConfig, LaunchError, Refusals, prepare
from runtime.launch.deepspeed import render_deepspeed
from runtime.launch.fsdp import refuse_fsdp
from runtime.launch.megatron import render_megatron
from runtime.launch.torchtitan import render_torchtitan
from runtime.launch.torchtitan_versions import TORCHTITAN_RELEASES, torchtitan_release
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


VERSIONED_FORMATS: dict[str, str] = {"torchtitan": "torchtitan", "megatron": "megatron",
                                     "deepspeed": "deepspeed"}
"""Formats written for one framework's release (``version`` / ``training.framework_version``),
by the ``training.framework`` they belong to. Only torchtitan's emitter writes per release
(:data:`~runtime.launch.torchtitan_versions.TORCHTITAN_RELEASES`); Megatron-LM's and
DeepSpeed's take any release (see their module docstrings: the flags they emit are those of
the current release)."""

SUPPORTED_VERSIONS: dict[str, tuple[str, ...]] = {"torchtitan": tuple(TORCHTITAN_RELEASES)}
"""The releases each per-release emitter knows (the first is the current one)."""


def render(fmt: str, request: EstimateRequest | dict[str, Any],
           version: str | None = None) -> LaunchConfig:
    """The launch config of ``request``'s plan in format ``fmt`` (one of :data:`FORMATS`).

    ``version`` is the framework release to write for (the API's ``?version=``, the CLI's
    ``--framework-version``); without it, ``training.framework_version`` when
    ``training.framework`` is the format's framework, else the current release.

    Raises :class:`LaunchError` (field ``format``) for an unknown format, (field
    ``training.framework_version``) for a release the emitter does not know,
    :class:`~costmodel.errors.SpecError` for an invalid request and :class:`LaunchError` for a
    plan the framework cannot express."""
    emitter = _EMITTERS.get(fmt)
    if emitter is None:
        raise LaunchError("format", f"unknown launch format {fmt!r}; formats: "
                          f"{', '.join(FORMATS)}")
    framework = VERSIONED_FORMATS.get(fmt)
    if version is not None and framework is None:
        raise LaunchError("training.framework_version",
                          f"format {fmt!r} is meshplan's own and has no framework releases; "
                          f"a version applies to {', '.join(VERSIONED_FORMATS)}")
    if version is not None and fmt == "torchtitan":
        torchtitan_release(version)  # refuse an unknown release before validating the request
    job = prepare(request)
    if version is None and framework is not None and job.training.framework == framework:
        version = job.training.framework_version
    return emitter(dataclasses.replace(job, version=version))


FRAMEWORK_FORMATS: dict[str, str] = {"megatron": "megatron", "torchtitan": "torchtitan",
                                     "deepspeed": "deepspeed", "fsdp": "torchrun"}
"""The launch format of each ``training.framework``."""


def refusals(framework: str, request: EstimateRequest | dict[str, Any]) -> list[str]:
    """The rules of ``framework`` that ``request``'s plan breaks, as ``field: rule`` lines
    (empty: its emitter renders it). The check ``constraints.framework`` uses in a search."""
    try:
        job = prepare(request)
        if job.training.framework == framework:
            job = dataclasses.replace(job, version=job.training.framework_version)
        if framework == "fsdp":
            r = Refusals()
            refuse_fsdp(job, r)
            r.raise_if_any()
        _EMITTERS[FRAMEWORK_FORMATS[framework]](job)
    except LaunchError as exc:
        return [str(p) for p in exc.problems]
    return []


__all__ = ["FORMATS", "FRAMEWORK_FORMATS", "PLAN_FORMAT", "SUPPORTED_VERSIONS",
           "VERSIONED_FORMATS", "LaunchConfig", "LaunchError", "refusals", "render"]
