"""Straggler sensitivity of the search's plans, and ``constraints.max_straggler_sensitivity``.

A plan's straggler sensitivity is :func:`costmodel.what_if.straggler_sensitivity`: the
step-time increase, as a fraction of its step, when one GPU computes 10 % slower at the
pipeline rank where that hurts most (its tensor-, context- and data-parallel groups wait for
it; the schedule is simulated again, so a pipeline's bubbles absorb part of a slow stage).
It takes ``pp + 1`` simulations of the plan, so the search computes it only where it is
needed: for the plans it returns (their explanation) and, with the constraint, for the plans
that would enter the results (the same place as the memory, budget and framework checks,
:func:`solver.search._meets`). A search caches it per plan (:func:`measuring`).

The constraint only removes plans from the results: the branch and bound's bounds on the
objective stay valid (it keeps simulating candidates until the k-th plan *that meets every
constraint* beats the next bound), so a result is still certified optimal among the plans
that meet it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from costmodel.errors import SpecError
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.request import EstimateRequest
from costmodel.what_if import STRAGGLER_FACTOR, StragglerSensitivity, straggler_sensitivity
from solver.request import SearchRequest

__all__ = ["Tally", "measuring", "meets_sensitivity", "sensitivity", "tally"]


@dataclass
class Tally:
    """What one search measured: the sensitivity of every plan it asked about, and the plans
    the constraint excluded (for the explanation when nothing is left)."""

    cache: dict[str, StragglerSensitivity | None] = field(default_factory=dict)
    excluded: set[str] = field(default_factory=set)
    """The plans (as JSON) the constraint excluded."""
    least: tuple[float, ParallelPlan] | None = None
    """The least sensitive excluded plan and its increase fraction."""


_TALLY: ContextVar[Tally | None] = ContextVar("meshplan_straggler_tally", default=None)


@contextmanager
def measuring() -> Iterator[Tally]:
    """Cache sensitivities and count exclusions for the search run inside the block."""
    t = Tally()
    token = _TALLY.set(t)
    try:
        yield t
    finally:
        _TALLY.reset(token)


def tally() -> Tally | None:
    """The running search's tally (None outside :func:`measuring`)."""
    return _TALLY.get()


def sensitivity(req: SearchRequest, plan: ParallelPlan) -> StragglerSensitivity | None:
    """``plan``'s straggler sensitivity under ``req``'s model, training, cluster and
    calibration; None when the what-if cannot simulate it."""
    t = _TALLY.get()
    key = plan.model_dump_json()
    if t is not None and key in t.cache:
        return t.cache[key]
    est_req = EstimateRequest.model_construct(  # already validated parts: no second parse
        model=req.model, training=req.training, cluster=req.cluster, plan=plan,
        calibration=req.calibration)
    try:
        got: StragglerSensitivity | None = straggler_sensitivity(est_req)
    except SpecError:
        got = None
    if t is not None:
        t.cache[key] = got
    return got


def is_measured(plan: ParallelPlan) -> bool:
    """Whether the running search has ``plan``'s sensitivity already (no cost to report)."""
    t = _TALLY.get()
    return t is not None and plan.model_dump_json() in t.cache


def meets_sensitivity(req: SearchRequest, plan: ParallelPlan) -> bool:
    """Whether ``plan`` meets ``constraints.max_straggler_sensitivity`` (always without one;
    a plan the what-if cannot simulate does not)."""
    limit = req.constraints.max_straggler_sensitivity
    if limit is None:
        return True
    s = sensitivity(req, plan)
    ok = s is not None and s.increase_fraction <= limit
    t = _TALLY.get()
    if not ok and t is not None and s is not None:
        t.excluded.add(plan.model_dump_json())
        if t.least is None or s.increase_fraction < t.least[0]:
            t.least = (s.increase_fraction, plan)
    return ok


def describe_sensitivity(s: StragglerSensitivity) -> str:
    """One line for an explanation."""
    return (f"one GPU {100 * (s.factor - 1):.0f} % slower (pipeline rank {s.worst_stage}) adds "
            f"{s.increase_s:.3f} s ({100 * s.increase_fraction:.1f} %) to the step")


def infeasible_reason(req: SearchRequest, t: Tally, timed_out: bool) -> str:
    """Why no plan is left when the sensitivity constraint excluded some."""
    from solver.explain import describe

    limit = req.constraints.max_straggler_sensitivity
    assert limit is not None
    where = ("every plan simulated before the time limit that fits and meets the other "
             "constraints" if timed_out else
             "every plan that fits and meets the other constraints")
    least = ""
    if t.least is not None:
        least = (f"; the least sensitive, {describe(t.least[1])}, adds "
                 f"{100 * t.least[0]:.1f} % to its step")
    return (f"constraints.max_straggler_sensitivity {limit:g}: {where} ({len(t.excluded)} "
            f"excluded) loses more than {100 * limit:g} % of its step time when one GPU is "
            f"{100 * (STRAGGLER_FACTOR - 1):.0f} % slower{least}")
