"""Pipeline-parallel schedules: the per-rank order of compute actions.

The six schedules carry the names that ``torch.distributed.pipelining`` gives them
(``get_schedule_class``) and reproduce, rank by rank, the order of compute actions that torch
runs. The reference read was ``torch/distributed/pipelining/schedules.py`` of
``pytorch/pytorch`` at commit ``00722e648b740f91d0e71494baa17891749fd291``; each builder below
names the torch function whose order it follows. The code is an independent re-implementation
of those orders, not a copy.

Only compute actions are modelled (``F``, ``B``, ``I``, ``W``); torch's communication, FSDP
unshard/reshard and grad-reduce actions, and the ``None`` padding that torch puts in its
time-step grid, are left out: they do not change the order in which a rank computes.

Stage indices are *global* (``0 .. n_stages-1`` in model order); :func:`stage_to_rank` gives the
placement of global stages on pipeline ranks.

Stages per rank (``virtual_stages``): 1 for GPipe and 1F1B; exactly 2 for ZBVZeroBubble and
DualPipeV (V placement); >= 2 for Interleaved1F1B; >= 1 for InterleavedZeroBubble, whose
one-stage-per-rank form is the zero-bubble paper's ZB-H1 ("ZB1P"; torch accepts it too).

Two more schedules run *two model replicas* in one pipeline group (not torch schedules; see
:mod:`costmodel.pipeline.bidirectional`): Chimera (1 stage per rank and replica) and BitPipe
(2 per rank and replica). Their global stages are replica 0's ``S`` stages followed by replica
1's, and each micro-batch runs through one replica only: the validation below takes the number
of ``replicas`` and then checks each micro-batch against its own replica's stages.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import repeat
from typing import NamedTuple, cast

import numpy as np
import numpy.typing as npt

from costmodel.errors import FieldProblem, SpecError

__all__ = [
    "ALL_SCHEDULES",
    "BIDIRECTIONAL_SCHEDULES",
    "KINDS",
    "KIND_CODES",
    "LOOP_SCHEDULES",
    "MULTI_STAGE_SCHEDULES",
    "SCHEDULES",
    "SINGLE_STAGE_SCHEDULES",
    "V_SCHEDULES",
    "Action",
    "ScheduleArrays",
    "ScheduleError",
    "ValidatedSchedule",
    "build_custom",
    "build_schedule",
    "build_schedule_cached",
    "check_schedule_arrays",
    "format_schedule",
    "n_stages",
    "parse_schedule",
    "raw_schedule",
    "replicas",
    "schedule_arrays",
    "stage_to_rank",
    "validate_schedule",
]

#: Schedule names, spelled as ``torch.distributed.pipelining.get_schedule_class`` spells them.
SCHEDULES: tuple[str, ...] = (
    "GPipe",
    "1F1B",
    "Interleaved1F1B",
    "InterleavedZeroBubble",
    "ZBVZeroBubble",
    "DualPipeV",
)
#: One stage per rank (torch ``PipelineScheduleSingle``).
SINGLE_STAGE_SCHEDULES: tuple[str, ...] = ("GPipe", "1F1B")
#: Several stages per rank (torch ``PipelineScheduleMulti`` / ``_PipelineScheduleRuntime``);
#: InterleavedZeroBubble also accepts one stage per rank (ZB-H1).
MULTI_STAGE_SCHEDULES: tuple[str, ...] = (
    "Interleaved1F1B",
    "InterleavedZeroBubble",
    "ZBVZeroBubble",
    "DualPipeV",
)
#: Multi-stage schedules with V placement: exactly two stages per rank.
V_SCHEDULES: tuple[str, ...] = ("ZBVZeroBubble", "DualPipeV")
#: Loop-placed multi-stage schedules: stage ``s`` on rank ``s % pp``.
LOOP_SCHEDULES: tuple[str, ...] = ("Interleaved1F1B", "InterleavedZeroBubble")
#: Schedules over two model replicas (Chimera, Li & Hoefler 2021; BitPipe, Wu et al. 2024).
BIDIRECTIONAL_SCHEDULES: tuple[str, ...] = ("Chimera", "BitPipe")
#: Every schedule name the builders know.
ALL_SCHEDULES: tuple[str, ...] = SCHEDULES + BIDIRECTIONAL_SCHEDULES


def replicas(name: str) -> int:
    """Model replicas a schedule runs in one pipeline group: 2 for Chimera and BitPipe, else 1."""
    return 2 if name in BIDIRECTIONAL_SCHEDULES else 1

#: Action kinds: forward, full backward (input + weight grad), input grad only, weight grad only.
KINDS: tuple[str, ...] = ("F", "B", "I", "W")
#: Integer code of each kind, as used in the simulator's timeline arrays.
KIND_CODES: dict[str, int] = {k: i for i, k in enumerate(KINDS)}
_F_CODE, _B_CODE, _I_CODE, _W_CODE = 0, 1, 2, 3


class ScheduleError(SpecError):
    """An invalid schedule request or schedule; a ``ValueError``.

    ``field`` names the offending input (``pp``, ``n_microbatches``, ``virtual_stages``,
    ``name``, ``schedule``, ``t_f``, ...) and ``rule`` says what was broken; ``str(err)`` is
    ``"field: rule"``.
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(FieldProblem(field, rule))


@dataclass(frozen=True, slots=True)
class Action:
    """One compute action: ``kind`` on global ``stage`` for micro-batch ``mb``.

    ``kind`` is ``"F"`` (forward), ``"B"`` (full backward: input grad and weight grad together),
    ``"I"`` (input grad only) or ``"W"`` (weight grad only).
    """

    stage: int
    mb: int
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in KIND_CODES:
            raise ScheduleError("kind", f"kind={self.kind!r} must be one of F, B, I, W")

    def __str__(self) -> str:
        return f"{self.kind}(stage={self.stage}, mb={self.mb})"

    def torch_str(self) -> str:
        """The action as ``torch.distributed.pipelining``'s ``_Action`` prints it:
        ``"{stage}{kind}{mb}"``, e.g. ``"0F3"``, ``"1I0"``, ``"2B1"`` (``_Action.__repr__``).
        :meth:`parse` reads it back."""
        return f"{self.stage}{self.kind}{self.mb}"

    @classmethod
    def parse(cls, text: str) -> Action:
        """Read a compute action in torch's ``_Action`` string form (``"0F3"``: stage 0,
        forward, micro-batch 3), the inverse of :meth:`torch_str`.

        Agrees with ``_Action.from_str`` of ``torch/distributed/pipelining/schedules.py``
        (``(\\d+)(F|I|B|W|...)(\\d*)``) on compute actions, but stricter: the whole string
        (surrounding blanks stripped) must match, the micro-batch index is required, and
        communication or FSDP actions (``SEND_F``, ``UNSHARD``, ...) are rejected. Raises
        :class:`ScheduleError` (field ``action``) otherwise.
        """
        if not isinstance(text, str):
            raise ScheduleError("action", f"{text!r} is not a string")
        match = _TORCH_ACTION.fullmatch(text.strip())
        if match is None:
            raise ScheduleError(
                "action",
                f"{text!r} is not a compute action '{{stage}}{{F|B|I|W}}{{microbatch}}' "
                "such as '0F3' or '1W0'",
            )
        stage, kind, mb = match.groups()
        return cls(int(stage), int(mb), kind)


_TORCH_ACTION = re.compile(r"(\d+)([FBIW])(\d+)", re.ASCII)
"""A compute action as torch's ``_Action.__repr__`` writes it (see :meth:`Action.parse`)."""


# --------------------------------------------------------------------------------------------
# Validation of (name, pp, n_microbatches, virtual_stages)
# --------------------------------------------------------------------------------------------


def _check_int(field: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ScheduleError(field, f"{field}={value!r} must be an integer")
    if value < minimum:
        raise ScheduleError(field, f"{field}={value} must be >= {minimum}")
    return int(value)


def _check_layout(name: str, pp: int, virtual_stages: int) -> tuple[int, int]:
    """Check name, pp and virtual_stages; return ``(pp, virtual_stages)`` as ints."""
    if name not in ALL_SCHEDULES:
        raise ScheduleError("name", f"name={name!r} is not one of {', '.join(ALL_SCHEDULES)}")
    pp = _check_int("pp", pp, 1)
    v = _check_int("virtual_stages", virtual_stages, 1)
    if name in BIDIRECTIONAL_SCHEDULES:
        from costmodel.pipeline.bidirectional import check_bidirectional

        check_bidirectional(name, pp, v, pp)  # layout only: pp micro-batches always qualify
    if name in SINGLE_STAGE_SCHEDULES and v != 1:
        raise ScheduleError(
            "virtual_stages",
            f"virtual_stages={v} must be 1 for {name} "
            "(a single-stage schedule: one stage per rank)",
        )
    if name in V_SCHEDULES and v != 2:
        # torch: ScheduleZBVZeroBubble / ScheduleDualPipeV raise unless len(stages) == 2.
        raise ScheduleError(
            "virtual_stages",
            f"virtual_stages={v} must be 2 for {name} (exactly 2 stages per rank, V placement)",
        )
    if name == "Interleaved1F1B" and v < 2:
        raise ScheduleError(
            "virtual_stages",
            f"{name} needs virtual_stages >= 2 (got {v}); with one stage per rank use 1F1B",
        )
    return pp, v


def _check_microbatches(name: str, pp: int, v: int, n_microbatches: int) -> int:
    m = _check_int("n_microbatches", n_microbatches, 1)
    num_stages = pp * v
    if name in BIDIRECTIONAL_SCHEDULES:
        from costmodel.pipeline.bidirectional import check_bidirectional

        check_bidirectional(name, pp, v, m)
    if name == "1F1B" and m < num_stages:
        # torch Schedule1F1B.__init__: n_microbatches must be >= number of stages.
        raise ScheduleError(
            "n_microbatches",
            f"n_microbatches={m} must be >= pp={pp} (the number of stages) for 1F1B",
        )
    if name == "DualPipeV" and m < num_stages:
        # torch ScheduleDualPipeV.__init__: at least as many microbatches as stages.
        raise ScheduleError(
            "n_microbatches",
            f"n_microbatches={m} must be >= number of stages 2*pp={num_stages} for DualPipeV",
        )
    if name in LOOP_SCHEDULES:
        # torch ScheduleInterleaved1F1B / ScheduleInterleavedZeroBubble.__init__:
        # number_of_rounds = max(1, n_microbatches // pp_group_size), and n_microbatches must be
        # a multiple of number_of_rounds.
        rounds = max(1, m // pp)
        if m % rounds != 0:
            raise ScheduleError(
                "n_microbatches",
                f"n_microbatches={m} must be a multiple of the number of rounds "
                f"max(1, n_microbatches // pp)={rounds} for {name} (torch's rule, pp={pp})",
            )
    return m


def n_stages(name: str, pp: int, virtual_stages: int = 1) -> int:
    """Number of global stages of schedule ``name``: ``pp * virtual_stages`` per replica, times
    the :func:`replicas` (2 for Chimera and BitPipe)."""
    pp, v = _check_layout(name, pp, virtual_stages)
    return pp * v * replicas(name)


def stage_to_rank(name: str, pp: int, virtual_stages: int = 1) -> list[int]:
    """Rank of each global stage (index = stage).

    * GPipe, 1F1B: stage ``s`` on rank ``s``.
    * Interleaved1F1B, InterleavedZeroBubble: loop placement, stage ``s`` on rank ``s % pp``
      (torch ``generate_stage_to_rank_mapping(style="loop")``).
    * ZBVZeroBubble, DualPipeV: V placement, rank ``r`` holds stages ``r`` and ``2*pp-1-r``
      (torch ``generate_stage_to_rank_mapping(style="v")``).
    * Chimera, BitPipe: replica 0's stages then replica 1's, see
      :func:`costmodel.pipeline.bidirectional.bidirectional_stage_to_rank`.
    """
    pp, v = _check_layout(name, pp, virtual_stages)
    if name in BIDIRECTIONAL_SCHEDULES:
        from costmodel.pipeline.bidirectional import bidirectional_stage_to_rank

        return bidirectional_stage_to_rank(name, pp)
    if name in V_SCHEDULES:
        return [s if s < pp else 2 * pp - 1 - s for s in range(2 * pp)]
    return [s % pp for s in range(pp * v)]


# --------------------------------------------------------------------------------------------
# Builders (one per torch schedule); they emit plain (stage, mb, kind) tuples, which are cheaper
# to create than Actions and are what the simulator's encoder consumes.
# --------------------------------------------------------------------------------------------

_Op = tuple[int, int, str]


def _gpipe_rank(rank: int, m: int) -> list[_Op]:
    """Follows ``ScheduleGPipe`` (``_step_microbatches`` / ``_get_pipeline_order``).

    All forwards in micro-batch order, then all full backwards in micro-batch order.
    """
    return [(rank, i, "F") for i in range(m)] + [(rank, i, "B") for i in range(m)]


def _one_f_one_b_rank(rank: int, pp: int, m: int) -> list[_Op]:
    """Follows ``Schedule1F1B`` (``_step_microbatches`` / ``_get_pipeline_order``).

    ``min(m, pp - rank)`` warm-up forwards, then alternate one full backward and one forward
    while forwards remain, then the remaining backwards (cool-down).
    """
    warmup = min(m, pp - rank)
    ops = [(rank, i, "F") for i in range(warmup)]
    next_f, next_b = warmup, 0
    while next_b < m:
        ops.append((rank, next_b, "B"))
        next_b += 1
        if next_f < m:
            ops.append((rank, next_f, "F"))
            next_f += 1
    return ops


def _interleaved_rank(rank: int, pp: int, m: int, v: int, zero_bubble: bool) -> list[_Op]:
    """Follows torch's ``_get_1f1b_rank_ops`` as driven by
    ``ScheduleInterleaved1F1B._calculate_single_rank_operations`` (``zero_bubble=False``) and
    ``ScheduleInterleavedZeroBubble._calculate_single_rank_operations`` (``zero_bubble=True``).

    Micro-batches are processed in rounds of ``per_round = m // max(1, m // pp)``; the local
    stage index advances every ``per_round`` steps (forwards ascending, backwards descending).
    Warm-up has ``min((v-1)*per_round + k*(pp-1-rank), m*v)`` forwards with ``k = 2`` for
    Interleaved1F1B and ``k = 1`` for the zero-bubble variant (torch ``_get_warmup_ops``);
    then one forward + one backward per step, then backward-only cool-down. The zero-bubble
    variant splits each backward into ``I`` and a deferred ``W``: after the first ``rank``
    steady-state steps each step also runs the oldest pending ``W``; the rest come at the end.
    """
    rounds = max(1, m // pp)
    per_round = m // rounds
    factor = 1 if zero_bubble else 2
    chunks = m * v
    warmup = min((v - 1) * per_round + factor * (pp - 1 - rank), chunks)
    steady = chunks - warmup
    total = warmup + steady + warmup  # torch: cooldown_ops == warmup_ops
    bwd_kind = "I" if zero_bubble else "B"

    next_f = [0] * v
    next_b = [0] * v
    pending_w: deque[_Op] = deque()
    ops: list[_Op] = []

    def fwd(step: int) -> None:
        local = (step // per_round) % v
        ops.append((local * pp + rank, next_f[local], "F"))
        next_f[local] += 1

    def bwd(step: int) -> None:
        local = v - 1 - ((step - warmup) // per_round) % v
        act = (local * pp + rank, next_b[local], bwd_kind)
        next_b[local] += 1
        ops.append(act)
        if zero_bubble:
            pending_w.append((act[0], act[1], "W"))
            if step - warmup >= rank:  # torch: num_1f1b_microbatches = rank
                ops.append(pending_w.popleft())

    for step in range(total):
        if step < warmup:
            fwd(step)
        elif step < warmup + steady:
            fwd(step)
            bwd(step)
        else:
            bwd(step)
    ops.extend(pending_w)
    return ops


def _zbv_rank(rank: int, pp: int, m: int) -> list[_Op]:
    """Follows ``ScheduleZBVZeroBubble._calculate_single_rank_operations``.

    Rank ``r`` holds chunk 0 = stage ``r`` and chunk 1 = stage ``2*pp-1-r``. The order is built
    for ``max(2*pp-1, m)`` micro-batches and the actions of micro-batches ``>= m`` are dropped,
    as torch does. Phases: ``2*(pp-r)-1`` forwards of chunk 0; ``r`` pairs (F chunk 1, F chunk
    0); ``pp-r`` triples (F, I, W of chunk 1); steady state (F0 while any left, I0, W0, F1, I1,
    W1) until chunk 1 has caught up; cool-down: ``r`` pairs (I0, I1), ``pp-r`` pairs (I0, W0),
    then the deferred W of chunk 1 and of chunk 0.
    """
    n_micro = max(2 * pp - 1, m)
    c0, c1 = rank, 2 * pp - 1 - rank
    ops: list[_Op] = []
    f0 = f1 = b0 = b1 = 0

    for _ in range(2 * (pp - rank) - 1):
        ops.append((c0, f0, "F"))
        f0 += 1
    for _ in range(rank):
        ops.append((c1, f1, "F"))
        f1 += 1
        ops.append((c0, f0, "F"))
        f0 += 1
    for _ in range(pp - rank):
        ops.append((c1, f1, "F"))
        f1 += 1
        ops.append((c1, b1, "I"))
        ops.append((c1, b1, "W"))
        b1 += 1
    while f1 < f0 or f0 < n_micro:
        if f0 < n_micro:
            ops.append((c0, f0, "F"))
            f0 += 1
        ops.append((c0, b0, "I"))
        ops.append((c0, b0, "W"))
        b0 += 1
        ops.append((c1, f1, "F"))
        f1 += 1
        ops.append((c1, b1, "I"))
        ops.append((c1, b1, "W"))
        b1 += 1
    w0, w1 = b0, b1
    for _ in range(rank):
        ops.append((c0, b0, "I"))
        b0 += 1
        ops.append((c1, b1, "I"))
        b1 += 1
    for _ in range(pp - rank):
        ops.append((c0, b0, "I"))
        b0 += 1
        ops.append((c0, w0, "W"))
        w0 += 1
    while w1 < b1:
        ops.append((c1, w1, "W"))
        w1 += 1
    while w0 < b0:
        ops.append((c0, w0, "W"))
        w0 += 1
    return [a for a in ops if a[1] < m]


def _dualpipev_rank(rank: int, pp: int, m: int) -> list[_Op]:
    """Follows ``ScheduleDualPipeV._calculate_single_rank_operations``.

    Rank ``r`` holds stage ``r`` (chunk 0) and stage ``2*pp-1-r`` (chunk 1). torch emits
    ``OVERLAP_F_B`` actions (a forward of one chunk and a full backward of the other, on
    different micro-batches, run back to back by the runtime); they are modelled here as two
    sequential actions on the rank, forward first, as torch's runtime executes its sub-actions.
    Phases (torch's step 1..8): F0 x ``2*(pp-r-1)``; (F0, F1) x ``r+1``; (I1, W, F1) x
    ``pp-r-1``; main loop (F0+B1, F1+B0) x ``m-2*pp+r+1`` (the last rank's first F0, B1 pair is
    not overlapped in torch, which changes nothing here); (B1, F1+B0) x ``pp-r-1``; (B1, B0) x
    ``r+1`` switching to I halfway (zero bubble); (W, B0/I0) x ``pp-r-1``; W x ``r+1``. A
    ``W`` always takes the oldest pending input-grad-only backward.
    """
    c0, c1 = rank, 2 * pp - 1 - rank
    nf = {c0: 0, c1: 0}
    nb = {c0: 0, c1: 0}
    pending_w: deque[_Op] = deque()
    ops: list[_Op] = []

    def f(stage: int) -> None:
        ops.append((stage, nf[stage], "F"))
        nf[stage] += 1

    def b(stage: int, kind: str) -> None:
        act = (stage, nb[stage], kind)
        nb[stage] += 1
        ops.append(act)
        if kind == "I":
            pending_w.append((stage, act[1], "W"))

    def w() -> None:
        if pending_w:
            ops.append(pending_w.popleft())

    for _ in range(2 * (pp - rank - 1)):  # step 1
        f(c0)
    for _ in range(rank + 1):  # step 2
        f(c0)
        f(c1)
    for _ in range(pp - rank - 1):  # step 3
        b(c1, "I")
        w()
        f(c1)
    for _ in range(m - 2 * pp + rank + 1):  # step 4: F0 + B1, F1 + B0
        f(c0)
        b(c1, "B")
        f(c1)
        b(c0, "B")
    for _ in range(pp - rank - 1):  # step 5: B1, F1 + B0
        b(c1, "B")
        f(c1)
        b(c0, "B")
    steps6 = rank + 1  # step 6: B1 B0, second half with split backward
    zb = False
    for i in range(steps6):
        if i == steps6 // 2 and rank % 2 == 1:
            zb = True
        b(c1, "I" if zb else "B")
        if i == steps6 // 2 and rank % 2 == 0:
            zb = True
        b(c0, "I" if zb else "B")
    for _ in range(pp - rank - 1):  # step 7
        w()
        b(c0, "I" if zb else "B")
    for _ in range(rank + 1):  # step 8
        w()
    return ops


@lru_cache(maxsize=256, typed=True)  # typed: True must not hit the entry of 1
def raw_schedule(
    name: str, pp: int, n_microbatches: int, virtual_stages: int = 1
) -> tuple[tuple[tuple[int, int, str], ...], ...]:
    """The schedule as ``(stage, mb, kind)`` tuples per rank, memoised (validates arguments)."""
    pp, v = _check_layout(name, pp, virtual_stages)
    m = _check_microbatches(name, pp, v, n_microbatches)
    ranks: list[list[_Op]]
    if name == "GPipe":
        ranks = [_gpipe_rank(r, m) for r in range(pp)]
    elif name == "1F1B":
        ranks = [_one_f_one_b_rank(r, pp, m) for r in range(pp)]
    elif name == "Interleaved1F1B":
        ranks = [_interleaved_rank(r, pp, m, v, zero_bubble=False) for r in range(pp)]
    elif name == "InterleavedZeroBubble":
        ranks = [_interleaved_rank(r, pp, m, v, zero_bubble=True) for r in range(pp)]
    elif name == "ZBVZeroBubble":
        ranks = [_zbv_rank(r, pp, m) for r in range(pp)]
    elif name == "DualPipeV":
        ranks = [_dualpipev_rank(r, pp, m) for r in range(pp)]
    else:  # Chimera, BitPipe
        from costmodel.pipeline.bidirectional import bidirectional_ranks

        ranks = bidirectional_ranks(name, pp, m)
    return tuple(tuple(r) for r in ranks)


@lru_cache(maxsize=256, typed=True)
def build_schedule_cached(
    name: str, pp: int, n_microbatches: int, virtual_stages: int = 1
) -> tuple[tuple[Action, ...], ...]:
    """:func:`build_schedule` as immutable tuples of :class:`Action`, memoised."""
    raw = raw_schedule(name, pp, n_microbatches, virtual_stages)
    return tuple(tuple(Action(s, mb, k) for s, mb, k in r) for r in raw)


def build_schedule(
    name: str, pp: int, n_microbatches: int, virtual_stages: int = 1
) -> list[list[Action]]:
    """The ordered compute actions of each rank for schedule ``name``.

    ``pp`` is the number of pipeline ranks, ``virtual_stages`` the number of stages per rank:
    1 for GPipe/1F1B, 2 for ZBVZeroBubble/DualPipeV, >= 2 for Interleaved1F1B and >= 1 for
    InterleavedZeroBubble (with 1 it is the paper's ZB-H1, torch's "ZB1P"); per rank *and
    replica* 1 for Chimera and 2 for BitPipe (pp even, n_microbatches a multiple of pp; see
    :mod:`costmodel.pipeline.bidirectional`). Raises
    :class:`ScheduleError` on an invalid combination, with torch's own rules on
    ``n_microbatches``: 1F1B needs ``n_microbatches >= pp``; DualPipeV ``>= 2*pp``; the
    interleaved schedules need ``n_microbatches % max(1, n_microbatches // pp) == 0``.
    """
    return [list(r) for r in build_schedule_cached(name, pp, n_microbatches, virtual_stages)]


# --------------------------------------------------------------------------------------------
# Validation of arbitrary schedules
# --------------------------------------------------------------------------------------------


class ValidatedSchedule(NamedTuple):
    """A checked schedule: actions per rank, the stage -> rank map, and its sizes."""

    actions: list[list[Action]]
    stage_ranks: list[int]
    n_stages: int
    n_microbatches: int


class ScheduleArrays(NamedTuple):
    """A schedule flattened rank after rank: action ``i`` of rank ``r`` is at flat index
    ``offsets[r] + i``; ``kind`` holds :data:`KIND_CODES`."""

    stage: npt.NDArray[np.int64]
    mb: npt.NDArray[np.int64]
    kind: npt.NDArray[np.int64]
    offsets: tuple[int, ...]


def _rank_columns(acts: Sequence[object], rank: int) -> tuple[list[int], list[int], list[str]]:
    """Columns (stage, mb, kind) of one rank's actions, any mix of Actions and tuples."""
    st: list[int] = []
    mb: list[int] = []
    kd: list[str] = []
    for pos, a in enumerate(acts):
        if isinstance(a, Action):
            st.append(a.stage)
            mb.append(a.mb)
            kd.append(a.kind)
        elif isinstance(a, tuple) and len(a) == 3:
            st.append(a[0])
            mb.append(a[1])
            kd.append(a[2])
        else:
            raise ScheduleError(
                "schedule",
                f"rank {rank}, position {pos}: {a!r} is not an Action or a (stage, mb, kind) tuple",
            )
    return st, mb, kd


def schedule_arrays(
    actions_per_rank: Sequence[Sequence[Action]] | Sequence[Sequence[tuple[int, int, str]]],
) -> ScheduleArrays:
    """Flatten a schedule (Actions or ``(stage, mb, kind)`` tuples) to integer arrays."""
    offsets = [0]
    stages: list[int] = []
    mbs: list[int] = []
    kinds: list[str] = []
    for r, acts in enumerate(actions_per_rank):
        if acts and all(type(a) is Action for a in acts):
            as_actions = cast(Sequence[Action], acts)
            stages.extend([a.stage for a in as_actions])
            mbs.extend([a.mb for a in as_actions])
            kinds.extend([a.kind for a in as_actions])
        elif acts and all(type(a) is tuple and len(a) == 3 for a in acts):
            st, mb, kd = zip(*acts, strict=True)
            stages.extend(st)
            mbs.extend(mb)
            kinds.extend(kd)
        else:
            st_l, mb_l, kd_l = _rank_columns(acts, r)
            stages.extend(st_l)
            mbs.extend(mb_l)
            kinds.extend(kd_l)
        offsets.append(len(stages))
    try:
        kind = np.fromiter(map(KIND_CODES.get, kinds, repeat(-1)), dtype=np.int64, count=len(kinds))
    except TypeError:  # an unhashable kind
        kind = np.array([KIND_CODES.get(k, -1) if isinstance(k, str) else -1 for k in kinds])
    if (kind < 0).any():
        i = int(np.argmax(kind < 0))
        r = int(np.searchsorted(offsets, i, side="right")) - 1
        raise ScheduleError(
            "schedule",
            f"rank {r}, position {i - offsets[r]}: kind={kinds[i]!r} must be one of F, B, I, W",
        )
    try:
        stage = np.array(stages, dtype=np.int64)
        mb_arr = np.array(mbs, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise ScheduleError("schedule", f"stage and mb must be integers ({exc})") from exc
    return ScheduleArrays(stage=stage, mb=mb_arr, kind=kind, offsets=tuple(offsets))


def check_schedule_arrays(
    arrays: ScheduleArrays, stage_ranks: Sequence[int] | None = None, replicas: int = 1
) -> tuple[list[int], int, int]:
    """Vectorised core of :func:`validate_schedule`; returns ``(stage_ranks, n_stages, m)``."""
    replicas = _check_int("replicas", replicas, 1)
    stage, mb, kind, offsets = arrays
    n_ranks = len(offsets) - 1
    n = int(stage.shape[0])
    if n_ranks == 0:
        raise ScheduleError("schedule", "the schedule must have at least one rank")
    if n == 0:
        raise ScheduleError("schedule", "the schedule has no actions")
    rank = np.repeat(np.arange(n_ranks, dtype=np.int64), np.diff(np.asarray(offsets)))
    local = np.arange(n, dtype=np.int64) - np.asarray(offsets[:-1], dtype=np.int64)[rank]

    def at(i: int) -> str:
        return (
            f"rank {int(rank[i])}, position {int(local[i])}: "
            f"{KINDS[int(kind[i])]}(stage={int(stage[i])}, mb={int(mb[i])})"
        )

    neg = (stage < 0) | (mb < 0)
    if neg.any():
        raise ScheduleError("schedule", f"{at(int(np.argmax(neg)))} has a negative index")
    n_st = int(stage.max()) + 1
    m = int(mb.max()) + 1

    lo = np.full(n_st, n_ranks, dtype=np.int64)
    hi = np.full(n_st, -1, dtype=np.int64)
    np.minimum.at(lo, stage, rank)
    np.maximum.at(hi, stage, rank)
    empty = hi < 0
    if empty.any():
        s = int(np.argmax(empty))
        raise ScheduleError("schedule", f"stage {s} has no actions (stages 0..{n_st - 1})")
    split = lo != hi
    if split.any():
        s = int(np.argmax(split))
        raise ScheduleError(
            "schedule",
            f"stage {s} has actions on rank {int(lo[s])} and on rank {int(hi[s])}; "
            "a stage must live on one rank",
        )
    if stage_ranks is None:
        ranks_of = [int(x) for x in lo]
    else:
        ranks_of = [int(x) for x in stage_ranks]
        if len(ranks_of) != n_st:
            raise ScheduleError(
                "stage_ranks",
                f"stage_ranks has {len(ranks_of)} entries but the schedule has {n_st} stages",
            )
        for s in range(n_st):
            if not 0 <= ranks_of[s] < n_ranks:
                raise ScheduleError(
                    "stage_ranks",
                    f"stage_ranks[{s}]={ranks_of[s]} is not a rank 0..{n_ranks - 1}",
                )
            if ranks_of[s] != int(lo[s]):
                raise ScheduleError(
                    "schedule",
                    f"actions of stage {s} are on rank {int(lo[s])} but stage_ranks puts "
                    f"stage {s} on rank {ranks_of[s]}",
                )

    n_keys = n_st * m
    idx = stage * m + mb
    counts = np.bincount(kind * n_keys + idx, minlength=4 * n_keys).reshape(4, n_keys)
    c_f, c_b, c_i, c_w = counts

    def where(key: int) -> str:
        s, b = divmod(key, m)
        return f"stage {s}, mb {b} (rank {ranks_of[s]})"

    dup = counts > 1
    if dup.any():
        k_dup, key_dup = np.unravel_index(int(np.argmax(dup)), dup.shape)
        raise ScheduleError(
            "schedule", f"{where(int(key_dup))}: more than one {KINDS[int(k_dup)]} action"
        )
    expected = _expected_keys(c_f, n_st, m, replicas)
    for bad, rule in (
        (expected & (c_f == 0), "no F action"),
        ((c_b > 0) & ((c_i > 0) | (c_w > 0)), "has a full backward B and also a split I/W one"),
        (expected & (c_b == 0) & ((c_i == 0) | (c_w == 0)), "needs one B, or one I and one W"),
        (~expected & ((c_b > 0) | (c_i > 0) | (c_w > 0)),
         "has a backward but no F action (the micro-batch runs on another replica)"),
    ):
        if bad.any():
            raise ScheduleError("schedule", f"{where(int(np.argmax(bad)))}: {rule}")

    # Order on the owning rank (all actions of a key are on one rank, so flat order = rank order).
    flat = np.arange(n, dtype=np.int64)
    pos = np.zeros((4, n_keys), dtype=np.int64)
    pos[kind, idx] = flat
    is_split = c_i > 0
    p_back = np.where(is_split, pos[_I_CODE], pos[_B_CODE])
    late = expected & (p_back < pos[_F_CODE])
    if late.any():
        key = int(np.argmax(late))
        s, b = divmod(key, m)
        kb = "I" if is_split[key] else "B"
        raise ScheduleError(
            "schedule",
            f"rank {ranks_of[s]} would deadlock: {kb}(stage={s}, mb={b}) comes before its "
            f"F(stage={s}, mb={b}) in rank {ranks_of[s]}'s own order",
        )
    late_w = expected & is_split & (pos[_W_CODE] < pos[_I_CODE])
    if late_w.any():
        key = int(np.argmax(late_w))
        s, b = divmod(key, m)
        raise ScheduleError(
            "schedule",
            f"rank {ranks_of[s]} would deadlock: W(stage={s}, mb={b}) comes before its "
            f"I(stage={s}, mb={b}) in rank {ranks_of[s]}'s own order",
        )
    return ranks_of, n_st, m


def _expected_keys(
    c_f: npt.NDArray[np.int64], n_st: int, m: int, replicas: int
) -> npt.NDArray[np.bool_]:
    """Which ``(stage, mb)`` keys must be complete: all of them with one replica; with several,
    those of the replica each micro-batch runs on (the one its forwards are on, which must be
    exactly one replica)."""
    if replicas == 1:
        return np.ones(n_st * m, dtype=bool)
    if n_st % replicas:
        raise ScheduleError(
            "schedule",
            f"the schedule has {n_st} stages, not a multiple of its {replicas} model replicas",
        )
    per_rep = np.asarray(
        np.any(c_f.reshape(replicas, n_st // replicas, m) > 0, axis=1), dtype=bool
    )  # (replicas, m)
    n_rep = per_rep.sum(axis=0)
    if (n_rep == 0).any():
        b = int(np.argmax(n_rep == 0))
        raise ScheduleError("schedule", f"micro-batch {b} has no F action on any replica")
    if (n_rep > 1).any():
        b = int(np.argmax(n_rep > 1))
        reps = [int(r) for r in np.flatnonzero(per_rep[:, b])]
        raise ScheduleError(
            "schedule",
            f"micro-batch {b} has forwards on replicas {reps}; a micro-batch runs through the "
            "stages of one replica only",
        )
    rep_of = np.argmax(per_rep, axis=0)
    grid = np.arange(replicas)[:, None, None] == rep_of[None, None, :]
    return np.broadcast_to(grid, (replicas, n_st // replicas, m)).reshape(-1)


def validate_schedule(
    actions_per_rank: Sequence[Sequence[Action]],
    stage_ranks: Sequence[int] | None = None,
    replicas: int = 1,
) -> ValidatedSchedule:
    """Check that ``actions_per_rank`` is a complete, well-ordered compute schedule.

    Rules: stages are ``0..S-1`` and micro-batches ``0..m-1`` (``S``, ``m`` inferred from the
    largest index); every ``(stage, mb)`` has exactly one ``F`` and either one ``B`` or one
    ``I`` and one ``W``; all actions of a stage are on one rank, the one that ``stage_ranks``
    gives if passed; and on that rank ``F`` comes before the ``B``/``I``, and ``I`` before
    ``W`` (otherwise the rank would wait on itself forever). Raises :class:`ScheduleError`
    (field ``schedule`` or ``stage_ranks``) naming the first offending rank/stage/micro-batch.

    With ``replicas`` > 1 (Chimera, BitPipe) the stages are that many model replicas of
    ``S = n_stages / replicas`` stages each (replica ``r`` holds global stages
    ``r·S .. r·S+S-1``); each micro-batch must run completely through exactly one replica and
    have no action on the other replicas' stages.
    """
    ranks_of, n_st, m = check_schedule_arrays(
        schedule_arrays(actions_per_rank), stage_ranks, replicas
    )
    return ValidatedSchedule(
        actions=[list(acts) for acts in actions_per_rank],
        stage_ranks=ranks_of,
        n_stages=n_st,
        n_microbatches=m,
    )


def as_action(item: object, rank: int, pos: int) -> Action:
    """``item`` (an Action or a ``(stage, mb, kind)`` tuple) as an Action; raises
    :class:`ScheduleError` naming the rank and position otherwise."""
    if isinstance(item, Action):
        return item
    if isinstance(item, tuple) and len(item) == 3:
        stage, mb, kind = item
        if kind not in KIND_CODES:
            raise ScheduleError(
                "schedule",
                f"rank {rank}, position {pos}: kind={kind!r} must be one of F, B, I, W",
            )
        if isinstance(stage, int | np.integer) and isinstance(mb, int | np.integer):
            return Action(int(stage), int(mb), kind)
    raise ScheduleError(
        "schedule",
        f"rank {rank}, position {pos}: {item!r} is not an Action or a (stage, mb, kind) tuple",
    )


def parse_schedule(rows: Sequence[Sequence[str]]) -> list[list[Action]]:
    """Per-rank lists of torch ``_Action`` strings (``"0F3"``, see :meth:`Action.parse`) as
    :class:`Action` lists. Only parses; :func:`validate_schedule` checks the schedule. Raises
    :class:`ScheduleError` (field ``schedule``) naming the rank and position of a bad string."""
    out: list[list[Action]] = []
    for r, row in enumerate(rows):
        if isinstance(row, str):
            raise ScheduleError("schedule", f"rank {r}: expected a list of action strings, "
                                f"got the string {row!r}")
        acts: list[Action] = []
        for pos, text in enumerate(row):
            try:
                acts.append(Action.parse(text))
            except ScheduleError as exc:
                raise ScheduleError(
                    "schedule", f"rank {r}, position {pos}: {exc.problems[0].rule}") from None
        out.append(acts)
    return out


def format_schedule(actions_per_rank: Iterable[Iterable[Action]]) -> list[list[str]]:
    """Per-rank action lists as torch ``_Action`` strings (:meth:`Action.torch_str`)."""
    return [[a.torch_str() for a in acts] for acts in actions_per_rank]


def build_custom(
    actions_per_rank: Iterable[Iterable[Action | tuple[int, int, str]]],
    stage_ranks: Sequence[int] | None = None,
    replicas: int = 1,
) -> ValidatedSchedule:
    """Validate an arbitrary schedule given as actions (or ``(stage, mb, kind)`` tuples) per rank.

    Returns the schedule as :class:`Action` lists with its stage -> rank map (taken from
    ``stage_ranks`` or inferred); see :func:`validate_schedule` for the rules checked.
    """
    normalised = [
        [as_action(item, r, pos) for pos, item in enumerate(acts)]
        for r, acts in enumerate(actions_per_rank)
    ]
    return validate_schedule(normalised, stage_ranks, replicas)
