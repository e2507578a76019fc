"""CP-SAT synthesis of a pipeline schedule for the actual stage times and memory limits.

Given per-stage forward / input-gradient / weight-gradient times (unequal: mixed GPUs, uneven
layer splits, the vocabulary layers on the end stages), the send/recv latency per stage
boundary, the placement of stages on pipeline ranks, the number of micro-batches and a limit
per rank on in-flight activations, find the order of compute actions on every rank that
minimises the step time (makespan). The answer is a per-rank action order in torch's terms
(:class:`costmodel.pipeline.schedules.Action`), which ``torch.distributed.pipelining`` can run
as a custom schedule, re-simulated with costmodel's float simulator.

Problem
-------
Each micro-batch ``j`` is a chain ``F(0,j) → F(1,j) → … → F(S-1,j) → I(S-1,j) → … → I(0,j)``
with ``W(s,j)`` after ``I(s,j)`` (split backward, as in the zero-bubble schedules of Qi et al.
2024, "Zero Bubble Pipeline Parallelism", ICLR, §2), or with a full backward ``B = I + W`` in
place of ``I`` when the backward may not be split. The p2p latency of boundary ``s`` is paid on
``F(s) → F(s+1)`` and ``I(s+1) → I(s)`` when the two stages sit on different ranks; this is the
timing model of :mod:`costmodel.pipeline.simulator`. A rank runs one action at a time. The
in-flight activations of a rank are the ``(stage, mb)`` of its stages whose ``F`` has ended and
whose ``W`` (``B``) has not: the simulator's ``peak_inflight``, the count the cost model
multiplies by the per-micro-batch activation bytes.

Model (house style of d-krupke/cpsat-primer: data prepared before the model, a class with
variable containers, one method per constraint family, time limit, workers and seed always
set, a hint from the best heuristic, status / objective / bound / gap in the result,
infeasibility explained)
---------------------------------------------------------------------------------------------
* **Time grid.** Times are integers in units of ``unit = max action time / resolution``
  (``resolution`` = :data:`DEFAULT_RESOLUTION`). Durations and latencies are rounded *down*
  (an action keeps at least one unit, so that the ends of one rank's actions are distinct).
  Rounding down makes the integer model a relaxation of the float one except for the actions
  raised to one unit; their total excess ``excess_s`` is subtracted from the bound, so
  ``bound_s = bound_units · unit − excess_s`` is a proven lower bound on the float optimum.
  The step time, bubble and peak reported are those of the extracted order re-simulated with
  the float times (:func:`costmodel.pipeline.simulator.simulate`), never the grid's.
* **Variables.** One fixed-size interval per action; a makespan variable (the objective).
* **Constraints.** No overlap per rank; the forward chain and the backward chain with their
  latencies; ``W`` after ``I``; the per-rank in-flight limit; micro-batch order per stage and
  kind (symmetry breaking, below).
* **In-flight limit.** On a rank with one stage, with the order below the limit ``L`` is the
  precedence ``start F(s, j+L) ≥ end W(s, j)`` (``B`` for a full backward): when ``F(s, j+L)``
  ends, ``j+L+1`` forwards have ended, so at most ``L`` may be alive iff ``W(s, j)`` has ended,
  and it cannot run during ``F(s, j+L)`` on the same rank. On a rank with several stages
  (V or loop placement) each ``(stage, mb)`` gets an "alive" interval from the end of its
  ``F`` to the end of its ``W`` (``B``), and a cumulative constraint keeps at most ``L`` of
  them overlapping. Ends on one rank are distinct (positive durations, no overlap), so the
  number alive just after each end is the simulator's running count in rank order. (A
  reservoir constraint over the same ends is equivalent; in our measurements CP-SAT often
  failed to complete the hint with it on V placements, and did not with the cumulative.)
* **Symmetry breaking (without loss of optimality).** The micro-batches of a stage run their
  ``F`` in micro-batch order, and so do their ``I`` (``B``) and their ``W``. Why this loses
  nothing: take any feasible schedule and, for every (stage, kind), hand the sorted start times
  of that (stage, kind) to micro-batches ``0, 1, …, m-1`` in order. Every action keeps its
  duration (all micro-batches of a stage are alike), so the set of busy intervals of each rank,
  hence no-overlap and the makespan, are unchanged. Every precedence is between two actions of
  the *same* micro-batch, ``x_j ≥ y_j + c`` for all ``j``, and sorting both sides keeps it
  (if ``x_j ≥ y_j + c`` for every ``j`` then the k-th smallest ``x`` is at least the k-th
  smallest ``y`` plus ``c``). The in-flight count of a rank at any time is the number of ``F``
  ends minus the number of ``W``/``B`` ends up to then, which depends on the end times only, not
  on which micro-batch owns them. So the relabelled schedule is feasible and as good.
* **Hint.** The best named torch schedule valid for the placement (and for the backward kind)
  whose simulated peak stays within the limit, simulated on the grid, and a greedy
  in-flight-aware list schedule (:func:`greedy_schedule`, the best of its tie rules). The
  better of the two (on the grid) is the hint, and its makespan caps the horizon.
* **Never worse.** The extracted order is re-simulated with the float times; when it is not
  faster than the best named schedule within the limit, that named schedule is returned
  instead (``source = "named"``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ortools.sat.python import cp_model

from costmodel.pipeline.schedules import (
    SCHEDULES,
    Action,
    ScheduleError,
    raw_schedule,
    stage_to_rank,
    validate_schedule,
)
from costmodel.pipeline.simulator import SimResult, simulate, simulate_named
from solver import cpsat
from solver.cpsat import FOUND, SolveResult, status_of

__all__ = [
    "DEFAULT_RESOLUTION",
    "GREEDY_PRIORITIES",
    "NamedOutcome",
    "ScheduleModel",
    "SynthesisProblem",
    "SynthesisResult",
    "greedy_schedule",
    "named_schedules_for",
    "synthesize_schedule",
]

DEFAULT_RESOLUTION = 1000
"""Grid units per the longest action (see the module docstring: the rounding is accounted for
in the bound and the reported times come from the float simulator)."""

GREEDY_SHARE = 0.3
"""After this share of the time limit no further greedy tie rule is tried (the first always
runs); the rest of the time is CP-SAT's."""

Op = tuple[str, int, int]
"""(kind, stage, micro-batch) of an action in the model."""


# --------------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthesisProblem:
    """One schedule-synthesis problem; times in seconds.

    * ``t_f``, ``t_i``, ``t_w``: per global stage (model order) forward, input-gradient and
      weight-gradient time of one micro-batch (a full backward takes ``t_i + t_w``).
    * ``p2p``: send/recv latency per stage boundary (``len = n_stages - 1``), paid only between
      stages on different ranks.
    * ``stage_ranks[s]``: rank of global stage ``s``; ranks ``0..R-1`` all used (one stage per
      rank, or V / loop placements with several).
    * ``max_inflight``: per rank, the most ``(stage, mb)`` activations it may hold (the
      simulator's ``peak_inflight``); ``None`` = no limit.
    * ``split_backward``: whether ``I`` and ``W`` may run apart (zero-bubble style); when
      false every backward is one ``B``.
    """

    t_f: tuple[float, ...]
    t_i: tuple[float, ...]
    t_w: tuple[float, ...]
    p2p: tuple[float, ...]
    stage_ranks: tuple[int, ...]
    n_microbatches: int
    max_inflight: tuple[int, ...] | None = None
    split_backward: bool = True

    def __post_init__(self) -> None:
        n = len(self.stage_ranks)
        if n == 0:
            raise ValueError("stage_ranks is empty: a pipeline needs at least one stage")
        for name in ("t_f", "t_i", "t_w"):
            seq = getattr(self, name)
            if len(seq) != n:
                raise ValueError(f"{name} has {len(seq)} entries for {n} stages")
            if not all(math.isfinite(x) and x >= 0 for x in seq):
                raise ValueError(f"{name} entries must be finite and >= 0")
        if len(self.p2p) != n - 1:
            raise ValueError(f"p2p has {len(self.p2p)} entries for {n - 1} stage boundaries")
        if not all(math.isfinite(x) and x >= 0 for x in self.p2p):
            raise ValueError("p2p entries must be finite and >= 0")
        n_ranks = max(self.stage_ranks) + 1
        if min(self.stage_ranks) < 0 or set(self.stage_ranks) != set(range(n_ranks)):
            raise ValueError(f"stage_ranks must use every rank 0..{n_ranks - 1} and no other, "
                             f"got {self.stage_ranks}")
        if self.n_microbatches < 1:
            raise ValueError(f"n_microbatches must be >= 1, got {self.n_microbatches}")
        if self.max_inflight is not None:
            if len(self.max_inflight) != n_ranks:
                raise ValueError(f"max_inflight has {len(self.max_inflight)} entries for "
                                 f"{n_ranks} ranks")
            if min(self.max_inflight) < 0:
                raise ValueError("max_inflight entries must be >= 0")
        if max(max(self.t_f), max(self.t_i) + max(self.t_w)) <= 0:
            raise ValueError("all action times are 0: nothing to schedule")

    @property
    def n_stages(self) -> int:
        return len(self.stage_ranks)

    @property
    def n_ranks(self) -> int:
        return max(self.stage_ranks) + 1

    def limits(self) -> tuple[int, ...]:
        """Per-rank in-flight limit, ``max_inflight`` or the trivial one (all its actions)."""
        if self.max_inflight is not None:
            return self.max_inflight
        counts = [self.stage_ranks.count(r) for r in range(self.n_ranks)]
        return tuple(c * self.n_microbatches for c in counts)

    def simulate(self, actions: Sequence[Sequence[Action]]) -> SimResult:
        """The float simulation of ``actions`` with this problem's times."""
        return simulate(actions, list(self.stage_ranks), self.t_f, self.t_i, self.t_w,
                        list(self.p2p) if self.p2p else 0.0)


# --------------------------------------------------------------------------------------------
# Named schedules of a placement
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamedOutcome:
    """A named torch schedule simulated on the problem: its step time, bubble fraction and
    per-rank peak in-flight, and whether it keeps within the limit."""

    name: str
    virtual_stages: int
    step_time: float
    bubble_fraction: float
    peak_inflight: tuple[int, ...]
    within_limit: bool

    @property
    def label(self) -> str:
        return self.name if self.virtual_stages == 1 else f"{self.name}×{self.virtual_stages}"


def named_schedules_for(problem: SynthesisProblem) -> list[NamedOutcome]:
    """Every named torch schedule that runs the problem's placement and micro-batch count
    (torch's own rules, :func:`costmodel.pipeline.schedules.raw_schedule`), and, without a
    split backward, has no ``I``/``W`` actions; each simulated on the problem."""
    pp, n_st, m = problem.n_ranks, problem.n_stages, problem.n_microbatches
    if n_st % pp:
        return []
    v = n_st // pp
    limits = problem.limits()
    out: list[NamedOutcome] = []
    for name in SCHEDULES:
        try:
            if tuple(stage_to_rank(name, pp, v)) != problem.stage_ranks:
                continue
            raw = raw_schedule(name, pp, m, v)
        except ScheduleError:
            continue
        if not problem.split_backward and any(a[2] in "IW" for r in raw for a in r):
            continue
        sim = simulate_named(name, pp, m, v, problem.t_f, problem.t_i, problem.t_w,
                             list(problem.p2p) if problem.p2p else 0.0)
        peak = tuple(int(x) for x in sim.peak_inflight)
        out.append(NamedOutcome(name, v, sim.step_time, sim.bubble_fraction, peak,
                                all(p <= lim for p, lim in zip(peak, limits, strict=True))))
    return out


# --------------------------------------------------------------------------------------------
# Greedy heuristic (a second hint, and the hint when no named schedule fits the limit)
# --------------------------------------------------------------------------------------------


GREEDY_PRIORITIES = ("backward", "alternate", "forward")
"""Tie rules of the greedy when a backward and a forward are both ready: backward first
(shortest path to freeing memory), alternate (1F1B's steady state: the other kind than the
rank's last), forward first (fill the pipeline)."""


def greedy_schedule(problem: SynthesisProblem, priority: str = "backward"
                    ) -> list[list[Action]] | None:
    """A list schedule: whenever a rank is free it runs, among the actions whose inputs have
    arrived, a backward (``I``/``B``, latest stage first) or a forward if the in-flight limit
    allows it (which of the two when both are ready: ``priority``, one of
    :data:`GREEDY_PRIORITIES`), else a pending ``W``
    (filling what would be a bubble, as the zero-bubble schedules do); otherwise it waits for
    the next arrival. A micro-batch enters a rank (its first stage there) only when the limit
    leaves room for all of the rank's stages it will pass through, and a later stage of a
    micro-batch already in needs one free slot: so the rank can always take the next stage of
    the micro-batches it holds, and V / loop placements do not deadlock on memory. Returns
    ``None`` when a limit is below the rank's number of stages (no schedule exists) or if the
    greedy gets stuck."""
    n_st, m, pp = problem.n_stages, problem.n_microbatches, problem.n_ranks
    sr = problem.stage_ranks
    split = problem.split_backward
    limits = problem.limits()
    stages_of = [[s for s in range(n_st) if sr[s] == r] for r in range(pp)]
    if any(limits[r] < len(stages_of[r]) for r in range(pp)):
        return None
    tf, ti, tw = problem.t_f, problem.t_i, problem.t_w
    lat = [problem.p2p[s] if sr[s] != sr[s + 1] else 0.0 for s in range(n_st - 1)]
    back = "I" if split else "B"
    f_end = [[math.inf] * m for _ in range(n_st)]
    b_end = [[math.inf] * m for _ in range(n_st)]
    next_f = [0] * n_st
    next_b = [0] * n_st
    pending_w: list[list[int]] = [[] for _ in range(n_st)]
    first_stage = [st[0] for st in stages_of]  # a micro-batch enters rank r at this stage
    held = [0] * pp  # activations in flight on each rank
    last_f = [False] * pp  # whether the rank's last action was a forward
    free = [0.0] * pp
    out: list[list[Action]] = [[] for _ in range(pp)]
    total = n_st * m * (3 if split else 2)
    for _ in range(total):
        # the rank that can start something earliest goes next (ties: lowest rank)
        best: tuple[float, int, str, int] | None = None
        for r in range(pp):
            first = {"backward": "B", "forward": "F"}.get(priority) or (
                "B" if last_f[r] else "F")
            cand = _greedy_pick(r, stages_of[r], free[r], f_end, b_end, next_f, next_b,
                                pending_w, held, limits, first_stage, lat, m, n_st, back, first)
            if cand is not None and (best is None or cand[0] < best[0]):
                best = (cand[0], r, cand[1], cand[2])
        if best is None:
            return None
        t, r, kind, s = best
        if kind == "F":
            j = next_f[s]
            next_f[s] += 1
            f_end[s][j] = t + tf[s]
            free[r] = f_end[s][j]
            held[r] += 1
        elif kind in "IB":
            j = next_b[s]
            next_b[s] += 1
            b_end[s][j] = t + (ti[s] if kind == "I" else ti[s] + tw[s])
            free[r] = b_end[s][j]
            if kind == "I":
                pending_w[s].append(j)
            else:
                held[r] -= 1
        else:  # W
            j = pending_w[s].pop(0)
            free[r] = t + tw[s]
            held[r] -= 1
        out[r].append(Action(s, j, kind))
        if kind != "W":
            last_f[r] = kind == "F"
    return out


def _greedy_pick(r: int, stages: list[int], t_free: float, f_end: list[list[float]],
                 b_end: list[list[float]], next_f: list[int], next_b: list[int],
                 pending_w: list[list[int]], held: list[int], limits: tuple[int, ...],
                 first_stage: list[int], lat: list[float], m: int, n_st: int,
                 back: str, first: str) -> tuple[float, str, int] | None:
    """The action rank ``r`` runs next and when: ``(start, kind, stage)`` or ``None``."""
    ready_b: list[tuple[float, int, int]] = []  # (arrival, -stage, stage)
    for s in stages:
        j = next_b[s]
        if j < m and f_end[s][j] < math.inf:
            arr = f_end[s][j] if s == n_st - 1 else b_end[s + 1][j] + lat[s]
            if arr < math.inf:
                ready_b.append((max(arr, f_end[s][j]), -s, s))
    ready_f: list[tuple[float, int, int]] = []
    for s in stages:
        j = next_f[s]
        if j >= m:
            continue
        # a new micro-batch enters only with room for all its stages here; a later stage of
        # one already in needs one slot
        need = len(stages) if s == first_stage[r] else 1
        if held[r] + need > limits[r]:
            continue
        arr = 0.0 if s == 0 else f_end[s - 1][j] + lat[s - 1]
        if arr < math.inf:
            ready_f.append((arr, s, s))
    has_w = [s for s in stages if pending_w[s]]
    now_b = [x for x in ready_b if x[0] <= t_free]
    now_f = [x for x in ready_f if x[0] <= t_free]
    if now_b and (first == "B" or not now_f):
        return t_free, back, min(now_b, key=lambda x: (x[1], x[0]))[2]
    if now_f:
        return t_free, "F", min(now_f, key=lambda x: (x[0], x[1]))[2]
    if has_w:
        return t_free, "W", has_w[-1]
    nxt = sorted(ready_b + ready_f)
    if not nxt:
        return None
    arr, _, s = nxt[0]
    kind = back if any(x[2] == s and x[0] == arr for x in ready_b) else "F"
    return arr, kind, s


# --------------------------------------------------------------------------------------------
# Data step
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SynthesisData:
    n_stages: int
    n_ranks: int
    m: int
    split: bool
    stage_ranks: tuple[int, ...]
    stages_of_rank: tuple[tuple[int, ...], ...]
    unit: float
    d_f: tuple[int, ...]
    d_i: tuple[int, ...]   # the backward op's duration: I (split) or B = I + W (full)
    d_w: tuple[int, ...]
    lat: tuple[int, ...]   # per boundary, 0 between stages on one rank
    limit: tuple[int, ...]
    excess_s: float
    horizon: int

    @property
    def makespan_floor(self) -> int:
        """No rank finishes before its first action can start plus all its work: the first
        forward of a rank waits for the forward chain of the stages before its first stage
        (a one-machine bound, redundant but it gives CP-SAT a useful bound at once)."""
        head = [0] * self.n_stages
        for s in range(1, self.n_stages):
            head[s] = head[s - 1] + self.d_f[s - 1] + self.lat[s - 1]
        out = 0
        for stages in self.stages_of_rank:
            work = self.m * sum(self.d_f[s] + self.d_i[s] + self.d_w[s] for s in stages)
            out = max(out, min(head[s] for s in stages) + work)
        return out

    @property
    def back(self) -> str:
        return "I" if self.split else "B"

    @property
    def release(self) -> str:
        """The action whose end frees an activation: ``W``, or ``B`` without a split."""
        return "W" if self.split else "B"

    def ops_of_rank(self, r: int) -> list[Op]:
        kinds = ("F", "I", "W") if self.split else ("F", "B")
        return [(k, s, j) for s in self.stages_of_rank[r] for k in kinds for j in range(self.m)]

    def duration(self, op: Op) -> int:
        k, s, _ = op
        return self.d_f[s] if k == "F" else self.d_w[s] if k == "W" else self.d_i[s]


def _grid(problem: SynthesisProblem, resolution: int) -> tuple[float, list[int], list[int],
                                                               list[int], list[int], float]:
    """The grid unit, the floored durations (at least one unit) and latencies, and the total
    excess of the actions raised to one unit (seconds, all actions of the schedule)."""
    split = problem.split_backward
    back = [a + (0.0 if split else b) for a, b in zip(problem.t_i, problem.t_w, strict=True)]
    longest = max(max(problem.t_f), max(back), max(problem.t_w) if split else 0.0)
    unit = longest / resolution
    m = problem.n_microbatches
    excess = 0.0

    def grid(values: Sequence[float]) -> list[int]:
        nonlocal excess
        out = []
        for x in values:
            k = math.floor(x / unit + 1e-9)
            if k < 1:
                excess += (unit - x) * m
                k = 1
            out.append(k)
        return out

    d_f, d_i = grid(problem.t_f), grid(back)
    d_w = grid(problem.t_w) if split else [0] * problem.n_stages
    lat = [math.floor(x / unit + 1e-9) for x in problem.p2p]
    return unit, d_f, d_i, d_w, lat, excess


def _prepare(problem: SynthesisProblem, resolution: int, horizon: int) -> _SynthesisData:
    unit, d_f, d_i, d_w, lat, excess = _grid(problem, resolution)
    sr = problem.stage_ranks
    lat_cross = tuple(lat[s] if sr[s] != sr[s + 1] else 0 for s in range(problem.n_stages - 1))
    stages_of = tuple(tuple(s for s in range(problem.n_stages) if sr[s] == r)
                      for r in range(problem.n_ranks))
    return _SynthesisData(
        n_stages=problem.n_stages, n_ranks=problem.n_ranks, m=problem.n_microbatches,
        split=problem.split_backward, stage_ranks=sr, stages_of_rank=stages_of, unit=unit,
        d_f=tuple(d_f), d_i=tuple(d_i), d_w=tuple(d_w), lat=lat_cross,
        limit=problem.limits(), excess_s=excess, horizon=horizon)


def _grid_problem(problem: SynthesisProblem, resolution: int) -> SynthesisProblem:
    """The problem with its times on the grid (in units), for simulating hints exactly."""
    unit, d_f, d_i, d_w, lat, _ = _grid(problem, resolution)
    del unit
    if problem.split_backward:
        t_i = [float(x) for x in d_i]
        t_w = [float(x) for x in d_w]
    else:  # B = I + W on the grid: put the whole backward on I
        t_i = [float(x) for x in d_i]
        t_w = [0.0] * problem.n_stages
    return SynthesisProblem(
        t_f=tuple(float(x) for x in d_f), t_i=tuple(t_i), t_w=tuple(t_w),
        p2p=tuple(float(x) for x in lat), stage_ranks=problem.stage_ranks,
        n_microbatches=problem.n_microbatches, max_inflight=problem.max_inflight,
        split_backward=problem.split_backward)


def _explain_infeasible(problem: SynthesisProblem) -> str | None:
    """Why no schedule exists, or ``None``. A micro-batch holds its activation on every stage
    of a rank from that stage's ``F`` until its ``W`` (``B``), and the backward of an earlier
    stage waits for that of the later ones, so a rank with ``k`` stages needs a limit of at
    least ``k``; with that much, one micro-batch at a time through the whole pipeline is a
    valid schedule, so the check is complete."""
    limits = problem.limits()
    for r in range(problem.n_ranks):
        k = problem.stage_ranks.count(r)
        if limits[r] < k:
            return (f"rank {r} holds {k} stage(s): one micro-batch keeps {k} activation(s) in "
                    f"flight on it, above its limit max_inflight[{r}]={limits[r]}")
    return None


# --------------------------------------------------------------------------------------------
# Hints
# --------------------------------------------------------------------------------------------


def _hint_starts(data: _SynthesisData, grid_problem: SynthesisProblem,
                 actions: Sequence[Sequence[Action]]) -> tuple[dict[Op, int], int] | None:
    """Grid start times of a schedule, relabelled so that every (stage, kind) runs its
    micro-batches in order (the symmetry breaking; feasible by the argument in the module
    docstring). A full ``B`` in a split model becomes ``I`` then ``W`` back to back. Returns
    ``(starts, makespan)`` or ``None`` if the schedule does not run."""
    try:
        sim = grid_problem.simulate(actions)
    except ScheduleError:
        return None
    tl = sim.timeline
    by: dict[tuple[str, int], list[int]] = {}
    for k, s, st in zip(tl.kind.tolist(), tl.stage.tolist(), tl.start.tolist(), strict=True):
        kind = "FBIW"[k]
        t = round(st)
        if data.split and kind == "B":
            by.setdefault(("I", s), []).append(t)
            by.setdefault(("W", s), []).append(t + data.d_i[s])
        elif not data.split and kind in "IW":
            return None
        else:
            by.setdefault((kind, s), []).append(t)
    starts: dict[Op, int] = {}
    for (kind, s), times in by.items():
        for j, t in enumerate(sorted(times)):
            starts[(kind, s, j)] = t
    return starts, round(sim.step_time)


# --------------------------------------------------------------------------------------------
# The CP-SAT model
# --------------------------------------------------------------------------------------------


class ScheduleModel:
    """CP-SAT model of the schedule; variables are public containers:

    * ``start[op]``, ``interval[op]`` for every action ``op = (kind, stage, mb)``
      (kinds ``F``, ``I``, ``W`` with a split backward; ``F``, ``B`` without);
    * ``alive_size[(stage, mb)]``: length of the activation's alive interval, on ranks with
      several stages only;
    * ``makespan``: the end of the last action (the objective).
    """

    def __init__(self, data: _SynthesisData) -> None:
        self.data = data
        self.model = cp_model.CpModel()
        self.start: dict[Op, cp_model.IntVar] = {}
        self.interval: dict[Op, cp_model.IntervalVar] = {}
        self.alive_size: dict[tuple[int, int], cp_model.IntVar] = {}
        self.makespan = self.model.new_int_var(min(data.makespan_floor, data.horizon),
                                               data.horizon, "makespan")
        self._add_intervals()
        self._add_no_overlap_per_rank()
        self._add_forward_chain()
        self._add_backward_chain()
        self._add_weight_after_input()
        self._add_microbatch_order()
        self._add_inflight_limit()
        self._add_makespan()
        self.model.minimize(self.makespan)

    def end(self, op: Op) -> cp_model.LinearExprT:
        return self.start[op] + self.data.duration(op)

    def _add_intervals(self) -> None:
        d = self.data
        for r in range(d.n_ranks):
            for op in d.ops_of_rank(r):
                dur = d.duration(op)
                var = self.model.new_int_var(0, max(0, d.horizon - dur),
                                             f"s_{op[0]}{op[1]}_{op[2]}")
                self.start[op] = var
                self.interval[op] = self.model.new_fixed_size_interval_var(
                    var, dur, f"i_{op[0]}{op[1]}_{op[2]}")

    def _add_no_overlap_per_rank(self) -> None:
        """A rank runs one action at a time."""
        d = self.data
        for r in range(d.n_ranks):
            self.model.add_no_overlap([self.interval[op] for op in d.ops_of_rank(r)])

    def _add_forward_chain(self) -> None:
        """``F(s+1, j)`` after ``F(s, j)`` and the boundary's latency."""
        d = self.data
        for s in range(d.n_stages - 1):
            for j in range(d.m):
                self.model.add(self.start[("F", s + 1, j)]
                               >= self.end(("F", s, j)) + d.lat[s])

    def _add_backward_chain(self) -> None:
        """The last stage's backward after its forward; ``I/B(s, j)`` after ``I/B(s+1, j)``
        and the latency. (``I/B(s, j)`` after ``F(s, j)`` follows through the chains.)"""
        d = self.data
        b, last = d.back, d.n_stages - 1
        for j in range(d.m):
            self.model.add(self.start[(b, last, j)] >= self.end(("F", last, j)))
            for s in range(last):
                self.model.add(self.start[(b, s, j)] >= self.end((b, s + 1, j)) + d.lat[s])

    def _add_weight_after_input(self) -> None:
        """``W(s, j)`` after ``I(s, j)`` (split backward only)."""
        d = self.data
        if not d.split:
            return
        for s in range(d.n_stages):
            for j in range(d.m):
                self.model.add(self.start[("W", s, j)] >= self.end(("I", s, j)))

    def _add_microbatch_order(self) -> None:
        """Symmetry breaking: each (stage, kind) runs its micro-batches in order (WLOG, see the
        module docstring). One rank, one duration: the next starts after the previous ends."""
        d = self.data
        kinds = ("F", "I", "W") if d.split else ("F", "B")
        for s in range(d.n_stages):
            for k in kinds:
                for j in range(d.m - 1):
                    self.model.add(self.start[(k, s, j + 1)] >= self.end((k, s, j)))

    def _add_inflight_limit(self) -> None:
        """At most ``limit[r]`` activations alive on rank ``r``: a precedence on a one-stage
        rank, a cumulative over the alive intervals on a multi-stage one (module docstring)."""
        d = self.data
        rel = d.release
        for r, stages in enumerate(d.stages_of_rank):
            lim = d.limit[r]
            if len(stages) == 1:
                s = stages[0]
                for j in range(d.m - lim):
                    self.model.add(self.start[("F", s, j + lim)] >= self.end((rel, s, j)))
                continue
            if lim >= len(stages) * d.m:
                continue
            alive = []
            for s in stages:
                for j in range(d.m):
                    size = self.model.new_int_var(0, d.horizon, f"alive_{s}_{j}")
                    self.alive_size[(s, j)] = size
                    alive.append(self.model.new_interval_var(
                        self.end(("F", s, j)), size, self.end((rel, s, j)), f"a_{s}_{j}"))
            self.model.add_cumulative(alive, [1] * len(alive), lim)

    def _add_makespan(self) -> None:
        """The makespan is at least the end of every stage's last release action (its ``F``
        and ``I`` of the same micro-batch come before it, and the order puts the others
        before that micro-batch)."""
        d = self.data
        for s in range(d.n_stages):
            self.model.add(self.makespan >= self.end((d.release, s, d.m - 1)))

    def add_hint(self, starts: dict[Op, int], makespan: int) -> None:
        for op, var in self.start.items():
            self.model.add_hint(var, starts[op])
        d = self.data
        for (s, j), var in self.alive_size.items():
            self.model.add_hint(var, starts[(d.release, s, j)] + d.duration((d.release, s, j))
                                - starts[("F", s, j)] - d.d_f[s])
        self.model.add_hint(self.makespan, makespan)

    def solve(self, time_limit_s: float, seed: int, num_workers: int,
              callback: cp_model.CpSolverSolutionCallback | None = None,
              deterministic_time: float | None = None
              ) -> tuple[cp_model.CpSolver, cp_model.CpSolverStatus]:
        extra: dict[str, float] = {}
        if deterministic_time is not None:
            extra["max_deterministic_time"] = max(0.0, float(deterministic_time))
        # no LP relaxation: on these disjunctive models it costs most of the time and bounds
        # nothing the one-machine floor (``makespan_floor``) does not already give
        return cpsat.solve(self.model, time_limit_s=time_limit_s, seed=seed,
                           num_workers=num_workers, callback=callback, linearization_level=0,
                           **extra)

    def extract(self, solver: cp_model.CpSolver) -> list[list[Action]]:
        """Each rank's actions sorted by start (distinct: positive durations, no overlap)."""
        d = self.data
        out: list[list[Action]] = []
        for r in range(d.n_ranks):
            ops = sorted(d.ops_of_rank(r), key=lambda op: solver.value(self.start[op]))
            out.append([Action(s, j, k) for k, s, j in ops])
        return out


class _Progress(cp_model.CpSolverSolutionCallback):
    """Records when a solution first beats ``threshold`` (grid units)."""

    def __init__(self, t0: float, threshold: float, first_better_s: float | None) -> None:
        super().__init__()
        self.t0 = t0
        self.threshold = threshold
        self.first_better_s = first_better_s
        self.solutions = 0

    def on_solution_callback(self) -> None:
        self.solutions += 1
        if self.first_better_s is None and self.objective_value < self.threshold:
            self.first_better_s = time.perf_counter() - self.t0


# --------------------------------------------------------------------------------------------
# Result and entry point
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthesisResult(SolveResult):
    """The schedule found, with how it was found.

    * ``actions``: per rank, the compute actions in order (``None`` when infeasible);
      ``source``: ``"synthesized"`` (CP-SAT's order), ``"greedy"`` (the list heuristic, when
      CP-SAT found nothing better and no named schedule fits the limit) or ``"named"`` (the best
      named schedule within the limit, returned because the synthesized one is not faster).
    * ``step_time``, ``bubble_fraction``, ``peak_inflight``: the float simulation of
      ``actions`` (:func:`costmodel.pipeline.simulator.simulate`).
    * ``status``: CP-SAT's (``optimal`` / ``feasible`` / ``unknown``), or ``infeasible`` with
      ``explanation``. ``objective_s``: CP-SAT's makespan on the grid in seconds; ``bound_s``: a
      proven lower bound on the float optimum; ``gap = (step_time - bound_s) / step_time``.
    * ``hint``: label of the best named schedule within the limit (``None`` if none),
      ``hint_step_time`` its step time; ``hint_source``: what seeded CP-SAT (a named label or
      ``"greedy"``). ``named``: every named schedule evaluated.
    * ``first_better_s``: seconds from the start until a schedule faster (on the grid) than
      the best named one within the limit was in hand (the greedy's or CP-SAT's; with no named
      schedule within the limit, the first schedule at all); ``None``: never.
      ``wall_time_s``: the total.
    """

    actions: tuple[tuple[Action, ...], ...] | None
    source: Literal["synthesized", "greedy", "named", "none"]
    step_time: float | None
    bubble_fraction: float | None
    peak_inflight: tuple[int, ...] | None
    objective_s: float | None
    bound_s: float | None
    hint: str | None
    hint_step_time: float | None
    hint_source: str | None
    named: tuple[NamedOutcome, ...]
    unit_s: float
    limits: tuple[int, ...]
    first_better_s: float | None = None

    @property
    def improved(self) -> bool:
        """Whether the answer is faster than the best named schedule within the limit."""
        return (self.source != "named" and self.step_time is not None
                and (self.hint_step_time is None or self.step_time < self.hint_step_time))


def synthesize_schedule(problem: SynthesisProblem, time_limit_s: float = 5.0, seed: int = 0,
                        num_workers: int = 1, resolution: int = DEFAULT_RESOLUTION,
                        use_greedy: bool = True, deterministic_time: float | None = None
                        ) -> SynthesisResult:
    """The fastest schedule CP-SAT finds within ``time_limit_s`` (see the module docstring),
    never slower than the best named schedule within the in-flight limit.

    ``time_limit_s`` bounds the whole call (wall clock); ``deterministic_time`` (optional)
    also bounds CP-SAT's work in its deterministic units, so that with ``num_workers=1`` the
    answer does not depend on the machine's load. ``use_greedy`` adds the greedy list schedule
    as a second hint (it is always used when no named schedule fits the limit).
    """
    t0 = time.perf_counter()
    limits = problem.limits()
    named = tuple(named_schedules_for(problem))
    fitting = [n for n in named if n.within_limit]
    best_named = min(fitting, key=lambda n: (n.step_time, n.label), default=None)
    why = _explain_infeasible(problem)
    if why is not None:
        return SynthesisResult(
            actions=None, source="none", step_time=None, bubble_fraction=None,
            peak_inflight=None, status="infeasible", objective_s=None, bound_s=None, gap=None,
            hint=None, hint_step_time=None, hint_source=None, named=named, unit_s=0.0,
            limits=limits, explanation=why, wall_time_s=time.perf_counter() - t0)

    gp = _grid_problem(problem, resolution)
    unit = _grid(problem, resolution)[0]
    proto = _prepare(problem, resolution, horizon=0)
    hints: list[tuple[int, str, dict[Op, int], list[list[Action]]]] = []
    if best_named is not None:
        acts = [list(r) for r in _named_actions(best_named, problem)]
        h = _hint_starts(proto, gp, acts)
        if h is not None:
            hints.append((h[1], best_named.label, h[0], acts))
    if use_greedy or not hints:
        tries = []
        for k, priority in enumerate(GREEDY_PRIORITIES):  # the best tie rule, on the grid
            if k and time.perf_counter() - t0 > GREEDY_SHARE * time_limit_s:
                break  # leave CP-SAT its time: the greedy is linear but slow in Python
            greedy = greedy_schedule(problem, priority)
            h = _hint_starts(proto, gp, greedy) if greedy is not None else None
            if greedy is not None and h is not None:
                tries.append((h[1], "greedy", h[0], greedy))
        if tries:
            hints.append(min(tries, key=lambda x: x[0]))
    if not hints:  # pragma: no cover - the greedy always runs when the limit is feasible
        raise RuntimeError("no hint: the greedy list schedule got stuck")
    hints.sort(key=lambda x: (x[0], x[1] == "greedy"))
    hint_units, hint_source, hint_starts, _ = hints[0]
    # "better" = faster than the best named schedule within the limit, on the grid
    named_units = next((h[0] for h in hints if h[1] != "greedy"), math.inf)
    first_better = time.perf_counter() - t0 if hint_units < named_units else None

    data = _prepare(problem, resolution, horizon=hint_units)
    sm = ScheduleModel(data)
    sm.add_hint(hint_starts, hint_units)
    progress = _Progress(t0, named_units, first_better)
    budget = max(0.0, time_limit_s - (time.perf_counter() - t0))
    solver, code = sm.solve(budget, seed, num_workers, progress, deterministic_time)
    st = status_of(code, sm.model, "schedule")

    objective_s = bound_s = None
    candidate: list[list[Action]] | None = None
    if st in FOUND:
        candidate = sm.extract(solver)
        objective_s = solver.objective_value * unit
        bound_s = max(0.0, solver.best_objective_bound * unit - data.excess_s)
    elif st == "infeasible":  # the pre-check is complete: this would be a bug
        return SynthesisResult(
            actions=None, source="none", step_time=None, bubble_fraction=None,
            peak_inflight=None, status="infeasible", objective_s=None, bound_s=None, gap=None,
            hint=best_named.label if best_named else None,
            hint_step_time=best_named.step_time if best_named else None,
            hint_source=hint_source, named=named, unit_s=unit, limits=limits,
            explanation="CP-SAT proved the model infeasible although the in-flight pre-check "
            "passed", wall_time_s=time.perf_counter() - t0)

    # candidates: CP-SAT's order, the greedy, the best named; the fastest within the limit
    options: list[tuple[float, str, list[list[Action]], SimResult]] = []
    if candidate is not None:
        validate_schedule(candidate, list(problem.stage_ranks))
        options.append(_option(problem, "synthesized", candidate))
    for _, src, _, acts in hints:
        if src == "greedy":
            options.append(_option(problem, "greedy", acts))
    if best_named is not None:
        acts = [list(r) for r in _named_actions(best_named, problem)]
        options.append(_option(problem, "named", acts))
    options = [o for o in options
               if all(int(p) <= lim for p, lim in zip(o[3].peak_inflight, limits, strict=True))]
    # the named schedule wins ties: a synthesized one must be strictly faster to be used
    rank = {"named": 0, "synthesized": 1, "greedy": 2}
    step, source, acts, sim = min(options, key=lambda o: (o[0], rank[o[1]]))
    if bound_s is not None:
        bound_s = min(bound_s, step)
    gap = (step - bound_s) / step if bound_s is not None and step > 0 else None
    return SynthesisResult(
        actions=tuple(tuple(r) for r in acts),
        source=source,  # type: ignore[arg-type]
        step_time=step, bubble_fraction=sim.bubble_fraction,
        peak_inflight=tuple(int(x) for x in sim.peak_inflight), status=st,
        objective_s=objective_s, bound_s=bound_s, gap=gap,
        hint=best_named.label if best_named else None,
        hint_step_time=best_named.step_time if best_named else None, hint_source=hint_source,
        named=named, unit_s=unit, limits=limits, first_better_s=progress.first_better_s,
        wall_time_s=time.perf_counter() - t0)


def _option(problem: SynthesisProblem, source: str, acts: list[list[Action]]
            ) -> tuple[float, str, list[list[Action]], SimResult]:
    sim = problem.simulate(acts)
    return sim.step_time, source, acts, sim


def _named_actions(n: NamedOutcome, problem: SynthesisProblem) -> list[list[Action]]:
    raw = raw_schedule(n.name, problem.n_ranks, problem.n_microbatches, n.virtual_stages)
    return [[Action(s, j, k) for s, j, k in r] for r in raw]
