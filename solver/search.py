"""Plan search: exhaustive bulk enumeration, branch and bound with the exact estimate, CP-SAT
layer partitioning of the finalists, Pareto front and explanations.

1. Every pool the constraints allow is enumerated (:mod:`solver.space`) and evaluated in bulk
   (:func:`costmodel.bulk.evaluate_bulk`); plans that break a rule, do not fit under
   ``max_memory_fraction`` or exceed the GPU or budget limits are dropped.
2. Each remaining plan has a proven lower bound on its step time with the even layer split
   (:attr:`costmodel.bulk.BulkResult.lower_bound_even_s`: valid for every schedule order),
   hence an optimistic objective. Plans are simulated with the full
   estimate in order of that bound; the search stops when the next bound cannot beat the k-th
   best simulated plan — then the top k are optimal in the enumerated space under the cost
   model — or at the time limit, with the best bound left and the gap.
3. The finalists' layer partitions are re-balanced with CP-SAT (:mod:`solver.partition`),
   keeping the result when the simulated estimate improves.
4. Finalists with unequal stages get a pipeline schedule synthesized with CP-SAT for their
   own stage times and memory headroom (:mod:`solver.custom_schedule`), kept when the
   estimate improves and the plan still fits.

Deterministic for a given request and seed: candidates are ordered by (bound, index) and
CP-SAT runs single-threaded with the seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from costmodel import interrupt
from costmodel.bulk import BulkResult, Candidates
from costmodel.errors import SpecError
from costmodel.estimate import evaluate, step_time
from costmodel.goodput import (
    goodput_fraction,
    gpu_failures_per_hour,
    plan_nodes,
    preemptions_per_hour,
    time_to_train_s,
)
from costmodel.results import Estimate
from costmodel.specs.cluster import GPUPool
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.request import parse
from solver.best_first import BestFirst
from solver.budget import ENUMERATION_SHARE, PoolBudget
from solver.custom_schedule import deadline_for_synthesis, note, synthesize_for
from solver.explain import explain_plans, infeasibility
from solver.launchable import LaunchCheck, checking, launchable
from solver.mixed import mixed_candidates
from solver.partition import PartitionProblem, solve_partition
from solver.placement import PlacementProblem, solve_placement
from solver.request import SearchRequest
from solver.results import (
    OBJECTIVE_UNITS,
    Optimality,
    ParetoPoint,
    PlanVariant,
    PoolBest,
    RankedPlan,
    SearchResult,
    SearchStats,
    SkippedPool,
    objective_days,
)
from solver.robustness import infeasible_reason, measuring, meets_sensitivity, tally
from solver.space import enumerate_pool, partial_recompute_candidates

# The CP-SAT stages (custom_schedule, mixed, partition, placement) are imported with the search,
# not inside its first call: OR-Tools' import, pandas included, takes a quarter of a second,
# which a worker now pays once at start.

BOUND_SAFETY = 1.0 - 1e-9
"""Shave float round-off off the lower bounds so that they stay below the estimate."""
FINISH_RESERVE_S = 1.0
"""Time kept back from ``time_limit_s`` (at most 10 % of it) for the phases after the branch
and bound and the refinements, whose work grows with the candidates, not the time left."""
PARETO_MAX = 12
"""Pareto points re-evaluated with the full estimate (the rest of the front is not listed)."""
PROGRESS_EVERY = 16
"""Simulated plans between two progress reports of the branch and bound."""


@dataclass(frozen=True)
class SearchProgress:
    """Where a running search is, for ``search(progress=...)`` (a job runner shows it).

    ``best`` and ``bound`` are in the objective's public units (tokens/s for throughput, $ per
    million tokens for cost, ...): the best plan simulated so far and the optimistic bound of
    the next plan to simulate; the search is proven optimal when they meet."""

    phase: str  # "enumerating" | "simulating" | "refining"
    candidates: int
    fitting: int
    simulated: int
    best: float | None
    bound: float | None
    elapsed_s: float


class SearchCancelled(Exception):
    """``search(should_stop=...)`` returned True: the search stopped without a result."""


@dataclass
class _PoolSpace:
    pool: GPUPool
    cands: Candidates
    bulk: BulkResult
    ok: np.ndarray
    """Indices of plans that are valid, fit and meet the constraints."""


def _objective(name: str, tps: np.ndarray, cost_per_hour: np.ndarray,
               train_tokens: int | None, share: np.ndarray | float = 1.0) -> np.ndarray:
    """Objective values, all to MINIMISE (throughput is negated). ``share`` is the plans'
    goodput (:func:`_goodput_share`): time and cost to train count the wall time lost to
    checkpoints, restarts and lost work; throughput and cost per token are steady state."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "throughput":
            return -tps
        if name == "cost":
            return cost_per_hour / 3600.0 / tps * 1e6  # $ per million tokens
        assert train_tokens is not None
        seconds = time_to_train_s(train_tokens, tps, share)
        if name == "time_to_train":
            return np.asarray(seconds)
        return np.asarray(seconds / 3600.0 * cost_per_hour)  # cost_to_train in $


def _goodput_share(req: SearchRequest, pool: GPUPool, num_gpus: np.ndarray, pp: np.ndarray,
                   step_time_s: np.ndarray) -> np.ndarray | float:
    """Goodput of single-pool plans (arrays of GPUs, pp and step time) for the to-train
    objectives with ``training.reliability``; 1 otherwise. The estimate's own model
    (:func:`costmodel.goodput.goodput_fraction`, with the nodes, NICs and preemptions of the
    pool exactly as :func:`costmodel.estimate.evaluate` passes them), so a simulated plan's
    value here equals its estimate's ``goodput.time_to_train_s`` / ``cost_to_train``.

    The share is non-increasing in the step time, so at a lower bound on the step it is an
    upper bound on the plan's goodput, and an optimistic value computed with both (the
    throughput's upper bound, goodput's upper bound ≤ 1) stays a valid bound: goodput only
    ever makes time and cost to train larger."""
    rel = req.training.reliability
    if rel is None or req.objective not in ("time_to_train", "cost_to_train"):
        return 1.0
    used = [(pool, num_gpus)]
    return goodput_fraction(
        req.model, req.training, rel, num_gpus=num_gpus, nodes=plan_nodes(used), pp=pp,
        nic_GBps_per_node=pool.nic_GBps * pool.gpus_per_node, step_time_s=step_time_s,
        preemptions_per_hour=preemptions_per_hour(used),
        failures_per_hour=gpu_failures_per_hour(rel, used))


def _public_value(name: str, v: float) -> float:
    return -v if name == "throughput" else v


def search(request: SearchRequest | dict[str, Any], *,
           progress: Callable[[SearchProgress], None] | None = None,
           should_stop: Callable[[], bool] | None = None,
           launchable: LaunchCheck | None = None,
           memory_cap_bytes: int | None = None) -> SearchResult:
    """Find the best plans (the ``POST /v1/searches`` body, as a dict or the model).

    ``progress`` is called with a :class:`SearchProgress` at each phase and every
    :data:`PROGRESS_EVERY` simulated plans; ``should_stop`` is polled where the time limit is
    checked (each pool, each simulated plan, each finalist) and makes the search raise
    :class:`SearchCancelled` when it returns True (cooperative cancellation for job runners).
    ``launchable`` decides which plans ``constraints.framework`` can run
    (:mod:`solver.launchable`); a search with a framework constraint needs it.
    ``memory_cap_bytes`` caps the candidate arrays the search keeps (:mod:`solver.budget`;
    None = no cap).
    """
    req = parse(SearchRequest, request)
    # the check also reaches the long computations inside one step (a pipeline simulation,
    # a CP-SAT solve), so that a cancel is seen within milliseconds wherever the search is
    with checking(launchable), measuring(), interrupt.interruptible(should_stop):
        try:
            if req.training.global_batch_sizes:
                from solver.batch_sizes import search_sizes

                return search_sizes(req, lambda sub: _search(sub, progress, should_stop,
                                                             memory_cap_bytes))
            return _search(req, progress, should_stop, memory_cap_bytes)
        except interrupt.Interrupted as exc:
            if exc.reason != "stop":
                raise
            raise SearchCancelled("the search was asked to stop") from exc


@dataclass(frozen=True)
class _Clock:
    """The search's time shares, all from one start: enumeration may use
    :data:`~solver.budget.ENUMERATION_SHARE` of ``time_limit_s``; the branch and bound and the
    refinements stop at ``deadline``, :data:`FINISH_RESERVE_S` (at most 10 %) before the
    limit, so that what follows them (Pareto front, best per pool, explanations), whose work
    grows with the candidates, still ends by ``end``."""

    t0: float
    limit_s: float

    @property
    def enumeration_end(self) -> float:
        return self.t0 + ENUMERATION_SHARE * self.limit_s

    @property
    def deadline(self) -> float:
        return self.t0 + self.limit_s - min(FINISH_RESERVE_S, 0.1 * self.limit_s)

    @property
    def end(self) -> float:
        return self.t0 + self.limit_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


class Finalist(NamedTuple):
    """A plan the search keeps: its objective value (internal sign: lower is better), its
    position in the optimistic order (ties go to the earlier; mixed-pool plans come after
    every pool's), the plan and its full estimate."""

    value: float
    order: int
    plan: ParallelPlan
    estimate: Estimate


@dataclass
class _Enumerated:
    """Stage 1's output: each pool's candidates with their bulk costs, the pools that gave
    none (with why) or were skipped for the time or memory budget, and the counts."""

    spaces: list[_PoolSpace]
    empty: list[tuple[GPUPool, str]]
    skipped: list[SkippedPool]
    budget: PoolBudget
    candidates: int = 0
    valid: int = 0
    fitting: int = 0


def _search(req: SearchRequest, progress: Callable[[SearchProgress], None] | None,
            should_stop: Callable[[], bool] | None,
            memory_cap_bytes: int | None = None) -> SearchResult:
    """The stages: enumerate and bulk-evaluate each pool, order every fitting plan by its
    optimistic objective, branch and bound over simulated step times for the k best distinct
    layouts, refine the finalists (CP-SAT layer split, vocabulary placement, node placement),
    add mixed-pool pipelines and synthesized schedules, then certify and assemble."""
    clock = _Clock(time.perf_counter(), req.time_limit_s)
    found = _Enumerated([], [], [], PoolBudget(clock.enumeration_end, memory_cap_bytes))

    def report(phase: str, simulated: int = 0, best: float | None = None,
               bound: float | None = None) -> None:
        if should_stop is not None and should_stop():
            raise SearchCancelled("the search was asked to stop")
        if progress is not None:
            progress(SearchProgress(
                phase=phase, candidates=found.candidates, fitting=found.fitting,
                simulated=simulated,
                best=None if best is None else _public_value(req.objective, best),
                bound=None if bound is None else _public_value(req.objective, bound),
                elapsed_s=clock.elapsed()))

    _enumerate(req, found, report)
    value_of = _value_function(req)
    if found.fitting == 0:
        return _without_fitting_plans(req, found, clock, value_of)
    optimistic, which, cand, order = _optimistic_order(req, found.spaces)
    memo: dict[tuple[object, ...], Any] = {}  # per-block costs shared by this search's plans
    bb = _BranchAndBound(req, found.spaces, optimistic, which, cand, memo, clock.deadline)
    bb.run(order, req.top_k, report)
    refined, partitions, placements = _refine(req, bb, clock.deadline, value_of, report)
    refined += _mixed(req, [f.plan for f in refined] or _seed_plans(found.spaces),
                      clock.deadline, value_of)
    refined = _distinct_best(refined, req.top_k)
    refined, notes, synthesized = _synthesize(req, refined, clock.deadline, value_of)
    timed_out = bb.timed_out or found.budget.ran_out_of_time
    optimality = _certificate(req, refined, bb.stop_bound, timed_out, bool(found.skipped))

    plans = _ranked_plans(req, refined, found.spaces, clock, notes, bb.variants)
    pareto = _pareto(req, found.spaces, clock.deadline, [(f.plan, f.estimate) for f in refined])
    per_pool = (_best_per_pool(req, found.spaces, bb, order, refined, clock.deadline)
                if len(found.spaces) > 1 else [])
    infeasible = None if plans else _no_plan_reason(req, found.spaces, found.empty, timed_out)
    return SearchResult(
        plans=plans, pareto=pareto, optimality=optimality, infeasible_reason=infeasible,
        best_per_pool=per_pool,
        stats=SearchStats(candidates=found.candidates, valid=found.valid,
                          fitting=found.fitting, simulated=bb.simulated,
                          skipped_pools=found.skipped, partitions_solved=partitions,
                          placements_solved=placements, schedules_synthesized=synthesized,
                          elapsed_s=clock.elapsed(), timed_out=timed_out))


def _enumerate(req: SearchRequest, found: _Enumerated, report: Callable[..., None]) -> None:
    """Stage 1: each pool's candidates and their bulk costs within the enumeration budget
    (:mod:`solver.budget`), and which of them are valid, fit and meet the constraints."""
    cons = req.constraints
    budget = found.budget
    for pool in (p for p in req.cluster.pools if not cons.pools or p.name in cons.pools):
        report("enumerating")
        if req.training.precision not in pool.gpu_type.peak_tflops:
            found.empty.append((pool, f"{pool.gpu} has no {req.training.precision} tensor "
                                      "cores"))
            continue
        if found.spaces and budget.over_time():
            found.skipped.append(SkippedPool(pool=pool.name, reason=budget.skip_for_time()))
            found.empty.append((pool, f"not searched: {found.skipped[-1].reason}"))
            continue
        got = budget.evaluate(req.model, req.training, pool,
                              lambda pool=pool: enumerate_pool(req.model, req.training, pool,  # type: ignore[misc]
                                                               cons),
                              req.calibration, lambda: report("enumerating"),
                              lambda c, b, pool=pool: partial_recompute_candidates(  # type: ignore[misc]
                                  req.model, c, b.fits & (b.peak_bytes <= _memory_cap(pool, req)),
                                  cons))
        if isinstance(got, str):
            found.skipped.append(SkippedPool(pool=pool.name, reason=got))
            found.empty.append((pool, f"not searched: {got}"))
            continue
        cands, bulk = got  # the valid candidates only
        if len(cands) == 0:
            limit = min(pool.num_gpus, cons.max_gpus or pool.num_gpus)
            found.empty.append((pool, f"no combination of degrees satisfies the parallelism "
                                      f"rules with fixed {cons.fixed or 'nothing'} on at most "
                                      f"{limit} GPUs"))
            continue
        fit = bulk.fits & (bulk.peak_bytes <= _memory_cap(pool, req))
        if cons.max_cost_per_hour is not None:
            fit &= bulk.cost_per_hour <= cons.max_cost_per_hour
        found.candidates += budget.enumerated_for(pool)
        found.valid += int(bulk.valid.sum())
        found.fitting += int(fit.sum())
        found.spaces.append(_PoolSpace(pool, cands, bulk, np.flatnonzero(fit)))


def _value_function(req: SearchRequest) -> Callable[[Estimate], float]:
    """The objective of one estimated plan (internal sign: lower is better); time and cost to
    train take the estimate's own goodput figure, failures and checkpoints included."""
    objective = req.objective

    def value_of(est: Estimate) -> float:
        g = est.goodput if objective in ("time_to_train", "cost_to_train") else None
        if g is not None:
            v = g.time_to_train_s if objective == "time_to_train" else g.cost_to_train
            return math.inf if v is None else v
        return float(_objective(objective, np.asarray(est.tokens_per_s),
                                np.asarray(est.cost_per_hour), req.training.train_tokens))

    return value_of


def _without_fitting_plans(req: SearchRequest, found: _Enumerated, clock: _Clock,
                           value_of: Callable[[Estimate], float]) -> SearchResult:
    """No single pool fits the job: pipelines across pools if some fit (no certificate),
    else an infeasible result that says why."""
    stats = SearchStats(candidates=found.candidates, valid=found.valid, fitting=0,
                        simulated=0, partitions_solved=0, skipped_pools=found.skipped,
                        elapsed_s=clock.elapsed(), timed_out=False)
    mixed = sorted(_mixed(req, _seed_plans(found.spaces), clock.deadline, value_of),
                   key=lambda f: (f.value, f.order))[:req.top_k]
    if mixed:
        return _result(req, mixed, found.spaces, "feasible", None, clock, stats)
    return SearchResult(
        plans=[], pareto=[], optimality=Optimality(status="infeasible", objective=req.objective),
        infeasible_reason=infeasibility(req, spaces_summary(found.spaces, req), found.empty),
        stats=stats)


def _optimistic_order(req: SearchRequest, spaces: list[_PoolSpace]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, BestFirst]:
    """Stage 2: every fitting plan's optimistic objective (its step time's lower bound, and
    goodput at that bound), across pools: (values, pool index, candidate index, the order
    that reads them best first, ties in candidate order)."""
    objective = req.objective
    opt_vals, sp_idx, c_idx = [], [], []
    for k, sp in enumerate(spaces):
        b = sp.bulk
        step_lb = b.lower_bound_even_s[sp.ok] * BOUND_SAFETY
        tps_ub = req.training.tokens_per_step / step_lb
        c = sp.cands
        # goodput at the step's lower bound is an upper bound on the plan's (_goodput_share)
        share_ub = _goodput_share(req, sp.pool, (c.tp * c.pp * c.dp * c.cp)[sp.ok],
                                  c.pp[sp.ok], step_lb)
        opt_vals.append(_objective(objective, tps_ub, b.cost_per_hour[sp.ok],
                                   req.training.train_tokens, share_ub))
        sp_idx.append(np.full(len(sp.ok), k))
        c_idx.append(sp.ok)
    optimistic = np.concatenate(opt_vals)
    return (optimistic, np.concatenate(sp_idx), np.concatenate(c_idx),
            BestFirst(optimistic))


def _refine(req: SearchRequest, bb: _BranchAndBound, deadline: float,
            value_of: Callable[[Estimate], float], report: Callable[..., None]
            ) -> tuple[list[Finalist], int, int]:
    """Stage 4: each of the branch and bound's finalists with a CP-SAT layer re-partition,
    vocabulary parallelism and, with a measured node matrix, node placement, each kept when
    the estimate improves. Returns the finalists and the partitions and placements solved."""
    partitions = placements = 0
    refined: list[Finalist] = []
    for f in bb.top:
        report("refining", bb.simulated, bb.top[0].value, bb.stop_bound)
        plan, est, val = f.plan, f.estimate, value_of(f.estimate)
        if plan.pp > 1 and time.perf_counter() < deadline:
            partitions += 1
            better = _repartition(req, plan, est, deadline, req.seed)
            if better is not None and value_of(better[1]) < val:
                plan, est = better
                val = value_of(est)
        if plan.pp > 1 and time.perf_counter() < deadline:
            # vocabulary parallelism (Yeung et al. 2024): split the embedding and LM head over
            # every pipeline rank instead of the end stages; kept when the estimate improves
            split = _variant(req, plan, vocab_placement="split")
            if split is not None and value_of(split[1]) < val:
                plan, est = split
                val = value_of(est)
        if (plan.pp > 1 and req.cluster.node_bandwidth_Gbps is not None
                and time.perf_counter() < deadline):
            placements += 1
            placed = _place(req, plan, deadline, req.seed)
            if placed is not None and value_of(placed[1]) < val:
                plan, est = placed
                val = value_of(est)
        refined.append(Finalist(val, f.order, plan, est))
    return refined, partitions, placements


def _distinct_best(found: list[Finalist], k: int) -> list[Finalist]:
    """The ``k`` best of ``found`` with pairwise distinct layouts (:func:`layout_key`)."""
    out: list[Finalist] = []
    seen: set[tuple[object, ...]] = set()
    for f in sorted(found, key=lambda f: (f.value, f.order)):
        key = layout_key(f.plan)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out[:k]


def _certificate(req: SearchRequest, refined: list[Finalist], stop_bound: float | None,
                 timed_out: bool, skipped: bool) -> Optimality:
    """Stage 6: optimal when the branch and bound ran to its end over every pool; else the
    bound it reached and the gap. The bound covers the even-split space; a CP-SAT
    re-partition may beat it (gap 0 then). A skipped pool is outside the bound: the best
    plan is then only feasible, with no bound claimed."""
    objective = req.objective
    best = refined[0].value if refined else math.inf
    if stop_bound is None:  # every fitting plan was simulated
        stop_bound = best
    status = ("optimal" if not timed_out and not skipped and refined
              else "feasible" if refined else "infeasible")
    bound = min(best, stop_bound)
    gap = abs(best - bound) / abs(bound) if refined and bound not in (0.0, math.inf) else None
    return Optimality(
        status=status, objective=objective,
        value=_public_value(objective, best) if refined else None,
        bound=_public_value(objective, bound) if refined and not skipped else None,
        gap=None if skipped else (gap if status != "optimal" else 0.0))


def _memory_cap(pool: GPUPool, req: SearchRequest) -> float:
    """Bytes a plan's predicted peak may use on ``pool`` (``constraints.max_memory_fraction``
    of the GPU's memory)."""
    return pool.gpu_type.memory_bytes * req.constraints.max_memory_fraction


def _no_plan_reason(req: SearchRequest, spaces: list[_PoolSpace],
                    empty: list[tuple[GPUPool, str]], timed_out: bool) -> str:
    """Why a search that had fitting plans returns none: the straggler-sensitivity
    constraint when it excluded plans, else the memory / rules explanation."""
    t = tally()
    if t is not None and t.excluded:
        return infeasible_reason(req, t, timed_out)
    return infeasibility(req, spaces_summary(spaces, req), empty)


def layout_key(plan: ParallelPlan) -> tuple[object, ...]:
    """What makes two plans different layouts: the pool (GPU type), the degrees, the
    micro-batch size and the recompute mode. Plans that differ only in schedule, virtual
    stages, ZeRO stage, sequence parallelism, layer split or how many layers per stage a full
    recompute covers (``recompute_num_layers``) are variants of one layout: the best is
    returned, the others are listed in its ``variants`` (partial recompute of N layers would
    otherwise fill the top k with copies of one layout at N = ¼, ½ and ¾ of a stage)."""
    return (plan.pool, plan.tp, plan.pp, plan.dp, plan.cp, plan.ep, plan.micro_batch_size,
            plan.recompute)


MAX_VARIANTS = 8
"""Variants kept per layout (the best ones)."""


class _BranchAndBound:
    """Branch and bound over the simulated step time: the k best distinct layouts (each with
    the best of its simulated variants), every candidate whose optimistic bound could beat the
    k-th layout simulated."""

    def __init__(self, req: SearchRequest, spaces: list[_PoolSpace], optimistic: np.ndarray,
                 which: np.ndarray, cand: np.ndarray, memo: dict[tuple[object, ...], Any],
                 deadline: float) -> None:
        self.req, self.spaces, self.optimistic = req, spaces, optimistic
        self.which, self.cand, self.memo, self.deadline = which, cand, memo, deadline
        self.top: list[Finalist] = []
        self.variants: dict[tuple[object, ...], list[tuple[float, ParallelPlan, float]]] = {}
        """Per layout: (objective, plan, step s) of the simulated plans that lost to its best."""
        self.simulated = 0
        self.timed_out = False
        self.stop_bound: float | None = None

    def value(self, pos: int, step: float) -> float:
        sp = self.spaces[int(self.which[pos])]
        i = int(self.cand[pos])
        req = self.req
        c = sp.cands
        share = _goodput_share(req, sp.pool, np.asarray(c.tp[i] * c.pp[i] * c.dp[i] * c.cp[i]),
                               np.asarray(c.pp[i]), np.asarray(step))
        return float(_objective(req.objective, np.asarray(req.training.tokens_per_step / step),
                                np.asarray(sp.bulk.cost_per_hour[i]),
                                req.training.train_tokens, share))

    def _variant(self, key: tuple[object, ...], val: float, plan: ParallelPlan,
                 step: float) -> None:
        vs = self.variants.setdefault(key, [])
        vs.append((val, plan, step))
        vs.sort(key=lambda t: t[0])
        del vs[MAX_VARIANTS:]

    def run(self, order: Iterable[int], k: int,
            report: Callable[..., None] | None = None) -> list[Finalist]:
        """The k best layouts among the positions ``order`` (best first); also records them in
        ``self.top`` when called for the whole space."""
        top: list[Finalist] = []
        steps: dict[tuple[object, ...], float] = {}
        req = self.req
        for pos in order:
            bound = float(self.optimistic[pos])
            if report is not None and self.simulated % PROGRESS_EVERY == 0:
                report("simulating", self.simulated, top[0].value if top else None, bound)
            if len(top) >= k and bound >= top[k - 1].value:
                self.stop_bound = bound if report is not None else self.stop_bound
                break
            # past the deadline with nothing yet: stop too when the (costly) sensitivity
            # constraint is what has excluded the plans so far
            t = tally()
            if time.perf_counter() > self.deadline and (top or (t is not None and t.excluded)):
                if report is not None:
                    self.timed_out = True
                    self.stop_bound = bound
                break
            sp = self.spaces[int(self.which[pos])]
            plan = sp.cands.plan(int(self.cand[pos]), pool=sp.pool.name)
            if not launchable(req, plan):
                # neither returned nor listed as a variant of a returned layout: both are
                # offered to launch (the check is the emitter's, cheaper than a simulation)
                continue
            try:  # with plans in hand, one long simulation does not run past the deadline
                with interrupt.until(self.deadline) if top else nullcontext():
                    step = _step_time(req, plan, self.memo)
            except interrupt.Interrupted as exc:
                if exc.reason != "deadline":
                    raise
                if report is not None:
                    self.timed_out = True
                    self.stop_bound = bound
                break
            self.simulated += 1
            if step is None:
                continue
            val = self.value(int(pos), step)
            key = layout_key(plan)
            mine = next((j for j, f in enumerate(top) if layout_key(f.plan) == key), None)
            if mine is not None and val >= top[mine].value:
                self._variant(key, val, plan, step)  # a variant of a kept layout
                continue
            if mine is None and len(top) >= k and val >= top[k - 1].value:
                continue
            # entering: confirm with the full estimate (memory per rank, cost)
            est = _estimate(req, plan)
            if est is None or not _meets(est, sp.pool, req):
                continue
            if mine is not None:  # a better variant of a kept layout takes its place
                old = top.pop(mine)
                self._variant(key, old.value, old.plan, steps.get(key, math.nan))
            top.append(Finalist(val, int(pos), plan, est))
            steps[key] = step
            top.sort(key=lambda f: (f.value, f.order))
            del top[k:]
        if report is not None:
            self.top = top
        return top


def _public_variants(objective: str, found: list[tuple[float, ParallelPlan, float]],
                     best: ParallelPlan) -> list[PlanVariant]:
    """The simulated variants of a returned plan's layout, best first (the returned plan
    itself, whose schedule or split the refinements may have changed, left out)."""
    return [PlanVariant(plan=p, objective_value=_public_value(objective, v),
                        step_time_s=st, schedule=p.schedule, virtual_stages=p.virtual_stages,
                        zero_stage=p.zero_stage, sequence_parallel=p.sequence_parallel,
                        recompute_num_layers=p.recompute_num_layers)
            for v, p, st in found if p != best]


def _best_per_pool(req: SearchRequest, spaces: list[_PoolSpace], bb: _BranchAndBound,
                   order: BestFirst, refined: list[Finalist],
                   deadline: float) -> list[PoolBest]:
    """The best plan of every pool that can run the job: from the result where a pool's plan
    is in it, else a branch and bound over that pool's candidates alone (k = 1)."""
    out: list[PoolBest] = []
    winner = refined[0] if refined else None
    by_pool: list[np.ndarray] | None = None
    for k, sp in enumerate(spaces):
        mine = [f for f in refined if f.plan.pool == sp.pool.name]
        if mine:
            val, plan, est = mine[0].value, mine[0].plan, mine[0].estimate
        else:
            if time.perf_counter() > deadline:
                continue  # past the limit: only the pools the result already has
            if by_pool is None:  # each pool's positions, in the global order
                whole = order.array()
                grouped = whole[np.argsort(bb.which[whole], kind="stable")]
                counts = np.bincount(bb.which, minlength=len(spaces))
                by_pool = np.split(grouped, np.cumsum(counts)[:-1])
            sub = by_pool[k]
            found = bb.run(sub, 1)
            if not found:
                continue
            val, plan, est = found[0].value, found[0].plan, found[0].estimate
        rel = ""
        if winner is not None and mine and mine[0] is winner:
            rel = "the winner"
        elif winner is not None:
            w = winner.estimate
            rel = f"{est.tokens_per_s / w.tokens_per_s:.0%} of the winner's tokens/s"
            if w.cost_per_million_tokens > 0:
                rel += (f" at {est.cost_per_million_tokens / w.cost_per_million_tokens:.0%} of "
                        "its $ per M tokens")
            elif est.cost_per_million_tokens > 0:
                rel += (f" at ${est.cost_per_million_tokens:.3g} per M tokens (the winner's "
                        "pool has no price)")
        out.append(PoolBest(pool=sp.pool.name, gpu=sp.pool.gpu, plan=plan,
                            objective_value=_public_value(req.objective, val),
                            objective_unit=OBJECTIVE_UNITS[req.objective],
                            tokens_per_s=est.tokens_per_s,
                            cost_per_million_tokens=est.cost_per_million_tokens,
                            vs_winner=rel))
    return out


def _ranked_plans(req: SearchRequest, found: list[Finalist], spaces: list[_PoolSpace],
                  clock: _Clock, notes: dict[int, list[str]] | None = None,
                  variants: dict[tuple[object, ...], list[tuple[float, ParallelPlan, float]]]
                  | None = None) -> list[RankedPlan]:
    """The returned plans, best first: objective in public units, explanation (with the
    synthesis ``notes`` by order position) and the simulated ``variants`` of each layout."""
    objective = req.objective
    ranked = explain_plans(req, [(f.value, f.plan, f.estimate) for f in found],
                           spaces_caps(spaces, req), clock.end)
    out = []
    for i, (f, x) in enumerate(zip(found, ranked, strict=True)):
        x.notes.extend((notes or {}).get(f.order, []))
        value = _public_value(objective, f.value)
        out.append(RankedPlan(
            rank=i + 1, plan=f.plan, objective_value=value,
            objective_unit=OBJECTIVE_UNITS[objective],
            objective_days=objective_days(objective, value), estimate=f.estimate,
            explanation=x,
            variants=_public_variants(objective, (variants or {}).get(layout_key(f.plan), []),
                                      f.plan)))
    return out


def _result(req: SearchRequest, found: list[Finalist], spaces: list[_PoolSpace], status: str,
            bound: float | None, clock: _Clock, stats: SearchStats) -> SearchResult:
    """A result from plans that only mixed-pool pipelines could provide (no certificate)."""
    objective = req.objective
    plans = _ranked_plans(req, found, spaces, clock)
    best = found[0]
    return SearchResult(
        plans=plans,
        pareto=[ParetoPoint(plan=best.plan, gpus=best.estimate.num_gpus,
                            tokens_per_s=best.estimate.tokens_per_s,
                            cost_per_million_tokens=best.estimate.cost_per_million_tokens,
                            cost_per_hour=best.estimate.cost_per_hour)],
        optimality=Optimality(status=status, objective=objective,
                              value=_public_value(objective, best.value),
                              bound=None if bound is None else _public_value(objective, bound),
                              gap=None),
        infeasible_reason=None, stats=stats)


def _mixed(req: SearchRequest, seeds: list[ParallelPlan], deadline: float,
           value_of: Callable[[Estimate], float]) -> list[Finalist]:
    """Pipelines spanning several pools (:mod:`solver.mixed`), evaluated by the estimate."""
    out = []
    for k, plan in enumerate(mixed_candidates(req, seeds, deadline)):
        est = _estimate(req, plan)
        if est is None or not _meets_all(est, req):
            continue
        out.append(Finalist(value_of(est), 10**9 + k, plan, est))
    return out


def _synthesize(req: SearchRequest, found: list[Finalist], deadline: float,
                value_of: Callable[[Estimate], float]
                ) -> tuple[list[Finalist], dict[int, list[str]], int]:
    """Try a synthesized custom schedule on every plan of ``found`` with unequal stages
    (:mod:`solver.custom_schedule`); keep it when the estimate improves and still fits.
    Synthesis shares :data:`solver.custom_schedule.SYNTHESIS_SHARE` of the time limit, split
    evenly over the plans still to try. Returns the plans re-sorted, the explanation notes by
    position and the number of schedules synthesized."""
    stop = deadline_for_synthesis(req, deadline)
    out: list[Finalist] = []
    notes: dict[int, list[str]] = {}
    solved = 0
    for k, (val, pos, plan, est) in enumerate(found):
        left = stop - time.perf_counter()
        if left > 0:
            got = synthesize_for(req, plan, est, left / (len(found) - k), req.seed)
            if got is not None:
                solved += 1
                custom, result = got
                nest = _estimate(req, custom)
                fits = nest is not None and (_meets_all(nest, req) if custom.stages is not None
                                             else _meets(nest, req.cluster.pool(custom.pool),
                                                         req))
                if nest is not None and fits and value_of(nest) < val:
                    notes.setdefault(pos, []).append(note(est, nest, result))
                    plan, est, val = custom, nest, value_of(nest)
        out.append(Finalist(val, pos, plan, est))
    out.sort(key=lambda f: (f.value, f.order))
    return out, notes, solved


def _seed_plans(spaces: list[_PoolSpace]) -> list[ParallelPlan]:
    """When no single pool can run the job: the valid plans of the pools needing the least
    memory per GPU, as degrees to try across pools."""
    seeds = []
    for sp in spaces:
        valid = np.flatnonzero(sp.bulk.valid)
        for i in valid[np.argsort(sp.bulk.peak_bytes[valid], kind="stable")][:3]:
            seeds.append(sp.cands.plan(int(i), pool=sp.pool.name))
    return seeds


def _meets_all(est: Estimate, req: SearchRequest) -> bool:
    """The memory and budget constraints for a plan whose ranks may sit on several pools."""
    cons = req.constraints
    if not est.fits:
        return False
    for sm in est.memory.per_stage:
        if sm.total_gib > sm.capacity_gib * cons.max_memory_fraction:
            return False
    return ((cons.max_cost_per_hour is None or est.cost_per_hour <= cons.max_cost_per_hour)
            and launchable(req, est.plan) and meets_sensitivity(req, est.plan))


def _variant(req: SearchRequest, plan: ParallelPlan, **update: Any
             ) -> tuple[ParallelPlan, Estimate] | None:
    """``plan`` with ``update`` applied, and its estimate, when it is valid and meets the
    memory and budget constraints."""
    nplan = plan.model_copy(update=update)
    nest = _estimate(req, nplan)
    if nest is None or not _meets(nest, req.cluster.pool(nplan.pool), req):
        return None
    return nplan, nest


def _step_time(req: SearchRequest, plan: ParallelPlan,
               memo: dict[tuple[object, ...], Any] | None = None) -> float | None:
    try:
        return step_time(req.model, req.training, req.cluster, plan, req.calibration, memo)
    except SpecError:
        return None


def _estimate(req: SearchRequest, plan: ParallelPlan) -> Estimate | None:
    try:
        return evaluate(req.model, req.training, req.cluster, plan, req.calibration)
    except SpecError:
        return None  # the simulator's own rules (e.g. torch's micro-batch rules) reject it


def _meets(est: Estimate, pool: GPUPool, req: SearchRequest) -> bool:
    cons = req.constraints
    cap = pool.gpu_type.memory_gib * cons.max_memory_fraction
    if not est.fits or est.memory.peak_gib > cap:
        return False
    return ((cons.max_cost_per_hour is None or est.cost_per_hour <= cons.max_cost_per_hour)
            and launchable(req, est.plan) and meets_sensitivity(req, est.plan))


def _repartition(req: SearchRequest, plan: ParallelPlan, est: Estimate, deadline: float,
                 seed: int) -> tuple[ParallelPlan, Estimate] | None:
    """Balance the stages with CP-SAT (vocabulary layers on the end stages make an even split
    uneven in time; early ranks hold more in-flight activations)."""
    pool = req.cluster.pool(plan.pool)
    layers = est.pipeline.layers_per_stage
    n = len(layers)
    ranks = [0] * n
    for r, sm in enumerate(est.memory.per_stage):
        for s in sm.stages:
            ranks[s] = r
    fwd, bi, bw = (est.pipeline.stage_forward_s, est.pipeline.stage_backward_input_s,
                   est.pipeline.stage_backward_weight_s)
    mid = [s for s in range(n) if 0 < s < n - 1 and layers[s] > 0] or [
        s for s in range(n) if layers[s] > 0]
    per_layer = min((fwd[s] + bi[s] + bw[s]) / layers[s] for s in mid)
    if not per_layer > 0:
        return None
    fixed_time = [max(0.0, fwd[s] + bi[s] + bw[s] - layers[s] * per_layer) for s in range(n)]
    gib = 2.0**30
    cap = min(pool.gpu_type.memory_gib * req.constraints.max_memory_fraction,
              est.memory.usable_gib) * gib
    act, state, fixed_b = [], [], []
    for sm in est.memory.per_stage:
        n_l = max(1, sm.layers)
        act.append(sm.activations_gib * gib / n_l)
        state.append((sm.weights_gib + sm.grads_gib + sm.optimizer_gib) * gib / n_l)
        fixed_b.append((sm.logits_gib + sm.comm_buffers_gib + sm.cuda_context_gib) * gib)
    problem = PartitionProblem(
        num_layers=req.model.num_hidden_layers, stage_ranks=tuple(ranks),
        layer_time=per_layer, fixed_time=tuple(fixed_time), act_bytes_per_layer=tuple(act),
        state_bytes_per_layer=float(min(state)), fixed_bytes=tuple(fixed_b),
        capacity_bytes=cap)
    budget = max(0.05, min(1.0, deadline - time.perf_counter()))
    result = solve_partition(problem, time_limit_s=budget, seed=seed, num_workers=1)
    if result.layers is None or list(result.layers) == list(layers):
        return None
    return _variant(req, plan, layers_per_stage=list(result.layers))


def _place(req: SearchRequest, plan: ParallelPlan, deadline: float, seed: int
           ) -> tuple[ParallelPlan, Estimate] | None:
    """Put the pipeline on the pool's best-connected nodes (measured matrix, Pipette-style):
    maximise the slowest link between consecutive stages (:mod:`solver.placement`)."""
    matrix = req.cluster.node_bandwidth_Gbps
    assert matrix is not None
    pool = req.cluster.pool(plan.pool)
    offset = 0
    for p in req.cluster.pools:
        if p.name == pool.name:
            break
        offset += p.nodes
    sub_matrix = [row[offset:offset + pool.nodes] for row in matrix[offset:offset + pool.nodes]]
    try:
        problem = PlacementProblem(bandwidth_Gbps=tuple(tuple(r) for r in sub_matrix),
                                   pp=plan.pp, stride=plan.tp * plan.cp * plan.dp,
                                   gpus_per_node=pool.gpus_per_node)
    except ValueError:
        return None  # a layout placement cannot express (stages neither fill nor share nodes)
    budget = max(0.05, min(2.0, deadline - time.perf_counter()))
    result = solve_placement(problem, time_limit_s=budget, seed=seed, num_workers=1)
    if result.nodes is None or list(result.nodes) == list(range(len(result.nodes))):
        return None
    return _variant(req, plan, node_order=list(result.nodes))


def spaces_caps(spaces: list[_PoolSpace], req: SearchRequest) -> dict[str, float]:
    """Memory limit (GiB) per pool of the cluster."""
    del spaces
    return {p.name: p.gpu_type.memory_gib * req.constraints.max_memory_fraction
            for p in req.cluster.pools}


def spaces_summary(spaces: list[_PoolSpace], req: SearchRequest) -> list[dict[str, Any]]:
    """Per pool: the plan with the least memory among valid ones, for infeasibility reports."""
    out: list[dict[str, Any]] = []
    for sp in spaces:
        b = sp.bulk
        valid = np.flatnonzero(b.valid)
        if len(valid) == 0:
            out.append({"pool": sp.pool, "plan": None, "peak_gib": None})
            continue
        i = int(valid[np.argmin(b.peak_bytes[valid])])
        cheapest_fit = np.flatnonzero(b.fits & b.valid)
        cost = float(np.min(b.cost_per_hour[cheapest_fit])) if len(cheapest_fit) else None
        out.append({"pool": sp.pool, "plan": sp.cands.plan(i, pool=sp.pool.name),
                    "peak_gib": float(b.peak_gib[i]), "cheapest_fitting_cost": cost})
    return out


def _front(tps: np.ndarray, cost: np.ndarray, idx: np.ndarray, which: np.ndarray
           ) -> np.ndarray:
    """Positions of the non-dominated points in (tokens/s ↑, $ per M tokens ↓), ties to the
    lower pool then candidate index.

    Only the points between the two ends are sorted: the fastest point (the cheapest of the
    fastest) comes before every point and leaves out each that is not cheaper, the cheapest
    (the fastest of the cheapest) each that is not faster, and neither kind lowers the
    running minimum cost of the points after it (306,215 fitting plans of
    ``benchmarks/solver_speed.py`` (a) leave 792 to sort)."""
    if len(tps) > 2 and np.isfinite(tps).all() and np.isfinite(cost).all():
        def first(pos: np.ndarray, key: np.ndarray) -> int:
            return int(pos[np.lexsort((idx[pos], which[pos], key[pos]))[0]])

        fast = first(np.flatnonzero(tps == tps.max()), cost)
        cheap = first(np.flatnonzero(cost == cost.min()), -tps)
        between = np.flatnonzero((cost < cost[fast]) & (tps > tps[cheap]))
        pos = np.union1d(between, [fast, cheap])
        order = pos[np.lexsort((idx[pos], which[pos], cost[pos], -tps[pos]))]
    else:
        order = np.lexsort((idx, which, cost, -tps))  # by throughput down, then cost up
    cost_sorted = cost[order]
    prev_min = np.concatenate([[np.inf], np.minimum.accumulate(cost_sorted)[:-1]])
    return order[cost_sorted < prev_min - 1e-12]


def _pareto(req: SearchRequest, spaces: list[_PoolSpace], deadline: float,
            finalists: list[tuple[ParallelPlan, Estimate]]) -> list[ParetoPoint]:
    """Non-dominated plans in (tokens/s ↑, $ per token ↓) from the bulk values, the best
    per GPU count re-evaluated with the full estimate (at most :data:`PARETO_MAX`)."""
    # The front of all pools is the front of the pools' own fronts; pools of the same
    # hardware share their arrays and (at prices scaled by a constant) their front.
    local: dict[tuple[int, bool, int], np.ndarray] = {}
    parts = []
    for k, sp in enumerate(spaces):
        key = (id(sp.bulk.tokens_per_s), sp.pool.price_per_gpu_hour > 0, hash(sp.ok.tobytes()))
        if req.framework_constraint is not None:
            local[key] = _launchable_front(req, sp, deadline)  # per pool: the check names it
        elif key not in local:
            local[key] = _pool_front(sp, sp.ok)
        parts.append((k, local[key]))
    tps = np.concatenate([spaces[k].bulk.tokens_per_s[i] for k, i in parts])
    cost = np.concatenate([spaces[k].bulk.cost_per_million_tokens[i] for k, i in parts])
    which = np.concatenate([np.full(len(i), k) for k, i in parts])
    idx = np.concatenate([i for _, i in parts])
    on_front = _front(tps, cost, idx, which)
    front = [(float(tps[j]), float(cost[j]), int(which[j]), int(idx[j])) for j in on_front]
    if len(front) > PARETO_MAX:
        idx = np.linspace(0, len(front) - 1, PARETO_MAX).round().astype(int)
        front = [front[i] for i in sorted(set(idx.tolist()))]
    out = [ParetoPoint(plan=p, gpus=e.num_gpus, tokens_per_s=e.tokens_per_s,
                       cost_per_million_tokens=e.cost_per_million_tokens,
                       cost_per_hour=e.cost_per_hour) for p, e in finalists]
    for _, _, k, i in front:
        if time.perf_counter() > deadline:
            break
        sp = spaces[k]
        plan = sp.cands.plan(i, pool=sp.pool.name)
        est = _estimate(req, plan)
        if est is None or not _meets(est, sp.pool, req):
            continue
        out.append(ParetoPoint(plan=plan, gpus=est.num_gpus, tokens_per_s=est.tokens_per_s,
                               cost_per_million_tokens=est.cost_per_million_tokens,
                               cost_per_hour=est.cost_per_hour))
    # the exact values may reorder a few points: keep the non-dominated ones
    return non_dominated(out)


def _pool_front(sp: _PoolSpace, ok: np.ndarray) -> np.ndarray:
    """Candidate indices (of ``ok``, an index array) on the pool's bulk Pareto front."""
    return ok[_front(sp.bulk.tokens_per_s[ok], sp.bulk.cost_per_million_tokens[ok], ok,
                     np.zeros(len(ok), dtype=np.int64))]


PARETO_LAUNCH_ROUNDS = 8
"""Rounds of :func:`_launchable_front`. A framework that refuses most of the space (plain
DeepSpeed: no tp or cp) would need a round per refused layer of the front (thousands, 7 s on
``examples/search-llama3-70b-mixed.json``); eight rounds take 0.1-0.3 s there."""


def _launchable_front(req: SearchRequest, sp: _PoolSpace, deadline: float) -> np.ndarray:
    """The pool's front among the plans ``constraints.framework`` can launch: the front of
    all, less the points the framework refuses, then the front of the rest, until every point
    launches (a refused point may hide launchable ones it dominated). After
    :data:`PARETO_LAUNCH_ROUNDS` rounds or past ``deadline``, the launchable points of the
    last front: part of the front of launchable plans, which may miss points that refused
    ones still hide."""
    ok = sp.ok
    for _ in range(PARETO_LAUNCH_ROUNDS):
        front = _pool_front(sp, ok)
        refused = [i for i in front.tolist()
                   if not launchable(req, sp.cands.plan(int(i), pool=sp.pool.name))]
        if not refused or time.perf_counter() > deadline:
            break
        ok = np.setdiff1d(ok, refused, assume_unique=True)
    return np.setdiff1d(front, refused, assume_unique=True)


def non_dominated(points: list[ParetoPoint]) -> list[ParetoPoint]:
    """The points no other beats in both tokens/s (↑) and $ per M tokens (↓), fastest
    first."""
    kept: list[ParetoPoint] = []
    for q in sorted(points, key=lambda p: (-p.tokens_per_s, p.cost_per_million_tokens)):
        if not kept or q.cost_per_million_tokens < kept[-1].cost_per_million_tokens:
            kept.append(q)
    return kept
