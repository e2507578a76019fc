"""What-if analysis of stragglers: the plan's step when some GPUs, stages, nodes, pools or
links run slower than the estimate assumes, or when GPU speed varies from step to step.

The scenario (:class:`~costmodel.specs.scenario.Scenario`) is turned into multipliers on the
estimate's own step computation (:class:`~costmodel.estimate.StepScale`), so every formula is
the estimate's:

* a GPU's compute factor is the product of its rank's, node's and pool's factors; a pipeline
  rank runs at the slowest of its tp·cp·dp GPUs times its stage factor, since its tensor-,
  context- and data-parallel collectives wait for the slowest member (the straggler model of
  Falcon, Wu et al. 2024 §2, and of "Understanding Stragglers in Large Model Training", Lin
  et al. 2025 §3: a slow worker slows its whole synchronous group). The schedule is simulated
  again with the scaled stage times (:mod:`costmodel.pipeline.simulator`), so the pipeline
  bubble absorbs or propagates the slowdown as the schedule's order dictates;
* link factors multiply each stage boundary's send/recv time (inside a node or between
  nodes; a node pair's factor on top) and each pipeline rank's data-parallel communication
  (between nodes when its group spans several), whose slowdown is counted fully exposed;
* jitter draws, per step and per GPU, a log-normal multiplier of mean 1 and the given
  coefficient of variation, ``steps`` times with ``seed``. The step is a max over paths of
  sums of scaled durations, convex in the multipliers, so its expectation is at least the
  unjittered step (Jensen): jitter only ever costs time on average.

:func:`straggler_sensitivity` is the step-time increase when one GPU is 10 % slower, at the
pipeline rank where that hurts most.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from costmodel.errors import ProblemCollector
from costmodel.estimate import StepScale, _Evaluation, _Step, evaluate, scaled_evaluation
from costmodel.pipeline.schedules import KINDS
from costmodel.pipeline.simulator import SimResult
from costmodel.specs.request import EstimateRequest, parse
from costmodel.specs.scenario import Scenario

STRAGGLER_FACTOR = 1.1
"""The single slow GPU of :func:`straggler_sensitivity`: 10 % longer compute."""
MAX_PATH_ACTIONS = 256
"""Critical-path actions listed at most (the last ones, which end the step)."""


class Figures(BaseModel):
    step_time_s: float
    tokens_per_s: float
    cost_per_million_tokens: float = Field(description="$ per million tokens.")


class PathAction(BaseModel):
    rank: int = Field(description="Pipeline rank.")
    stage: int = Field(description="Global pipeline stage.")
    microbatch: int
    kind: str = Field(description="F (forward), B (backward), I (input gradient), "
                      "W (weight gradient).")
    start_s: float
    end_s: float


class CriticalPath(BaseModel):
    """What sets the step: the chain of simulated actions, each waiting for the previous one,
    that ends last, then the slowest rank's data-parallel communication and optimizer step."""

    rank: int = Field(description="Pipeline rank with the most compute on the path.")
    stage_factor: float = Field(description="That rank's compute multiplier.")
    tail_rank: int = Field(description="Pipeline rank whose DP communication and optimizer "
                           "step end the step.")
    pipeline_s: float = Field(description="The simulated pipeline's makespan.")
    tail_s: float = Field(description="Exposed DP communication + optimizer (+ replica "
                          "all-reduce, tied embeddings) after it.")
    actions: list[PathAction] = Field(description=f"The path's actions in time order (the "
                                      f"last {MAX_PATH_ACTIONS} at most).")
    truncated: bool = False


class JitterResult(BaseModel):
    steps: int
    seed: int
    mean_step_time_s: float
    std_step_time_s: float
    p50_step_time_s: float
    p95_step_time_s: float
    max_step_time_s: float
    step_times_s: list[float]


class StragglerSensitivity(BaseModel):
    """The step-time increase when one GPU computes ``factor`` times slower, placed where
    that hurts most."""

    factor: float = Field(STRAGGLER_FACTOR, description="The slow GPU's compute-time "
                          "multiplier (1.1 = 10 % slower).")
    worst_stage: int = Field(description="Pipeline rank whose GPU hurts most.")
    worst_rank: int = Field(description="A global rank (GPU) of that stage.")
    step_time_s: float = Field(description="Step time with that GPU slow, s.")
    increase_s: float = Field(description="Its increase over the plan's step time, s.")
    increase_fraction: float = Field(description="increase_s / the plan's step time (0.05 = "
                                     "5 %).", examples=[0.087])
    per_stage_increase_s: list[float] = Field(description="The increase, s, with the slow "
                                              "GPU on each pipeline rank.")


class WhatIfResult(BaseModel):
    """The plan's step under the scenario against its estimate."""

    baseline: Figures
    scenario: Figures = Field(description="With jitter, the mean over the simulated steps.")
    step_time_s: float = Field(description="The scenario's step time (= scenario.step_time_s).")
    baseline_step_time_s: float
    change: float = Field(description="(scenario − baseline) / baseline step time.")
    stage_factors: list[float] = Field(description="Compute multiplier of every pipeline rank "
                                       "(the slowest of its GPUs times its stage factor).")
    idle_s: list[float] = Field(description="Per pipeline rank: the scenario's step time "
                                "(without jitter) less its compute: waiting in bubbles, for "
                                "slower ranks and for the DP communication and optimizer tail.")
    baseline_idle_s: list[float]
    critical_path: CriticalPath
    jitter: JitterResult | None = None
    straggler_sensitivity: StragglerSensitivity | None = None


class _Placement:
    """Where every GPU of the plan sits: pipeline rank, pool, cluster node."""

    def __init__(self, ev: _Evaluation) -> None:
        c = ev.c
        plan, cluster = c.plan, c.cluster
        self.pp = plan.pp
        offsets: dict[str, int] = {}
        total = 0
        for p in cluster.pools:
            offsets[p.name] = total
            total += p.nodes
        self.n_nodes = total
        self.pool_names = [p.name for p in cluster.pools]
        hetero = c.stage_pools is not None
        gpu_rank: list[int] = []
        gpu_pool: list[str] = []
        gpu_node: list[int] = []
        used: dict[str, int] = {}
        order = plan.node_order
        for r in range(plan.pp):
            pool = ev.rank_pool(r)
            w = ev.rank_width(r)
            first = used.get(pool.name, 0) if hetero else r * w
            used[pool.name] = first + w
            for k in range(w):
                node = (first + k) // pool.gpus_per_node
                if not hetero and order is not None and node < len(order):
                    node = order[node]
                gpu_rank.append(r)
                gpu_pool.append(pool.name)
                gpu_node.append(offsets[pool.name] + node)
        self.gpu_rank = np.array(gpu_rank, dtype=int)
        self.gpu_pool = gpu_pool
        self.gpu_node = np.array(gpu_node, dtype=int)
        self.rank_nodes = [sorted(set(self.gpu_node[self.gpu_rank == r].tolist()))
                           for r in range(plan.pp)]

    @property
    def n_gpus(self) -> int:
        return int(self.gpu_rank.shape[0])

    def stage_factors(self, gpu: np.ndarray, stage: np.ndarray) -> np.ndarray:
        """Per pipeline rank: the slowest of its GPUs' factors times the stage factor."""
        out = np.full(self.pp, -np.inf)
        np.maximum.at(out, self.gpu_rank, gpu)
        return out * stage


def _check(sc: Scenario, pl: _Placement) -> None:
    pc = ProblemCollector()

    def factor(field: str, value: float) -> None:
        pc.check(math.isfinite(value) and value > 0, field,
                 f"a factor must be finite and > 0 (1 = as estimated); got {value}")

    for k, v in sc.ranks.items():
        if pc.check(0 <= k < pl.n_gpus, f"ranks.{k}",
                    f"no global rank {k}: the plan has ranks 0..{pl.n_gpus - 1}"):
            factor(f"ranks.{k}", v)
    for k, v in sc.stages.items():
        if pc.check(0 <= k < pl.pp, f"stages.{k}",
                    f"no pipeline stage {k}: the plan has stages 0..{pl.pp - 1}"):
            factor(f"stages.{k}", v)
    for k, v in sc.nodes.items():
        if pc.check(0 <= k < pl.n_nodes, f"nodes.{k}",
                    f"no node {k}: the cluster has nodes 0..{pl.n_nodes - 1}"):
            factor(f"nodes.{k}", v)
    for name, v in sc.pools.items():
        if pc.check(name in pl.pool_names, f"pools.{name}",
                    f"no pool {name!r}: the cluster's pools are {', '.join(pl.pool_names)}"):
            factor(f"pools.{name}", v)
    if sc.links is not None:
        factor("links.intra_node", sc.links.intra_node)
        factor("links.inter_node", sc.links.inter_node)
        for i, pair in enumerate(sc.links.between):
            for n in pair.nodes:
                pc.check(0 <= n < pl.n_nodes, f"links.between.{i}.nodes",
                         f"no node {n}: the cluster has nodes 0..{pl.n_nodes - 1}")
            pc.check(pair.nodes[0] != pair.nodes[1], f"links.between.{i}.nodes",
                     "two different nodes")
            factor(f"links.between.{i}.factor", pair.factor)
    if sc.jitter is not None:
        j = sc.jitter
        pc.check(math.isfinite(j.cv) and j.cv >= 0, "jitter.cv",
                 f"a coefficient of variation must be finite and >= 0; got {j.cv}")
        for k, v in j.cv_per_rank.items():
            if pc.check(0 <= k < pl.n_gpus, f"jitter.cv_per_rank.{k}",
                        f"no global rank {k}: the plan has ranks 0..{pl.n_gpus - 1}"):
                pc.check(math.isfinite(v) and v >= 0, f"jitter.cv_per_rank.{k}",
                         f"a coefficient of variation must be finite and >= 0; got {v}")
        pc.check(1 <= j.steps <= 10000, "jitter.steps", f"1..10000 steps; got {j.steps}")
    pc.raise_if_any()


def _gpu_factors(sc: Scenario, pl: _Placement) -> np.ndarray:
    gpu = np.ones(pl.n_gpus)
    for k, v in sc.ranks.items():
        gpu[k] *= v
    for k, v in sc.nodes.items():
        gpu[pl.gpu_node == k] *= v
    for name, v in sc.pools.items():
        gpu[np.array([p == name for p in pl.gpu_pool], dtype=bool)] *= v
    return gpu


def _link_scales(sc: Scenario, pl: _Placement, ev: _Evaluation
                 ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(per stage boundary, per pipeline rank DP) communication multipliers."""
    links = sc.links
    if links is None:
        return None, None
    pairs = {frozenset(p.nodes): p.factor for p in links.between}

    def between(a: Sequence[int], b: Sequence[int]) -> float:
        f = 1.0
        for x in a:
            for y in b:
                if x != y:
                    f = max(f, pairs.get(frozenset((x, y)), 1.0))
        return f

    ranks = ev.all_ranks
    p2p = np.ones(max(len(ranks) - 1, 0))
    for g in range(len(p2p)):
        na, nb = pl.rank_nodes[ranks[g]], pl.rank_nodes[ranks[g + 1]]
        if na == nb and len(na) == 1:
            p2p[g] = links.intra_node
        else:
            p2p[g] = links.inter_node * between(na, nb)
    dp = np.ones(pl.pp)
    for r in range(pl.pp):
        nodes = pl.rank_nodes[r]
        dp[r] = (links.inter_node * between(nodes, nodes) if len(nodes) > 1
                 else links.intra_node)
    return p2p, dp


def _critical_path(st: _Step, ev: _Evaluation, factors: np.ndarray) -> CriticalPath:
    """Trace back from the action that ends last: each step goes to the predecessor (the
    rank's previous action, or the same micro-batch's action on a neighbouring stage) that
    ends latest no later than the action starts, i.e. the one it waited for."""
    tl = st.sim.timeline
    n = int(tl.start.shape[0])
    tail = float(st.step - st.makespan)
    if n == 0:
        return CriticalPath(rank=0, stage_factor=float(factors[0]), tail_rank=st.crit,
                            pipeline_s=st.makespan, tail_s=tail, actions=[])
    by_key: dict[tuple[int, int], list[int]] = {}
    for i in range(n):
        by_key.setdefault((int(tl.stage[i]), int(tl.mb[i])), []).append(i)
    eps = 1e-12 * max(1.0, float(tl.end.max()))
    i = int(np.argmax(tl.end))
    path = [i]
    seen = {i}
    while float(tl.start[i]) > eps:
        t = float(tl.start[i])
        cands = []
        if i > 0 and tl.rank[i - 1] == tl.rank[i]:
            cands.append(i - 1)
        s, m = int(tl.stage[i]), int(tl.mb[i])
        for ds in (-1, 0, 1):
            cands += by_key.get((s + ds, m), [])
        best, best_end = -1, -math.inf
        for j in cands:
            e = float(tl.end[j])
            if j not in seen and e <= t + eps and e > best_end:
                best, best_end = j, e
        if best < 0:
            break
        i = best
        seen.add(i)
        path.append(i)
    path.reverse()
    busy = np.zeros(len(factors))
    for j in path:
        busy[int(tl.rank[j])] += float(tl.end[j] - tl.start[j])
    rank = int(np.argmax(busy))
    shown = path[-MAX_PATH_ACTIONS:]
    return CriticalPath(
        rank=rank, stage_factor=float(factors[rank]), tail_rank=st.crit,
        pipeline_s=st.makespan, tail_s=tail,
        actions=[PathAction(rank=int(tl.rank[j]), stage=int(tl.stage[j]),
                            microbatch=int(tl.mb[j]), kind=KINDS[int(tl.kind[j])],
                            start_s=float(tl.start[j]), end_s=float(tl.end[j]))
                 for j in shown],
        truncated=len(path) > len(shown))


def _run(ev: _Evaluation, scale: StepScale | None) -> _Step:
    ev.scale = scale
    try:
        return ev.step()
    finally:
        ev.scale = None


def _figures(step: float, tokens: float, price_per_hour: float) -> Figures:
    tps = tokens / step if step > 0 else 0.0
    cost = price_per_hour / 3600.0 / tps * 1e6 if tps > 0 else math.inf
    return Figures(step_time_s=step, tokens_per_s=tps, cost_per_million_tokens=cost)


def _sensitivity(ev: _Evaluation, pl: _Placement, base: float) -> StragglerSensitivity:
    inc = []
    for r in range(pl.pp):
        f = np.ones(pl.pp)
        f[r] = STRAGGLER_FACTOR
        inc.append(_run(ev, StepScale(compute=f)).step - base)
    worst = int(np.argmax(inc))
    return StragglerSensitivity(
        worst_stage=worst, worst_rank=int(np.flatnonzero(pl.gpu_rank == worst)[0]),
        step_time_s=base + inc[worst], increase_s=inc[worst],
        increase_fraction=inc[worst] / base if base > 0 else 0.0, per_stage_increase_s=inc)


def straggler_sensitivity(request: EstimateRequest | dict[str, Any]) -> StragglerSensitivity:
    """The step-time increase when one GPU computes 10 % slower, at the pipeline rank where it
    hurts most (any GPU of a rank has the same effect: the rank waits for its slowest GPU)."""
    req: EstimateRequest = parse(EstimateRequest, request)
    ev = scaled_evaluation(req)
    return _sensitivity(ev, _Placement(ev), _run(ev, None).step)


def _scales(sc: Scenario, pl: _Placement, ev: _Evaluation) -> tuple[
        np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(per GPU, per stage, per pipeline rank compute factors, per boundary p2p, per rank DP
    link factors) of the scenario, without jitter."""
    stage = np.ones(pl.pp)
    for k, v in sc.stages.items():
        stage[k] *= v
    gpu = _gpu_factors(sc, pl)
    p2p, dp = _link_scales(sc, pl, ev)
    return gpu, stage, pl.stage_factors(gpu, stage), p2p, dp


@dataclass(frozen=True)
class ScenarioSimulation:
    """The scenario's simulated pipeline schedule (without jitter) and what it changed:
    ``factors`` per pipeline rank (compute), ``p2p`` per stage boundary (None: links as
    estimated), the baseline's and the scenario's step times (s)."""

    sim: SimResult
    factors: list[float]
    p2p: list[float] | None
    baseline_step_s: float
    step_s: float


def scenario_simulation(request: EstimateRequest | dict[str, Any],
                        scenario: Scenario | dict[str, Any] | None = None
                        ) -> ScenarioSimulation:
    """The pipeline schedule of ``request``'s plan simulated under ``scenario`` exactly as
    :func:`what_if` does (its jitter aside: one deterministic step), for the what-if
    timeline. Raises :class:`~costmodel.errors.SpecError` as :func:`what_if` does."""
    req: EstimateRequest = parse(EstimateRequest, request)
    sc: Scenario = parse(Scenario, scenario if scenario is not None else {})
    ev = scaled_evaluation(req)
    pl = _Placement(ev)
    _check(sc, pl)
    base = _run(ev, None)
    _, _, factors, p2p, dp = _scales(sc, pl, ev)
    st = _run(ev, StepScale(compute=factors, p2p=p2p, dp=dp))
    return ScenarioSimulation(sim=st.sim, factors=factors.tolist(),
                              p2p=p2p.tolist() if p2p is not None else None,
                              baseline_step_s=base.step, step_s=st.step)


def what_if(request: EstimateRequest | dict[str, Any],
            scenario: Scenario | dict[str, Any] | None = None, *,
            sensitivity: bool = True) -> WhatIfResult:
    """The plan of ``request`` (the ``POST /v1/estimates`` body) under ``scenario``.

    Raises :class:`~costmodel.errors.SpecError` for an invalid request or scenario; the
    scenario's problems name its own fields (``ranks.12``, ``pools.a100``, ``jitter.cv``)."""
    req: EstimateRequest = parse(EstimateRequest, request)
    sc: Scenario = parse(Scenario, scenario if scenario is not None else {})
    est = evaluate(req.model, req.training, req.cluster, req.plan, req.calibration)
    ev = scaled_evaluation(req)
    pl = _Placement(ev)
    _check(sc, pl)
    tokens = float(req.training.tokens_per_step)
    base_step = _run(ev, None)
    gpu, stage, factors, p2p, dp = _scales(sc, pl, ev)
    st = _run(ev, StepScale(compute=factors, p2p=p2p, dp=dp))
    step = st.step
    jitter = None
    if sc.jitter is not None:
        j = sc.jitter
        cv = np.full(pl.n_gpus, j.cv)
        for k, v in j.cv_per_rank.items():
            cv[k] = v
        sigma = np.sqrt(np.log1p(cv ** 2))
        rng = np.random.default_rng(j.seed)
        times = []
        for _ in range(j.steps):
            draw = np.exp(rng.standard_normal(pl.n_gpus) * sigma - sigma ** 2 / 2)
            f = pl.stage_factors(gpu * draw, stage)
            times.append(_run(ev, StepScale(compute=f, p2p=p2p, dp=dp)).step)
        arr = np.array(times)
        jitter = JitterResult(
            steps=j.steps, seed=j.seed, mean_step_time_s=float(arr.mean()),
            std_step_time_s=float(arr.std()), p50_step_time_s=float(np.percentile(arr, 50)),
            p95_step_time_s=float(np.percentile(arr, 95)), max_step_time_s=float(arr.max()),
            step_times_s=arr.tolist())
        step = float(arr.mean())
    base = est.step_time_s
    return WhatIfResult(
        baseline=Figures(step_time_s=base, tokens_per_s=est.tokens_per_s,
                         cost_per_million_tokens=est.cost_per_million_tokens),
        scenario=_figures(step, tokens, est.cost_per_hour),
        step_time_s=step, baseline_step_time_s=base,
        change=(step - base) / base if base > 0 else 0.0,
        stage_factors=factors.tolist(),
        idle_s=(st.step - st.sim.per_rank_busy).tolist(),
        baseline_idle_s=(base - base_step.sim.per_rank_busy).tolist(),
        critical_path=_critical_path(st, ev, factors),
        jitter=jitter,
        straggler_sensitivity=_sensitivity(ev, pl, base_step.step) if sensitivity else None)
