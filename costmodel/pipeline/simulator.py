"""Discrete-event simulator of a pipeline schedule with per-stage durations.

Model
-----
* Each rank runs its compute actions strictly in its list order, one at a time, as early as its
  dependencies allow (no pre-emption, no reordering, no idle insertion).
* Durations per global stage ``s``: ``F`` takes ``t_f[s]``, ``I`` takes ``t_i[s]``, ``W`` takes
  ``t_w[s]`` and a full backward ``B`` takes ``t_i[s] + t_w[s]``.
* Dependencies: ``F(s, mb)`` after ``F(s-1, mb)``; ``I``/``B`` ``(s, mb)`` after ``F(s, mb)``
  and after ``I``/``B`` ``(s+1, mb)`` (the last stage's backward needs only its own forward);
  ``W(s, mb)`` after ``I(s, mb)``.
* Point-to-point latency ``p2p[s]`` (boundary between stages ``s`` and ``s+1``) is added on the
  cross-stage edges ``F(s) -> F(s+1)`` and ``I/B(s+1) -> I/B(s)`` only when the two stages sit
  on different ranks. Sends are asynchronous: the latency delays the consumer, not the sender.
* Overlapped F/B pairs of DualPipeV are modelled as two sequential actions (see
  :mod:`costmodel.pipeline.schedules`).
* Several model replicas (Chimera, BitPipe; :mod:`costmodel.pipeline.bidirectional`): the
  global stages are ``replicas`` chains of ``S`` stages (replica ``r`` holds ``r·S .. r·S+S−1``);
  a micro-batch flows through the chain of its own replica, so the cross-stage edges above
  stop at each chain's ends and never cross replicas. Per-stage durations may be given once
  per model stage (``S`` entries, the same on every replica) or per global stage.

Dependencies of an action on its own rank (``F`` before ``B``/``I``, ``I`` before ``W`` of the
same micro-batch) are implied by the rank order, which :func:`encode_schedule` checks; the hot
loop then follows one cross-stage edge per action.

Speed: encode once (:func:`encode_schedule`, or the memoised :func:`encoded_schedule` for the
named torch schedules), then :func:`simulate` costs one tight Python loop over the actions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import numpy as np
import numpy.typing as npt

from costmodel import interrupt
from costmodel.pipeline.schedules import (
    KIND_CODES,
    KINDS,
    Action,
    ScheduleError,
    check_schedule_arrays,
    raw_schedule,
    replicas,
    schedule_arrays,
    stage_to_rank,
)

__all__ = [
    "EncodedSchedule",
    "SimResult",
    "Timeline",
    "encode_schedule",
    "encoded_schedule",
    "simulate",
    "simulate_named",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Durations = float | Sequence[float] | npt.NDArray[np.floating]

_F, _B, _I, _W = (KIND_CODES[k] for k in KINDS)


@dataclass(frozen=True, slots=True)
class EncodedSchedule:
    """A validated schedule flattened to integer arrays, ready for :func:`simulate`.

    Actions of rank ``r`` are the flat slice ``offsets[r]:offsets[r+1]`` of ``rank``,
    ``stage``, ``mb`` and ``kind`` (codes of :data:`~costmodel.pipeline.schedules.KIND_CODES`).
    The remaining fields are precomputed for the simulator's hot loop: ``write_key`` (slot of
    the action's end time), ``dep_key`` (slot of the cross-stage dependency, ``-1`` if none) and
    ``lat_index`` (index of the p2p boundary charged on that edge, ``-1`` for none).
    """

    n_ranks: int
    n_stages: int
    n_microbatches: int
    stage_ranks: tuple[int, ...]
    n_replicas: int
    offsets: tuple[int, ...]
    rank: IntArray
    stage: IntArray
    mb: IntArray
    kind: IntArray
    write_key: list[int]
    dep_key: list[int]
    lat_index: IntArray

    @property
    def n_actions(self) -> int:
        return int(self.stage.shape[0])

    def action(self, i: int) -> Action:
        """The action at flat index ``i``."""
        return Action(int(self.stage[i]), int(self.mb[i]), KINDS[int(self.kind[i])])


@dataclass(frozen=True, slots=True)
class Timeline:
    """One row per executed action, for plotting: all arrays have one entry per action.

    ``kind`` holds the codes of :data:`~costmodel.pipeline.schedules.KIND_CODES`
    (F=0, B=1, I=2, W=3). Rows are grouped by rank, in each rank's execution order.
    """

    rank: IntArray
    stage: IntArray
    mb: IntArray
    kind: IntArray
    start: FloatArray
    end: FloatArray


@dataclass(frozen=True, slots=True)
class SimResult:
    """Outcome of :func:`simulate`.

    * ``step_time``: makespan, from time 0 to the end of the last action.
    * ``per_rank_busy``: summed compute time of each rank.
    * ``bubble_fraction``: ``(step_time - max(per_rank_busy)) / max(per_rank_busy)``, the idle
      time of the busiest rank relative to its work (0 when there is no work). For 1F1B with
      uniform stages and no p2p latency this is ``(p-1)/m``.
    * ``peak_inflight``: per rank, the most ``(stage, mb)`` activations held at once: +1 when
      an ``F`` ends, -1 when its ``B`` ends, or when its ``W`` ends for a split backward.
    * ``peak_pending_w``: per rank, the most ``(stage, mb)`` whose ``I`` is done and whose
      ``W`` is not (the weight-gradient stash; a subset of the in-flight activations).
    * ``timeline``: start/end of every action, see :class:`Timeline`.
    * ``stage_ranks``: the rank of every global stage; ``replicas``: the model replicas the
      stages form (1, or 2 for Chimera and BitPipe: global stage ``g`` is stage ``g % S`` of
      replica ``g // S``).
    * ``p2p``: the send/recv latency simulated on each stage boundary (``p2p[s]`` between
      stages ``s`` and ``s+1``; charged only where they sit on different ranks), for drawing
      the transfers (:func:`costmodel.pipeline.transfers.transfers`).
    """

    step_time: float
    per_rank_busy: FloatArray
    bubble_fraction: float
    peak_inflight: IntArray
    peak_pending_w: IntArray
    timeline: Timeline
    stage_ranks: tuple[int, ...] = ()
    replicas: int = 1
    p2p: FloatArray | None = None

    @property
    def n_ranks(self) -> int:
        return int(self.per_rank_busy.shape[0])

    @property
    def max_rank_busy(self) -> float:
        return float(self.per_rank_busy.max()) if self.per_rank_busy.size else 0.0


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def _encode_arrays(
    stage: IntArray,
    mb: IntArray,
    kind: IntArray,
    offsets: Sequence[int],
    stage_ranks: Sequence[int],
    n_microbatches: int,
    replicas: int = 1,
) -> EncodedSchedule:
    n_st = len(stage_ranks)
    per_replica = n_st // replicas
    m = n_microbatches
    n_keys = n_st * m
    n_ranks = len(offsets) - 1
    counts = [offsets[r + 1] - offsets[r] for r in range(n_ranks)]
    rank = np.repeat(np.arange(n_ranks, dtype=np.int64), counts)
    sr = np.asarray(stage_ranks, dtype=np.int64)
    idx = stage * m + mb
    is_f = kind == _F
    is_back = (kind == _B) | (kind == _I)
    # End-time slots: F -> idx, B/I -> n_keys + idx (the input gradient), W -> 2*n_keys + idx.
    write_key = np.where(is_f, idx, np.where(is_back, n_keys + idx, 2 * n_keys + idx))
    local = stage % per_replica if replicas > 1 else stage
    has_prev = is_f & (local > 0)
    has_next = is_back & (local < per_replica - 1)
    dep_key = np.full(idx.shape, -1, dtype=np.int64)
    dep_key[has_prev] = idx[has_prev] - m
    dep_key[has_next] = n_keys + idx[has_next] + m
    # Boundary index charged on the dependency edge, only across ranks.
    lat_index = np.full(idx.shape, -1, dtype=np.int64)
    prev_stage = np.maximum(stage - 1, 0)
    next_stage = np.minimum(stage + 1, n_st - 1)
    cross_prev = has_prev & (sr[prev_stage] != sr[stage])
    cross_next = has_next & (sr[next_stage] != sr[stage])
    lat_index[cross_prev] = stage[cross_prev] - 1
    lat_index[cross_next] = stage[cross_next]
    return EncodedSchedule(
        n_ranks=n_ranks,
        n_stages=n_st,
        n_microbatches=m,
        stage_ranks=tuple(int(x) for x in stage_ranks),
        n_replicas=replicas,
        offsets=tuple(int(x) for x in offsets),
        rank=rank,
        stage=stage,
        mb=mb,
        kind=kind,
        write_key=cast(list[int], write_key.tolist()),
        dep_key=cast(list[int], dep_key.tolist()),
        lat_index=lat_index,
    )


def encode_schedule(
    schedule: Sequence[Sequence[Action]] | Sequence[Sequence[tuple[int, int, str]]],
    stage_ranks: Sequence[int] | None = None,
    replicas: int = 1,
) -> EncodedSchedule:
    """Validate ``schedule`` (rules of :func:`~costmodel.pipeline.schedules.validate_schedule`)
    and flatten it for :func:`simulate`. ``schedule`` holds, per rank, Actions or
    ``(stage, mb, kind)`` tuples; ``stage_ranks[s]`` is the rank of global stage ``s``, inferred
    from the schedule if omitted; ``replicas`` the number of model replicas the stages form."""
    arrays = schedule_arrays(schedule)
    ranks_of, _, m = check_schedule_arrays(arrays, stage_ranks, replicas)
    return _encode_arrays(
        arrays.stage, arrays.mb, arrays.kind, arrays.offsets, ranks_of, m, replicas
    )


@lru_cache(maxsize=256, typed=True)  # typed: True must not hit the entry of 1
def encoded_schedule(
    name: str, pp: int, n_microbatches: int, virtual_stages: int = 1
) -> EncodedSchedule:
    """The torch schedule ``name`` built, validated and encoded; memoised."""
    raw = raw_schedule(name, pp, n_microbatches, virtual_stages)
    return encode_schedule(raw, stage_to_rank(name, pp, virtual_stages), replicas(name))


# --------------------------------------------------------------------------------------------
# Simulation
# --------------------------------------------------------------------------------------------


def _stage_durations(field: str, value: Durations, n_st: int, n_rep: int = 1) -> FloatArray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(n_st, float(arr))
    elif n_rep > 1 and arr.ndim == 1 and arr.shape[0] * n_rep == n_st:
        arr = np.tile(arr, n_rep)  # one entry per model stage: the same on every replica
    if arr.ndim != 1 or arr.shape[0] != n_st:
        per_model = f" or per model stage ({n_st // n_rep})" if n_rep > 1 else ""
        raise ScheduleError(
            field,
            f"{field} must be a scalar or have one entry per stage ({n_st}){per_model}; "
            f"got shape {arr.shape}",
        )
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        s = int(np.argmax(bad))
        raise ScheduleError(field, f"{field}[{s}]={arr[s]} must be finite and >= 0")
    return arr


def _p2p_latencies(value: Durations, n_st: int) -> FloatArray:
    """p2p per boundary, plus a trailing 0 that index -1 (no latency) picks up."""
    arr = np.asarray(value, dtype=np.float64)
    n_b = max(n_st - 1, 0)
    if arr.ndim == 0:
        arr = np.full(n_b, float(arr))
    elif arr.ndim == 1 and arr.shape[0] == n_st:
        arr = arr[:n_b]  # one per stage: the last stage has no outgoing boundary
    if arr.ndim != 1 or arr.shape[0] != n_b:
        raise ScheduleError(
            "p2p",
            f"p2p must be a scalar or have one entry per stage boundary ({n_b}); "
            f"got shape {np.shape(value)}",
        )
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        s = int(np.argmax(bad))
        raise ScheduleError("p2p", f"p2p[{s}]={arr[s]} must be finite and >= 0")
    return np.append(arr, 0.0)


def _deadlock_error(enc: EncodedSchedule, pos: list[int]) -> ScheduleError:
    n_keys = enc.n_stages * enc.n_microbatches
    blocked = []
    for r in range(enc.n_ranks):
        i = pos[r]
        if i >= enc.offsets[r + 1]:
            continue
        dep = enc.dep_key[i]  # a rank only stops early on an unmet cross-stage dependency
        if dep >= n_keys:
            s, mb = divmod(dep - n_keys, enc.n_microbatches)
            needs = f"I/B(stage={s}, mb={mb})"
        else:
            s, mb = divmod(dep, enc.n_microbatches)
            needs = f"F(stage={s}, mb={mb})"
        blocked.append(
            f"rank {r} blocked at {enc.action(i)} (its action #{i - enc.offsets[r]}), "
            f"waiting for {needs} on rank {enc.stage_ranks[s]}"
        )
    return ScheduleError("schedule", "deadlock, no rank can proceed: " + "; ".join(blocked))


def simulate(
    schedule: Sequence[Sequence[Action]] | EncodedSchedule,
    stage_ranks: Sequence[int] | None,
    t_f: Durations,
    t_i: Durations,
    t_w: Durations,
    p2p: Durations = 0.0,
    replicas: int = 1,
) -> SimResult:
    """Simulate ``schedule`` and return its makespan, bubble, memory peaks and timeline.

    ``schedule`` is a list per rank of :class:`~costmodel.pipeline.schedules.Action` (validated
    and encoded on each call) or an :class:`EncodedSchedule` (fast path; ``stage_ranks`` must
    then be ``None`` or equal to its map). ``stage_ranks[s]`` is the rank holding global stage
    ``s``. ``t_f``, ``t_i``, ``t_w`` are per-stage forward, input-grad and weight-grad times
    (a full ``B`` takes ``t_i + t_w``), scalars broadcast. ``p2p`` is the send/recv latency per
    stage boundary (``p2p[s]`` between ``s`` and ``s+1``; a scalar applies to all), charged only
    between stages on different ranks. ``replicas``: model replicas the global stages form
    (list input only; an encoded schedule knows its own); with several, ``p2p[g]`` of the last
    stage of a replica is unused and the stage times may be given per model stage. See the
    module docstring for the timing model.

    Raises :class:`~costmodel.pipeline.schedules.ScheduleError` on invalid input or when the
    schedule deadlocks (message names each blocked rank and its blocked action).
    """
    if isinstance(schedule, EncodedSchedule):
        enc = schedule
        if stage_ranks is not None and tuple(int(x) for x in stage_ranks) != enc.stage_ranks:
            raise ScheduleError(
                "stage_ranks", "stage_ranks differs from the encoded schedule's stage map"
            )
    else:
        enc = encode_schedule(schedule, stage_ranks, replicas)
    n_st = enc.n_stages
    n_rep = enc.n_replicas
    tf = _stage_durations("t_f", t_f, n_st, n_rep)
    ti = _stage_durations("t_i", t_i, n_st, n_rep)
    tw = _stage_durations("t_w", t_w, n_st, n_rep)
    lat_table = _p2p_latencies(p2p, n_st)

    table = np.stack([tf, ti + tw, ti, tw])  # rows indexed by kind code F, B, I, W
    dur_arr = table[enc.kind, enc.stage]
    dur = dur_arr.tolist()
    lat = lat_table[enc.lat_index].tolist()
    dep_key = enc.dep_key
    write_key = enc.write_key

    n_keys = n_st * enc.n_microbatches
    ends = [-1.0] * (3 * n_keys)
    start = [0.0] * enc.n_actions
    offsets = enc.offsets
    pos = list(offsets[:-1])
    stop = list(offsets[1:])
    free = [0.0] * enc.n_ranks
    waiting: dict[int, int] = {}
    ready = list(range(enc.n_ranks - 1, -1, -1))
    check = interrupt.checker()  # a cancelled search stops here, not after ~10^6 actions
    wakes = 0

    # Hot loop: run each ready rank as far as its next unmet cross-stage dependency, park it on
    # that dependency's slot, and wake it when the slot gets its end time.
    while ready:
        if check is not None:
            wakes += 1
            if wakes % interrupt.POLL_EVERY == 0 and check():
                interrupt.stop()
        r = ready.pop()
        i = pos[r]
        n = stop[r]
        t = free[r]
        while i < n:
            d = dep_key[i]
            if d >= 0:
                e = ends[d]
                if e < 0.0:
                    waiting[d] = r
                    break
                e += lat[i]
                if e > t:
                    t = e
            start[i] = t
            t += dur[i]
            k = write_key[i]
            ends[k] = t
            if k in waiting:
                ready.append(waiting.pop(k))
            i += 1
        pos[r] = i
        free[r] = t

    if any(pos[r] < stop[r] for r in range(enc.n_ranks)):
        raise _deadlock_error(enc, pos)

    start_arr = np.array(start, dtype=np.float64)
    end_arr = start_arr + dur_arr
    step_time = float(end_arr.max()) if end_arr.size else 0.0
    busy = np.bincount(enc.rank, weights=dur_arr, minlength=enc.n_ranks).astype(np.float64)
    max_busy = float(busy.max()) if busy.size else 0.0
    bubble = (step_time - max_busy) / max_busy if max_busy > 0.0 else 0.0

    kind = enc.kind
    d_act = np.where(kind == _F, 1, np.where((kind == _B) | (kind == _W), -1, 0))
    d_w = np.where(kind == _I, 1, np.where(kind == _W, -1, 0))
    peak_act = _per_rank_peak(d_act, offsets)
    peak_w = _per_rank_peak(d_w, offsets)

    return SimResult(
        step_time=step_time,
        per_rank_busy=busy,
        bubble_fraction=bubble,
        peak_inflight=peak_act,
        peak_pending_w=peak_w,
        timeline=Timeline(
            rank=enc.rank,
            stage=enc.stage,
            mb=enc.mb,
            kind=enc.kind,
            start=start_arr,
            end=end_arr,
        ),
        stage_ranks=enc.stage_ranks,
        replicas=n_rep,
        p2p=lat_table[:-1],
    )


def _per_rank_peak(delta: npt.NDArray[np.int64], offsets: Sequence[int]) -> IntArray:
    """Max prefix sum of ``delta`` within each rank's slice (0 for an empty or negative run).

    Each rank runs its actions one at a time in slice order, so the prefix sum in that order is
    the running count over time."""
    bounds = np.asarray(offsets, dtype=np.int64)
    csum = np.cumsum(delta[:bounds[-1]]) if len(bounds) > 1 else np.zeros(0, dtype=np.int64)
    lo, hi = bounds[:-1], bounds[1:]
    out = np.zeros(len(lo), dtype=np.int64)
    runs = hi > lo
    if runs.any():
        # the slices are consecutive: each non-empty one runs from its start to the next
        # non-empty one's (empty slices between them have no width), the last to the end
        starts = lo[runs]
        top = np.maximum.reduceat(csum, starts)
        base = np.where(starts > 0, csum[np.maximum(starts - 1, 0)], 0)
        out[runs] = np.maximum(top - base, 0)
    return out


def simulate_named(
    name: str,
    pp: int,
    n_microbatches: int,
    virtual_stages: int,
    t_f: Durations,
    t_i: Durations,
    t_w: Durations,
    p2p: Durations = 0.0,
) -> SimResult:
    """Simulate torch schedule ``name`` (built and encoded once, then memoised)."""
    enc = encoded_schedule(name, pp, n_microbatches, virtual_stages)
    return simulate(enc, None, t_f, t_i, t_w, p2p)
