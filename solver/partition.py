"""Optimal uneven split of the transformer layers over the stages of a pipeline (CP-SAT).

A pipeline of ``n_stages`` global stages is placed on ranks by ``stage_ranks`` (one stage per
rank for GPipe/1F1B, ``v`` per rank for the interleaved loop placement, two per rank in a V for
ZBV/DualPipeV). We choose integer ``layers[s] >= min_layers_per_stage`` with
``sum(layers) == num_layers`` minimising the busiest rank's time per micro-batch::

    rank_time[r] = sum_{s on r} (layers[s] * layer_time + fixed_time[s])

subject to each rank's memory::

    sum_{s on r} layers[s] * act_bytes_per_layer[r] + sum_{s on r} layers[s] * state_bytes_per_layer
        + fixed_bytes[r] <= capacity_bytes

Why uneven: the first stage also runs the embedding and the last the LM head and the loss, so an
even split makes the end ranks the bottleneck; Megatron-LM therefore lets the first/last stage
take fewer layers (``--decoder-first-pipeline-num-layers`` / ``--decoder-last-pipeline-num-layers``,
Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using
Megatron-LM", SC'21, §2.2 and §3). Memory is uneven too: under 1F1B rank ``r`` of ``p`` keeps
``p - r`` micro-batches of activations in flight, so rank 0 holds the most (Narayanan et al.
2021 §2.2.1; Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
Models", §4.2) -- that is why ``act_bytes_per_layer`` is given per rank.

Modelling (style of d-krupke/cpsat-primer: data prepared before the model, a class with
variable containers, one method per constraint family, time limit / workers / seed always set,
hint from the best heuristic, status + objective + bound + gap in the result, infeasibility
explained by pre-checks):

* **Time scale.** Times are measured in units of ``layer_time / TIME_RESOLUTION``
  (``TIME_RESOLUTION = 10**6``): one layer is exactly ``10**6`` units and each rank's summed
  fixed time is rounded to the nearest unit. The scale is relative, so it works the same for
  microseconds or minutes. Rounding moves each rank's time by at most half a unit, so the
  returned split is optimal for the float objective within ``layer_time / TIME_RESOLUTION``
  (:func:`objective_tolerance`); the reported ``max_rank_time`` is recomputed from the integer
  split with the float inputs, not read off the scaled model.
* **Memory, exactly.** Every stage on rank ``r`` pays the same bytes per layer
  (``act_bytes_per_layer[r] + state_bytes_per_layer``), so the rank's memory depends only on its
  layer count ``L_r``. The data step turns the byte constraint into the integer bound
  ``L_r <= max_layers_in_memory[r]``, found with the same float formula as
  :func:`rank_memory_bytes` (so no byte scaling, no rounding: never optimistic, never
  pessimistic).
* **Variables.** ``layers[s]`` in ``[min, max]``; ``rank_layers[r] == sum of its stages``;
  ``max_time >= T * rank_layers[r] + F_r`` for every rank; minimise ``max_time``.
* **Hint.** The better (scaled objective) of :func:`even_partition` (when within the bounds and
  memory) and a greedy water-filling split, which adds one layer at a time to the rank whose time
  grows least; for this separable min-max structure water-filling is already optimal
  (Ibaraki & Katoh 1988, "Resource Allocation Problems", ch. 4), so CP-SAT mostly proves the
  bound. The CP-SAT model stays the single place to add coupled constraints (per-stage times on
  mixed GPUs, placement) later.
* **Tie-break (cheap, outside the solver).** Many splits share the optimal max; the answer is
  canonicalised to the split closest to :func:`even_partition` (L1 over ranks) whose every rank
  stays within the incumbent's scaled max time, then each rank's layers are spread evenly over
  its stages, earlier chunks first (as ``costmodel.specs.request.stage_layers`` does). This
  never raises the max and makes the answer independent of the search path.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ortools.sat.python import cp_model

from costmodel.specs.request import rank_layer_split
from solver import cpsat
from solver.cpsat import FOUND, SolveResult, Status, status_of

TIME_RESOLUTION = 10**6
"""Integer time units per ``layer_time`` in the CP-SAT model (see the module docstring)."""

GIB = float(1 << 30)



@dataclass(frozen=True)
class PartitionProblem:
    """One pipeline's layer-split problem; all times in seconds, all sizes in bytes.

    ``stage_ranks[s]`` is the rank of global stage ``s`` (model order); the ranks must be
    ``0 .. R-1`` with every rank holding at least one stage, and ``act_bytes_per_layer`` /
    ``fixed_bytes`` have one entry per rank.
    """

    num_layers: int
    stage_ranks: tuple[int, ...]
    layer_time: float
    fixed_time: tuple[float, ...]
    act_bytes_per_layer: tuple[float, ...]
    state_bytes_per_layer: float
    fixed_bytes: tuple[float, ...]
    capacity_bytes: float
    min_layers_per_stage: int = 1
    max_layers_per_stage: int | None = None

    def __post_init__(self) -> None:
        n = len(self.stage_ranks)
        if n == 0:
            raise ValueError("stage_ranks is empty: a pipeline needs at least one stage")
        if self.num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {self.num_layers}")
        n_ranks = max(self.stage_ranks) + 1
        if min(self.stage_ranks) < 0 or set(self.stage_ranks) != set(range(n_ranks)):
            raise ValueError(
                f"stage_ranks must use every rank 0..{n_ranks - 1} and no other, "
                f"got {self.stage_ranks}"
            )
        if len(self.fixed_time) != n:
            raise ValueError(f"fixed_time has {len(self.fixed_time)} entries for {n} stages")
        for name, seq in (("act_bytes_per_layer", self.act_bytes_per_layer),
                          ("fixed_bytes", self.fixed_bytes)):
            if len(seq) != n_ranks:
                raise ValueError(f"{name} has {len(seq)} entries for {n_ranks} ranks")
        values = (self.layer_time, self.state_bytes_per_layer, self.capacity_bytes,
                  *self.fixed_time, *self.act_bytes_per_layer, *self.fixed_bytes)
        if not all(math.isfinite(x) for x in values):
            raise ValueError("times and byte counts must be finite")
        if not self.layer_time > 0:
            raise ValueError(f"layer_time must be > 0 s, got {self.layer_time}")
        if min(self.fixed_time) < 0:
            raise ValueError("fixed_time entries must be >= 0")
        if (self.state_bytes_per_layer < 0 or min(self.act_bytes_per_layer) < 0
                or min(self.fixed_bytes) < 0):
            raise ValueError("byte counts must be >= 0")
        if self.min_layers_per_stage < 1:
            raise ValueError(f"min_layers_per_stage must be >= 1, got "
                             f"{self.min_layers_per_stage}")
        if (self.max_layers_per_stage is not None
                and self.max_layers_per_stage < self.min_layers_per_stage):
            raise ValueError(f"max_layers_per_stage {self.max_layers_per_stage} < "
                             f"min_layers_per_stage {self.min_layers_per_stage}")

    @property
    def n_stages(self) -> int:
        return len(self.stage_ranks)

    @property
    def n_ranks(self) -> int:
        return max(self.stage_ranks) + 1


@dataclass(frozen=True)
class PartitionResult(SolveResult):
    """``layers`` is ``None`` exactly when no split was found (infeasible or unknown).

    ``bound`` is a proven lower bound on the optimal ``max_rank_time`` in seconds (the scaled
    CP-SAT bound less the worst rounding of the fixed times); ``gap`` is
    ``(max_rank_time - bound) / max_rank_time``, 0 when proven optimal up to that rounding.
    """

    layers: tuple[int, ...] | None
    max_rank_time: float | None
    bound: float | None


# --------------------------------------------------------------------------------------------
# Evaluation helpers (float, exact inputs) shared by the data step, the result and the tests.
# --------------------------------------------------------------------------------------------


def rank_layer_counts(stage_ranks: Sequence[int], layers: Sequence[int]) -> list[int]:
    """Layers held by each rank."""
    out = [0] * (max(stage_ranks) + 1)
    for r, n in zip(stage_ranks, layers, strict=True):
        out[r] += n
    return out


def rank_times(problem: PartitionProblem, layers: Sequence[int]) -> list[float]:
    """Seconds per micro-batch of each rank: its layers × ``layer_time`` + its fixed times."""
    counts = rank_layer_counts(problem.stage_ranks, layers)
    fixed = [0.0] * problem.n_ranks
    for r, f in zip(problem.stage_ranks, problem.fixed_time, strict=True):
        fixed[r] += f
    return [c * problem.layer_time + f for c, f in zip(counts, fixed, strict=True)]


def max_rank_time(problem: PartitionProblem, layers: Sequence[int]) -> float:
    """The busiest rank's seconds per micro-batch (the objective)."""
    return max(rank_times(problem, layers))


def _memory_of(problem: PartitionProblem, rank: int, n_layers: int) -> float:
    return (n_layers * problem.act_bytes_per_layer[rank]
            + n_layers * problem.state_bytes_per_layer + problem.fixed_bytes[rank])


def rank_memory_bytes(problem: PartitionProblem, layers: Sequence[int]) -> list[float]:
    """Bytes each rank needs: ``L_r·act[r] + L_r·state + fixed[r]`` with ``L_r`` its layers."""
    counts = rank_layer_counts(problem.stage_ranks, layers)
    return [_memory_of(problem, r, c) for r, c in enumerate(counts)]


def objective_tolerance(problem: PartitionProblem) -> float:
    """How far (seconds) the returned max rank time may exceed the float optimum because the
    fixed times are rounded to ``layer_time / TIME_RESOLUTION`` in the model."""
    return problem.layer_time / TIME_RESOLUTION


def even_partition(num_layers: int, stage_ranks: Sequence[int]) -> tuple[int, ...]:
    """The even split: layers as even as possible over the ranks, the remainder to the middle
    ranks first (the end ranks carry the vocabulary layers), then each rank's layers evenly over
    its stages, earlier chunks first.

    Mirrors ``costmodel.specs.request.stage_layers`` (which uses the same
    :func:`~costmodel.specs.request.rank_layer_split`) for any placement. With fewer layers than
    stages some stages get 0 layers; the solver then does not use it as a hint.
    """
    if not stage_ranks:
        return ()
    pp = max(stage_ranks) + 1
    per_rank = rank_layer_split(num_layers, pp)
    out = [0] * len(stage_ranks)
    for r in range(pp):
        mine = [j for j, rr in enumerate(stage_ranks) if rr == r]
        if not mine:
            continue
        base, extra = divmod(per_rank[r], len(mine))
        for k, j in enumerate(mine):
            out[j] = base + (1 if k < extra else 0)
    return tuple(out)


# --------------------------------------------------------------------------------------------
# Data step: everything the model needs, as integers, before any variable exists.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PartitionData:
    num_layers: int
    stage_ranks: tuple[int, ...]
    stages_of_rank: tuple[tuple[int, ...], ...]
    stage_lo: int
    stage_hi: int
    rank_lo: tuple[int, ...]          # layers a rank must hold (its stages × min)
    rank_hi: tuple[int, ...]          # min(stages × max, what fits in memory)
    memory_cap: tuple[int, ...]       # most layers that fit in the rank's memory (<= num_layers)
    layer_units: int                  # = TIME_RESOLUTION
    fixed_units: tuple[int, ...]      # per rank, rounded
    fixed_rounding_s: float           # worst |rounded - exact| fixed time over ranks, seconds


def _memory_capacity_layers(problem: PartitionProblem, rank: int) -> int:
    """Most layers rank ``rank`` can hold within ``capacity_bytes`` (-1: not even 0 fits),
    capped at ``num_layers``; exact for the float formula of :func:`rank_memory_bytes`."""
    cap, top = problem.capacity_bytes, problem.num_layers
    if problem.fixed_bytes[rank] > cap:
        return -1
    per_layer = problem.act_bytes_per_layer[rank] + problem.state_bytes_per_layer
    if per_layer <= 0:
        return top
    k = max(0, min(top, math.floor((cap - problem.fixed_bytes[rank]) / per_layer)))
    while k > 0 and _memory_of(problem, rank, k) > cap:
        k -= 1
    while k < top and _memory_of(problem, rank, k + 1) <= cap:
        k += 1
    return k


def _gib(x: float) -> str:
    return f"{x / GIB:.2f} GiB"


def _explain_infeasible(problem: PartitionProblem) -> str | None:
    """Why no split exists, in numbers, or ``None`` when one does. These checks are complete:
    each rank's layer count ranges over ``[rank_lo, rank_hi]`` independently, so a split exists
    iff every range is non-empty and ``sum(rank_lo) <= num_layers <= sum(rank_hi)``."""
    n, lo, hi = problem.n_stages, problem.min_layers_per_stage, problem.max_layers_per_stage
    num = problem.num_layers
    if n * lo > num:
        return (f"num_layers={num} is too small for {n} stages with at least {lo} layer(s) "
                f"each: needs >= {n * lo}")
    if hi is not None and n * hi < num:
        return (f"num_layers={num} is too large for {n} stages with at most {hi} layers each: "
                f"at most {n * hi} fit")
    counts = [problem.stage_ranks.count(r) for r in range(problem.n_ranks)]
    for r in range(problem.n_ranks):
        need_layers = counts[r] * lo
        if _memory_capacity_layers(problem, r) < need_layers:
            act = problem.act_bytes_per_layer[r]
            state = problem.state_bytes_per_layer
            need = _memory_of(problem, r, need_layers)
            return (f"rank {r} needs {_gib(need)} for its minimum {need_layers} layer(s) "
                    f"({counts[r]} stage(s) × {lo}): {need_layers} × ({_gib(act)} activations "
                    f"+ {_gib(state)} weights/grads/optimizer) + {_gib(problem.fixed_bytes[r])} "
                    f"fixed; capacity {_gib(problem.capacity_bytes)}")
    fits = []
    for r in range(problem.n_ranks):
        mem = _memory_capacity_layers(problem, r)
        fits.append(mem if hi is None else min(mem, counts[r] * hi))
    if sum(fits) < num:
        worst = min(range(problem.n_ranks), key=lambda r: (fits[r], r))
        return (f"num_layers={num} do not fit: within {_gib(problem.capacity_bytes)} per rank "
                f"the ranks hold at most {sum(fits)} layers in total ({list(fits)} per rank; "
                f"tightest rank {worst}: {fits[worst]} layers = "
                f"{_gib(_memory_of(problem, worst, fits[worst]))})")
    return None


def _prepare(problem: PartitionProblem) -> _PartitionData:
    n, num = problem.n_stages, problem.num_layers
    stage_lo = problem.min_layers_per_stage
    stage_hi = num - (n - 1) * stage_lo
    if problem.max_layers_per_stage is not None:
        stage_hi = min(stage_hi, problem.max_layers_per_stage)
    stages_of_rank = tuple(
        tuple(s for s, r in enumerate(problem.stage_ranks) if r == rank)
        for rank in range(problem.n_ranks)
    )
    memory_cap = tuple(_memory_capacity_layers(problem, r) for r in range(problem.n_ranks))
    rank_lo = tuple(len(st) * stage_lo for st in stages_of_rank)
    rank_hi = tuple(min(len(st) * stage_hi, memory_cap[r], num)
                    for r, st in enumerate(stages_of_rank))
    fixed_s = [math.fsum(problem.fixed_time[s] for s in st) for st in stages_of_rank]
    fixed_units = tuple(round(f / problem.layer_time * TIME_RESOLUTION) for f in fixed_s)
    rounding = max(abs(u / TIME_RESOLUTION * problem.layer_time - f)
                   for u, f in zip(fixed_units, fixed_s, strict=True))
    return _PartitionData(
        num_layers=num, stage_ranks=problem.stage_ranks, stages_of_rank=stages_of_rank,
        stage_lo=stage_lo, stage_hi=stage_hi, rank_lo=rank_lo, rank_hi=rank_hi,
        memory_cap=memory_cap, layer_units=TIME_RESOLUTION, fixed_units=fixed_units,
        fixed_rounding_s=rounding,
    )


def _scaled_max(data: _PartitionData, rank_layers: Sequence[int]) -> int:
    return max(data.layer_units * c + f
               for c, f in zip(rank_layers, data.fixed_units, strict=True))


def _middle_first(n_ranks: int) -> list[int]:
    return sorted(range(n_ranks), key=lambda i: (abs(i - (n_ranks - 1) / 2), i))


def _water_fill(data: _PartitionData) -> list[int]:
    """Greedy rank layer counts: start at each rank's minimum, add one layer at a time to the
    rank whose time after the addition is smallest (ties: middle ranks first). Needs a feasible
    problem (``sum(rank_lo) <= num_layers <= sum(rank_hi)``)."""
    counts = list(data.rank_lo)
    order = {r: i for i, r in enumerate(_middle_first(len(counts)))}
    for _ in range(data.num_layers - sum(counts)):
        r = min((r for r in range(len(counts)) if counts[r] < data.rank_hi[r]),
                key=lambda r: (data.layer_units * (counts[r] + 1) + data.fixed_units[r],
                               order[r]))
        counts[r] += 1
    return counts


def _spread_over_stages(data: _PartitionData, rank_layers: Sequence[int]) -> tuple[int, ...]:
    """Each rank's layers evenly over its stages, earlier chunks first (within [lo, hi] since
    ``len(stages) * lo <= rank_layers[r] <= len(stages) * hi``)."""
    out = [0] * len(data.stage_ranks)
    for r, stages in enumerate(data.stages_of_rank):
        base, extra = divmod(rank_layers[r], len(stages))
        for k, s in enumerate(stages):
            out[s] = base + (1 if k < extra else 0)
    return tuple(out)


def _closest_to_even(data: _PartitionData, max_units: int) -> list[int]:
    """Rank layer counts with every rank's scaled time <= ``max_units``, closest (L1) to the
    even split. Start from the even counts clamped into each rank's range; every further layer
    moved then costs exactly 1, so any completion is L1-optimal: add to the rank that would be
    least busy, remove from the busiest (ties: middle ranks first / last)."""
    n_ranks = len(data.rank_lo)
    even = rank_layer_split(data.num_layers, n_ranks)
    hi = [min(data.rank_hi[r], (max_units - data.fixed_units[r]) // data.layer_units)
          for r in range(n_ranks)]
    counts = [min(max(even[r], data.rank_lo[r]), hi[r]) for r in range(n_ranks)]
    order = {r: i for i, r in enumerate(_middle_first(n_ranks))}
    while sum(counts) < data.num_layers:
        r = min((r for r in range(n_ranks) if counts[r] < hi[r]),
                key=lambda r: (data.layer_units * (counts[r] + 1) + data.fixed_units[r],
                               order[r]))
        counts[r] += 1
    while sum(counts) > data.num_layers:
        r = max((r for r in range(n_ranks) if counts[r] > data.rank_lo[r]),
                key=lambda r: (data.layer_units * counts[r] + data.fixed_units[r], order[r]))
        counts[r] -= 1
    return counts


# --------------------------------------------------------------------------------------------
# The CP-SAT model.
# --------------------------------------------------------------------------------------------


class PartitionModel:
    """CP-SAT model of the partition; variables are public containers:

    * ``layers[s]``: layers of global stage ``s``;
    * ``rank_layers[r]``: layers held by rank ``r``;
    * ``max_time``: the busiest rank's scaled time (the objective).
    """

    def __init__(self, data: _PartitionData) -> None:
        self.data = data
        self.model = cp_model.CpModel()
        self.layers = [self.model.new_int_var(data.stage_lo, data.stage_hi, f"layers_{s}")
                       for s in range(len(data.stage_ranks))]
        self.rank_layers = [self.model.new_int_var(data.rank_lo[r], data.rank_hi[r],
                                                   f"rank_layers_{r}")
                            for r in range(len(data.rank_lo))]
        lo = max(data.layer_units * a + f
                 for a, f in zip(data.rank_lo, data.fixed_units, strict=True))
        hi = max(data.layer_units * b + f
                 for b, f in zip(data.rank_hi, data.fixed_units, strict=True))
        self.max_time = self.model.new_int_var(lo, max(lo, hi), "max_time")
        self._add_layer_total_constraint()
        self._add_rank_sum_constraints()
        self._add_memory_constraints()
        self._add_max_time_constraints()
        self.model.minimize(self.max_time)

    def _add_layer_total_constraint(self) -> None:
        """Every layer is placed exactly once."""
        self.model.add(sum(self.layers) == self.data.num_layers)

    def _add_rank_sum_constraints(self) -> None:
        """A rank holds the layers of all its stages (loop / V placements: several)."""
        for r, stages in enumerate(self.data.stages_of_rank):
            self.model.add(self.rank_layers[r] == sum(self.layers[s] for s in stages))

    def _add_memory_constraints(self) -> None:
        """Per-rank memory, as the exact layer bound from the data step (bytes are linear in
        the rank's layer count with one coefficient per rank)."""
        for r, cap in enumerate(self.data.memory_cap):
            self.model.add(self.rank_layers[r] <= cap)

    def _add_max_time_constraints(self) -> None:
        """``max_time`` is at least every rank's scaled time; minimised, it equals the max."""
        for r, rl in enumerate(self.rank_layers):
            self.model.add(self.max_time >= self.data.layer_units * rl
                           + self.data.fixed_units[r])

    def add_hint(self, layers: Sequence[int]) -> None:
        counts = rank_layer_counts(self.data.stage_ranks, layers)
        for var, value in zip(self.layers, layers, strict=True):
            self.model.add_hint(var, value)
        for var, value in zip(self.rank_layers, counts, strict=True):
            self.model.add_hint(var, value)
        self.model.add_hint(self.max_time, _scaled_max(self.data, counts))

    def solve(self, time_limit_s: float, seed: int,
              num_workers: int) -> tuple[cp_model.CpSolver, cp_model.CpSolverStatus]:
        return cpsat.solve(self.model, time_limit_s=time_limit_s, seed=seed,
                           num_workers=num_workers)


def _heuristic_hint(problem: PartitionProblem, data: _PartitionData) -> tuple[int, ...]:
    """The better of the even split (when it respects the bounds and memory) and water-filling."""
    best = _spread_over_stages(data, _water_fill(data))
    even = even_partition(problem.num_layers, problem.stage_ranks)
    counts = rank_layer_counts(problem.stage_ranks, even)
    if (all(data.stage_lo <= x <= data.stage_hi for x in even)
            and all(c <= cap for c, cap in zip(counts, data.memory_cap, strict=True))
            and _scaled_max(data, counts)
            < _scaled_max(data, rank_layer_counts(problem.stage_ranks, best))):
        return even
    return best


def _result(problem: PartitionProblem, data: _PartitionData, layers: tuple[int, ...],
            status: Status, bound_units: float, wall: float) -> PartitionResult:
    objective = max_rank_time(problem, layers)
    # float lower bound: scaled bound in seconds, less the worst rounding of a rank's fixed time
    bound = max(0.0, bound_units / TIME_RESOLUTION * problem.layer_time - data.fixed_rounding_s)
    bound = min(bound, objective)
    gap = (objective - bound) / objective if objective > 0 else 0.0
    return PartitionResult(layers=layers, max_rank_time=objective, status=status, bound=bound,
                           gap=gap, explanation=None, wall_time_s=wall)


def solve_partition(problem: PartitionProblem, time_limit_s: float = 2.0, seed: int = 0,
                    num_workers: int = 1) -> PartitionResult:
    """Optimal (or best found within ``time_limit_s``) layer split; see the module docstring.

    Infeasible inputs are answered without building the model, with the reason in
    ``explanation``. If CP-SAT stops before its first solution (status UNKNOWN) the heuristic
    split is returned as ``"feasible"`` with the trivial bound (each rank at its minimum).
    """
    start = time.perf_counter()
    why = _explain_infeasible(problem)
    if why is not None:
        return PartitionResult(layers=None, max_rank_time=None, status="infeasible", bound=None,
                               gap=None, explanation=why,
                               wall_time_s=time.perf_counter() - start)
    data = _prepare(problem)
    hint = _heuristic_hint(problem, data)
    pm = PartitionModel(data)
    pm.add_hint(hint)
    solver, code = pm.solve(time_limit_s, seed, num_workers)
    status = status_of(code, pm.model, "partition")

    if status in FOUND:
        incumbent = [int(solver.value(v)) for v in pm.rank_layers]
        counts = _closest_to_even(data, _scaled_max(data, incumbent))
        layers = _spread_over_stages(data, counts)
        return _result(problem, data, layers, status, solver.best_objective_bound,
                       time.perf_counter() - start)
    if status == "infeasible":  # the pre-checks are complete: this would be a bug
        return PartitionResult(layers=None, max_rank_time=None, status="infeasible", bound=None,
                               gap=None, explanation="CP-SAT proved the model infeasible although"
                               " the layer-count and memory pre-checks passed",
                               wall_time_s=time.perf_counter() - start)
    # UNKNOWN: no solution within the time limit; the hint is feasible by construction
    trivial = max(data.layer_units * a + f
                  for a, f in zip(data.rank_lo, data.fixed_units, strict=True))
    return _result(problem, data, hint, "feasible", float(trivial),
                   time.perf_counter() - start)
