"""Heterogeneous pipelines: which GPU pool runs each pipeline stage, and how many layers it
gets (the stage-to-GPU-type assignment of Metis, Um et al. 2024, and AMP, Li et al. 2022).

Given the plan's common degrees (tp·cp·dp GPUs per stage) and, per pool, the time of one
layer per micro-batch, the extra time of the vocabulary layers on the first and last stage,
the memory per layer and the fixed memory of a stage at each pipeline position, choose for
every stage a pool and a layer count to MINIMISE the slowest stage — the steady-state rate of
a 1F1B pipeline (Narayanan et al. 2021, §2.2) — subject to each pool's GPU count and each
stage's memory on its GPU.

CP-SAT model (house style of the CP-SAT primer): Booleans ``x[s][p]`` (stage s on pool p),
integers ``y[s][p]`` = layers of stage s when on pool p (0 otherwise; linked to x and to the
stage's layers), a max-stage-time variable. Times are scaled so one layer of the fastest pool
is 10⁶ units; memory in MiB, rounded up on the left-hand side so the constraint stays safe.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from solver import cpsat

TIME_UNITS = 1_000_000
"""Integer units of one layer on the fastest pool."""
MIB = 2.0**20


@dataclass(frozen=True)
class HeteroProblem:
    num_layers: int
    pp: int
    gpus_per_stage: int
    pools: tuple[str, ...]
    pool_gpus: tuple[int, ...]
    layer_time: tuple[float, ...]
    """Per pool: one layer's forward + backward per micro-batch on one stage (s)."""
    first_time: tuple[float, ...]
    """Per pool: the embedding's extra time on stage 0."""
    last_time: tuple[float, ...]
    """Per pool: the final norm, LM head and loss on the last stage."""
    layer_bytes: tuple[tuple[float, ...], ...]
    """[pool][stage]: memory per layer at that pipeline position (states + in-flight acts)."""
    fixed_bytes: tuple[tuple[float, ...], ...]
    """[pool][stage]: memory that does not grow with layers (vocabulary layers, overheads)."""
    capacity_bytes: tuple[float, ...]
    """Per pool: usable bytes per GPU."""
    min_pools: int = 1
    """Require at least this many distinct pools (2 = only mixed pipelines)."""
    stage_gpus: tuple[int, ...] | None = None
    """Per option: GPUs one stage takes (tp_o·cp·dp); None = ``gpus_per_stage`` for all.
    Options are the entries of ``pools``: a pool name may repeat with another tensor-parallel
    degree (its ``pool_gpus`` entries must then agree); the GPU budget is per pool name."""
    tps: tuple[int, ...] | None = None
    """Per option: its tensor-parallel degree (reported in the result)."""

    def __post_init__(self) -> None:
        n = len(self.pools)
        for name in ("stage_gpus", "tps"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ValueError(f"{name} needs one entry per option ({n})")
        budget: dict[str, int] = {}
        for name, g in zip(self.pools, self.pool_gpus, strict=False):
            if budget.setdefault(name, g) != g:
                raise ValueError(f"pool_gpus differs between options of pool {name!r}")
        for name in ("pool_gpus", "layer_time", "first_time", "last_time", "layer_bytes",
                     "fixed_bytes", "capacity_bytes"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} needs one entry per pool ({n})")
        for name in ("layer_bytes", "fixed_bytes"):
            if any(len(row) != self.pp for row in getattr(self, name)):
                raise ValueError(f"{name} needs pp={self.pp} entries per pool")
        if self.pp < 1 or self.num_layers < self.pp or self.gpus_per_stage < 1:
            raise ValueError("need 1 <= pp <= num_layers and gpus_per_stage >= 1")
        if any(not t > 0 or not math.isfinite(t) for t in self.layer_time):
            raise ValueError("layer_time must be positive and finite")


def _stage_gpus(problem: HeteroProblem, o: int) -> int:
    return problem.stage_gpus[o] if problem.stage_gpus is not None else problem.gpus_per_stage


def _budgets(problem: HeteroProblem) -> dict[str, int]:
    return dict(zip(problem.pools, problem.pool_gpus, strict=True))


@dataclass(frozen=True)
class HeteroResult:
    pools: tuple[str, ...] | None
    """Pool of each stage, in model order (None when infeasible)."""
    layers: tuple[int, ...] | None
    max_stage_time: float | None
    status: str
    bound: float | None
    gap: float | None
    explanation: str | None = None
    wall_time_s: float = field(default=0.0, compare=False)
    tps: tuple[int, ...] | None = None
    """Tensor-parallel degree of each stage (when the problem gives ``tps``)."""


def stage_times(problem: HeteroProblem, pools: tuple[int, ...], layers: tuple[int, ...]
                ) -> list[float]:
    """Per-stage time per micro-batch of an assignment (pool indices), in seconds."""
    out = []
    for s, (p, n) in enumerate(zip(pools, layers, strict=True)):
        t = n * problem.layer_time[p]
        if s == 0:
            t += problem.first_time[p]
        if s == problem.pp - 1:
            t += problem.last_time[p]
        out.append(t)
    return out


class HeteroModel:
    """The CP-SAT model: variables in containers, one method per constraint family."""

    def __init__(self, problem: HeteroProblem) -> None:
        self.p = problem
        self.m = cp_model.CpModel()
        L, S, P = problem.num_layers, problem.pp, len(problem.pools)
        self.scale = TIME_UNITS / min(problem.layer_time)
        self.x = [[self.m.new_bool_var(f"x_{s}_{p}") for p in range(P)] for s in range(S)]
        self.layers = [self.m.new_int_var(1, L, f"layers_{s}") for s in range(S)]
        self.y = [[self.m.new_int_var(0, L, f"y_{s}_{p}") for p in range(P)] for s in range(S)]
        horizon = math.ceil(self.scale * (L * max(problem.layer_time)
                                              + max(problem.first_time)
                                              + max(problem.last_time))) + 1
        self.tmax = self.m.new_int_var(0, horizon, "max_stage_time")
        self.names = sorted(set(problem.pools))
        self.used = {n: self.m.new_bool_var(f"used_{n}") for n in self.names}

    def assignment(self) -> None:
        for s in range(len(self.x)):
            self.m.add_exactly_one(self.x[s])
        self.m.add(sum(self.layers) == self.p.num_layers)

    def linking(self) -> None:
        L = self.p.num_layers
        for s, row in enumerate(self.y):
            for p, y in enumerate(row):
                self.m.add(y <= L * self.x[s][p])
                self.m.add(y <= self.layers[s])
                self.m.add(y >= self.layers[s] - L * (1 - self.x[s][p]))

    def gpu_counts(self) -> None:
        pr = self.p
        S = len(self.x)
        budgets = _budgets(pr)
        for name in self.names:
            opts = [o for o, n in enumerate(pr.pools) if n == name]
            self.m.add(sum(_stage_gpus(pr, o) * self.x[s][o] for s in range(S) for o in opts)
                       <= budgets[name])
            for s in range(S):
                for o in opts:
                    self.m.add_implication(self.x[s][o], self.used[name])
            self.m.add(self.used[name] <= sum(self.x[s][o] for s in range(S) for o in opts))
        self.m.add(sum(self.used.values()) >= pr.min_pools)

    def memory(self) -> None:
        pr = self.p
        for s in range(pr.pp):
            for p in range(len(pr.pools)):
                per_layer = math.ceil(pr.layer_bytes[p][s] / MIB)
                fixed = math.ceil(pr.fixed_bytes[p][s] / MIB)
                cap = math.floor(pr.capacity_bytes[p] / MIB)
                # only binding when the stage is on pool p (y is 0 otherwise)
                self.m.add(per_layer * self.y[s][p] + fixed * self.x[s][p] <= cap)

    def stage_time(self) -> None:
        pr = self.p
        for s in range(pr.pp):
            terms = []
            for p in range(len(pr.pools)):
                terms.append(round(self.scale * pr.layer_time[p]) * self.y[s][p])
                extra = (pr.first_time[p] if s == 0 else 0.0) + (
                    pr.last_time[p] if s == pr.pp - 1 else 0.0)
                if extra:
                    terms.append(math.ceil(self.scale * extra) * self.x[s][p])
            self.m.add(self.tmax >= sum(terms))
        self.m.minimize(self.tmax)

    def build(self) -> HeteroModel:
        self.assignment()
        self.linking()
        self.gpu_counts()
        self.memory()
        self.stage_time()
        return self


def _precheck(problem: HeteroProblem) -> str | None:
    budgets = _budgets(problem)
    smallest = {n: min(_stage_gpus(problem, o) for o, m in enumerate(problem.pools) if m == n)
                for n in budgets}
    stages = sum(budgets[n] // smallest[n] for n in budgets)
    if stages < problem.pp:
        return (f"the pools hold {stages} stages of at least "
                f"{min(smallest.values())} GPUs, the pipeline needs {problem.pp}")
    usable = sum(1 for n in budgets if budgets[n] >= smallest[n])
    if usable < problem.min_pools:
        return f"only {usable} pool(s) can host a stage"
    return None


def solve_hetero(problem: HeteroProblem, time_limit_s: float = 2.0, seed: int = 0,
                 num_workers: int = 1) -> HeteroResult:
    """The best assignment found within ``time_limit_s`` (see the module docstring)."""
    t0 = time.perf_counter()
    why = _precheck(problem)
    if why is not None:
        return HeteroResult(None, None, None, "infeasible", None, None, why,
                            time.perf_counter() - t0)
    model = HeteroModel(problem).build()
    solver, code = cpsat.solve(model.m, time_limit_s=max(0.01, time_limit_s), seed=seed,
                               num_workers=num_workers)
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        status = "infeasible" if code == cp_model.INFEASIBLE else "unknown"
        why = ("no assignment fits every stage's memory on its GPU"
               if code == cp_model.INFEASIBLE else "no assignment found within the time limit")
        return HeteroResult(None, None, None, status, None, None, why, time.perf_counter() - t0)
    P = len(problem.pools)
    pools = tuple(next(p for p in range(P) if solver.value(model.x[s][p]))
                  for s in range(problem.pp))
    layers = tuple(int(solver.value(v)) for v in model.layers)
    tmax = max(stage_times(problem, pools, layers))
    bound = solver.best_objective_bound / model.scale
    bound = min(bound, tmax)
    return HeteroResult(
        pools=tuple(problem.pools[p] for p in pools), layers=layers, max_stage_time=tmax,
        status="optimal" if code == cp_model.OPTIMAL else "feasible", bound=bound,
        gap=(tmax - bound) / tmax if tmax > 0 else 0.0, wall_time_s=time.perf_counter() - t0,
        tps=None if problem.tps is None else tuple(problem.tps[p] for p in pools))
