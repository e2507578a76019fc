"""Synthesized pipeline schedules for the search's finalists (``schedule: "custom"``).

The named torch schedules are built for equal stages. A finalist whose stages are unequal
(the vocabulary layers on the end stages, an uneven layer split, a pipeline mixing GPU types)
gets a schedule synthesized by CP-SAT (:mod:`solver.schedule_synthesis`) from the estimate's
own per-stage times (``Estimate.pipeline``: ``stage_forward_s``, ``stage_backward_input_s``,
``stage_backward_weight_s``, ``p2p_s``) and an in-flight limit per rank that keeps the plan
within its memory limit; the search keeps it when the full estimate of the plan with the
custom schedule improves the objective and still fits.

**In-flight limit.** The estimate's activation memory of a rank grows linearly with its peak
in-flight ``(stage, micro-batch)`` pairs, by ``StageMemory.inflight_gib_per_microbatch`` each
(:meth:`costmodel.estimate._Evaluation._memory`). A rank whose plan uses ``total_gib`` of its
limit ``min(usable_gib, capacity_gib · max_memory_fraction)`` — the two tests the search applies
to every plan — may therefore hold ``⌊headroom / per-micro-batch⌋`` more than it does now.

**When.** Only for pipelines (pp > 1) whose per-stage times are not all equal, when custom
schedules are allowed (``constraints.schedules`` null or listing ``"custom"``), and when the
plan's simulated makespan exceeds the one-machine floor (the busiest rank's work after its
first input arrives, a bound no order can beat) by at least :data:`MIN_POTENTIAL` of the step
time: below that there is nothing worth the solver's time to win.
"""

from __future__ import annotations

import math
import time

from costmodel.pipeline.schedules import format_schedule
from costmodel.results import Estimate
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.request import plan_stage_ranks
from solver.request import SearchRequest
from solver.schedule_synthesis import SynthesisProblem, SynthesisResult, synthesize_schedule

MIN_POTENTIAL = 0.01
"""Skip a finalist whose makespan is within this fraction of its step time of the one-machine
floor. The cost model's step times are validated to a mean absolute error of up to 10% against
measured runs (``tests/costmodel/test_validation.py``); a schedule that could move the
prediction by less than 1% is not a difference it resolves."""
MAX_ACTIONS = 6_144
"""Largest schedule (stages × micro-batches × 3 actions) synthesized in the search: 32 stages
with 64 micro-batches, or 4 with 512. Measured on this project's 2-core machine for 32 stages
× 64 micro-batches: the CP-SAT model builds in ~0.4 s and one greedy tie rule runs in ~0.6 s;
both grow linearly, and neither is bounded by CP-SAT's time limit, so larger schedules would
overrun the search's share of time."""
SYNTHESIS_SHARE = 0.2
"""Share of the request's ``time_limit_s`` that schedule synthesis may take in total."""
DETERMINISTIC_TIME = 0.1
"""CP-SAT work limit per finalist in its deterministic time units (single-threaded, so the
answer is reproducible for a given request and seed, whatever the machine's load). Measured on
the three finalists of ``benchmarks/solver_speed.py`` (a) (pp=4, V placement, 8 micro-batches):
0.03 and 0.05 units gain 0.3-2.3% step time, 0.1 gains 2.0-2.3% in ~0.1 s of wall time each,
0.2 gains no more; less when CP-SAT reaches the floor and proves optimality sooner."""


def allowed(req: SearchRequest) -> bool:
    """Whether the request lets the search use custom schedules."""
    scheds = req.constraints.schedules
    return scheds is None or "custom" in scheds


def inflight_limits(req: SearchRequest, est: Estimate) -> tuple[int, ...]:
    """Per pipeline rank, the most in-flight ``(stage, micro-batch)`` pairs that keep the plan
    within the search's memory limits (see the module docstring)."""
    frac = req.constraints.max_memory_fraction
    out = []
    for sm in est.memory.per_stage:
        cap = min(sm.usable_gib, sm.capacity_gib * frac)
        head = max(0.0, cap - sm.total_gib)
        per = sm.inflight_gib_per_microbatch
        most = len(sm.stages) * est.pipeline.num_microbatches
        extra = most if per <= 0 else math.floor(head / per * (1 - 1e-9))
        out.append(int(min(most, sm.inflight_microbatches + extra)))
    return tuple(out)


def floor_makespan(problem: SynthesisProblem) -> float:
    """The one-machine floor: no order finishes before some rank's first input can arrive
    plus all of that rank's work (seconds)."""
    n = problem.n_stages
    head = [0.0] * n
    sr = problem.stage_ranks
    for s in range(1, n):
        lat = problem.p2p[s - 1] if sr[s - 1] != sr[s] else 0.0
        head[s] = head[s - 1] + problem.t_f[s - 1] + lat
    best = 0.0
    m = problem.n_microbatches
    for r in range(problem.n_ranks):
        mine = [s for s in range(n) if sr[s] == r]
        work = m * sum(problem.t_f[s] + problem.t_i[s] + problem.t_w[s] for s in mine)
        best = max(best, min(head[s] for s in mine) + work)
    return best


def synthesis_problem(req: SearchRequest, plan: ParallelPlan, est: Estimate
                      ) -> SynthesisProblem | None:
    """The synthesis problem of a finalist, or ``None`` when it does not qualify (see the
    module docstring)."""
    if plan.pp < 2 or plan.schedule == "custom" or not allowed(req):
        return None
    pl = est.pipeline
    totals = [f + i + w for f, i, w in zip(pl.stage_forward_s, pl.stage_backward_input_s,
                                           pl.stage_backward_weight_s, strict=True)]
    if max(totals) - min(totals) <= 1e-9 * max(totals):
        return None  # equal stages: what the named schedules are built for
    if len(totals) * pl.num_microbatches * 3 > MAX_ACTIONS:
        return None
    problem = SynthesisProblem(
        t_f=tuple(pl.stage_forward_s), t_i=tuple(pl.stage_backward_input_s),
        t_w=tuple(pl.stage_backward_weight_s), p2p=tuple(pl.p2p_s),
        stage_ranks=tuple(plan_stage_ranks(plan)), n_microbatches=pl.num_microbatches,
        max_inflight=inflight_limits(req, est), split_backward=True)
    if pl.makespan_s - floor_makespan(problem) < MIN_POTENTIAL * est.step_time_s:
        return None
    return problem


def synthesize_for(req: SearchRequest, plan: ParallelPlan, est: Estimate, budget_s: float,
                   seed: int) -> tuple[ParallelPlan, SynthesisResult] | None:
    """``plan`` with a synthesized custom schedule (not yet estimated), or ``None`` when it
    does not qualify or nothing faster than its named schedule was found."""
    problem = synthesis_problem(req, plan, est)
    if problem is None or budget_s <= 0:
        return None
    result = synthesize_schedule(problem, time_limit_s=budget_s, seed=seed, num_workers=1,
                                 deterministic_time=DETERMINISTIC_TIME)
    if result.actions is None or result.source == "named" or result.step_time is None:
        return None
    if result.step_time >= est.pipeline.makespan_s:
        return None
    custom = plan.model_copy(update={"schedule": "custom",
                                     "custom_schedule": format_schedule(result.actions)})
    return custom, result


def note(old: Estimate, new: Estimate, result: SynthesisResult) -> str:
    """The explanation line of a synthesized schedule."""
    gap = f", gap {result.gap:.1%}" if result.gap is not None else ""
    limit = "/".join(str(x) for x in result.limits)
    return (f"custom schedule synthesized for the unequal stages: bubble "
            f"{old.pipeline.bubble_fraction:.1%} → {new.pipeline.bubble_fraction:.1%}, "
            f"step {old.step_time_s:.3f} s → {new.step_time_s:.3f} s (CP-SAT "
            f"{result.status}{gap}; in-flight limit per rank {limit}; it replaces "
            f"{old.plan.schedule})")


def deadline_for_synthesis(req: SearchRequest, deadline: float) -> float:
    """When synthesis must stop: its share of the time limit from now, within the deadline."""
    return min(deadline, time.perf_counter() + SYNTHESIS_SHARE * req.time_limit_s)
