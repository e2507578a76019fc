"""Which GPUs slowed a measured run, and by how much: straggler attribution by what-if.

The method of Lin et al., "Understanding Stragglers in Large Model Training Using What-if
Analysis" (2025): give the simulator the run's measured per-GPU compute times, then the same
job with every GPU at the typical (median) speed; the ratio of the two simulated steps is the
slowdown attributable to stragglers, and the measured step divided by it is the step the run
would have had without them. A GPU is responsible in the measure that restoring it alone to
the typical speed shortens the simulated step.
"""

from __future__ import annotations

import statistics
from typing import Any

from pydantic import BaseModel, Field

from costmodel.errors import FieldProblem, SpecError
from costmodel.specs.request import EstimateRequest, parse
from costmodel.specs.scenario import Scenario
from costmodel.what_if import what_if

__all__ = ["ResponsibleRank", "StragglerAttribution", "attribute_stragglers"]

_FIELD = "measured.rank_compute_s"
_TOP = 8
"""Ranks whose individual contribution is simulated (the slowest ones)."""


class ResponsibleRank(BaseModel):
    rank: int = Field(description="Global rank (the what-if scenario's numbering).")
    factor: float = Field(description="Its measured compute time over the median.")
    contribution_s: float = Field(description="Simulated step seconds saved by restoring this "
                                              "rank alone to the median speed.")


class StragglerAttribution(BaseModel):
    """What stragglers cost a measured run (``measured.rank_compute_s`` given)."""

    measured_step_time_s: float
    without_stragglers_step_time_s: float = Field(
        description="The measured step scaled by the simulated ratio of the step with every "
        "GPU at the median speed to the step with the measured speeds.")
    slowdown: float = Field(description="measured / without-stragglers step − 1.")
    responsible: list[ResponsibleRank] = Field(
        description="Ranks whose restoration shortens the step, largest contribution first.")
    method: str = ("what-if (Lin et al. 2025): the plan's schedule simulated with the measured "
                   "per-GPU compute times against all at their median")


def attribute_stragglers(request: EstimateRequest | dict[str, Any], rank_compute_s: list[float],
                         measured_step_time_s: float) -> StragglerAttribution:
    """Attribution for the plan of ``request`` from per-GPU compute seconds per step (index =
    global rank); SpecError naming ``measured.rank_compute_s`` when they do not fit the plan."""
    req = parse(EstimateRequest, request)
    expected = req.plan.num_gpus
    if len(rank_compute_s) != expected:
        raise SpecError(FieldProblem(_FIELD, f"has {len(rank_compute_s)} entries; the plan has "
                                             f"{expected} GPUs (one per global rank)"))
    if any(not t > 0 for t in rank_compute_s):
        raise SpecError(FieldProblem(_FIELD, "every entry must be > 0 seconds"))
    typical = statistics.median(rank_compute_s)
    factors = {r: t / typical for r, t in enumerate(rank_compute_s) if t > typical}
    slow = what_if(req, Scenario(ranks=factors), sensitivity=False)
    ratio = slow.step_time_s / slow.baseline_step_time_s
    responsible: list[ResponsibleRank] = []
    for rank in sorted(factors, key=lambda r: -factors[r])[:_TOP]:
        rest = {r: f for r, f in factors.items() if r != rank}
        without = what_if(req, Scenario(ranks=rest), sensitivity=False).step_time_s
        saved = slow.step_time_s - without
        if saved > 1e-12 * slow.step_time_s:
            responsible.append(ResponsibleRank(rank=rank, factor=factors[rank],
                                               contribution_s=saved))
    responsible.sort(key=lambda r: -r.contribution_s)
    return StragglerAttribution(
        measured_step_time_s=measured_step_time_s,
        without_stragglers_step_time_s=measured_step_time_s / ratio, slowdown=ratio - 1,
        responsible=responsible)
