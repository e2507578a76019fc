"""Bidirectional schedules over two model replicas: Chimera and BitPipe.

Both keep two copies of the model in one pipeline group of ``pp`` ranks, laid out in opposite
directions, and send half of the micro-batches through each copy; a micro-batch never leaves
its replica. Global stage ``g = replica · S + s`` is stage ``s`` (model order) of replica
``replica``, ``S`` stages per replica; micro-batches are numbered globally, and
:func:`microbatch_replica` says which replica runs each.

Chimera (Li & Hoefler, SC'21, "Chimera: Efficiently Training Large-Scale Neural Networks with
Bidirectional Pipelines", §3.1–3.2 and §3.5)
    ``S = pp`` stages per replica. The *down* replica puts stage ``s`` on rank ``s``, the *up*
    replica on rank ``pp−1−s`` (§3.1). The basic scheduling unit has ``N = D = pp``
    micro-batches, ``D/2`` per replica, each replica scheduled as 1F1B; the two are merged,
    and for even ``D`` no two actions of a rank share a time slot (§3.2). More micro-batches
    are run as concatenated basic units (§3.5, "direct concatenation"). The per-rank order
    here is the slot order of that merged unit-time timeline, as the authors' schedule
    generator computes it (``AutoGeneratePipelineRank`` / ``MyPipeLine`` in the Chimera code
    base, github.com/Shigangli/Chimera): micro-batch ``i`` of a unit enters stage 0 at slot
    ``2i``, moves one stage per slot forward (``F(s)`` at ``2i + s``), turns at the last stage
    and moves one stage per slot back (``B(s)`` at ``2i + 2D − 1 − s``); a replica's next unit
    starts when its previous unit's first micro-batch has left (``2D`` slots later). Each rank
    then runs ``2N`` actions in ``2N + D − 2`` slots: ``D − 2`` bubbles, the bubble ratio
    ``(D−2)/(2N+D−2)`` of the paper's Table 2 when a forward and a backward take equally long
    (with a longer backward the merged order leaves intermediate bubbles, §3.5, which the
    simulator shows). Preconditions: ``pp`` even (§3.2: conflict-free merging needs an even
    ``D``) and ``n_microbatches`` a multiple of ``pp`` (whole basic units, §3.5).

BitPipe (Wu, Chen & Yu, 2024, "BitPipe: Bidirectional Interleaved Pipeline Parallelism for
Accelerating Large Models Training", arXiv 2410.19367)
    Two V-shaped interleaved pipelines in opposite directions: ``S = 2·pp`` stages per replica,
    two per rank and replica. The down replica puts stage ``s`` on rank ``s`` for ``s < pp`` and
    on rank ``2·pp−1−s`` otherwise (the V of ZB-V, so the turn at the last rank is a local
    copy); the up replica mirrors it (rank ``pp−1−s``, then ``s−pp``). The basic unit has
    ``N = D = pp`` micro-batches, ``D/2`` per replica (the paper's Figure "BitPipe", D = 4,
    N = 4, drawn with a backward twice a forward). The per-rank order here is the order in
    which a unit-time list schedule of that figure's model runs the actions: a forward takes 1
    slot, a backward 2; micro-batch ``i`` of a replica's first unit may enter at slot ``2i``;
    a rank runs whatever is ready, backwards first, then the oldest micro-batch. It reproduces
    the paper's figure slot for slot (tested): ``2(D−2)`` idle slots per rank on ``6N`` of
    work, a bubble ratio ``(D−2)/(3N+D−2)``; the list schedule reaches that count for every
    ``N = D ≤ 6`` and exceeds it by a few slots beyond (one slot at ``D = N = 8``; measured).
    For more micro-batches the paper concatenates basic units (its Figure "scale to more
    micro-batches": the second unit's micro-batches enter back to back at slot ``6D = 24``,
    the slot at which the first unit's first micro-batch has finished its backward); here
    unit ``k+1`` of a replica is released when unit ``k``'s first micro-batch of that replica
    has left the pipeline, its micro-batches one slot apart, which bounds the micro-batches in
    flight whatever ``N``. As with Chimera's direct concatenation, a backward twice as long as
    a forward leaves intermediate bubbles between units, which the simulation shows.
    Preconditions: ``pp`` even, ``n_microbatches`` a multiple of ``pp``, 2 stages per rank and
    replica.

    These are our reconstructions of the papers' orders from their definitions and figures;
    neither paper's own generator is a torch schedule, and neither can be run by torch's
    runtime (see :mod:`costmodel.pipeline.action_csv`).

Both orders come from a feasible execution of the dependency graph, so replaying them with any
stage times never deadlocks (every rank's order is consistent with one global topological
order).
"""

from __future__ import annotations

import heapq

from costmodel.pipeline.schedules import ScheduleError

__all__ = [
    "BITPIPE",
    "CHIMERA",
    "bidirectional_ranks",
    "bidirectional_stage_to_rank",
    "check_bidirectional",
    "microbatch_replica",
    "stages_per_replica",
]

CHIMERA = "Chimera"
BITPIPE = "BitPipe"
_STAGES_PER_RANK = {CHIMERA: 1, BITPIPE: 2}
"""Stages per rank and replica (``plan.virtual_stages``)."""

_Op = tuple[int, int, str]


def check_bidirectional(name: str, pp: int, virtual_stages: int, n_microbatches: int) -> None:
    """The papers' preconditions (see the module docstring); raises :class:`ScheduleError`."""
    v_need = _STAGES_PER_RANK[name]
    if virtual_stages != v_need:
        what = "one stage" if v_need == 1 else "two stages (a V)"
        raise ScheduleError(
            "virtual_stages",
            f"virtual_stages={virtual_stages} must be {v_need} for {name} ({what} per rank of "
            "each of its two model replicas)",
        )
    if pp < 2 or pp % 2:
        raise ScheduleError(
            "pp",
            f"pp={pp} must be even for {name}: its two replicas' pipelines are merged without "
            "conflicts only for an even number of ranks (Chimera §3.2)",
        )
    if n_microbatches < pp or n_microbatches % pp:
        raise ScheduleError(
            "n_microbatches",
            f"n_microbatches={n_microbatches} must be a multiple of pp={pp} for {name}: it runs "
            f"basic units of pp micro-batches, pp/2 per replica (Chimera §3.2, §3.5)",
        )


def stages_per_replica(name: str, pp: int) -> int:
    """Model stages in each replica: ``pp`` for Chimera, ``2·pp`` for BitPipe."""
    return _STAGES_PER_RANK[name] * pp


def bidirectional_stage_to_rank(name: str, pp: int) -> list[int]:
    """Rank of each global stage (replica 0's ``S`` stages, then replica 1's)."""
    if name == CHIMERA:
        return list(range(pp)) + [pp - 1 - s for s in range(pp)]
    down = [s if s < pp else 2 * pp - 1 - s for s in range(2 * pp)]
    up = [pp - 1 - s if s < pp else s - pp for s in range(2 * pp)]
    return down + up


def microbatch_replica(pp: int, n_microbatches: int) -> list[int]:
    """Replica of each micro-batch: unit ``k`` (``pp`` micro-batches) sends its first ``pp/2``
    to replica 0 and the rest to replica 1."""
    half = pp // 2
    return [(j % pp) // half for j in range(n_microbatches)]


def _unit_layout(pp: int, m: int) -> list[tuple[int, int, int, int]]:
    """(micro-batch, replica, unit, index in the unit's replica half) of every micro-batch."""
    half = pp // 2
    out = []
    for j in range(m):
        k, rest = divmod(j, pp)
        rep, i = divmod(rest, half)
        out.append((j, rep, k, i))
    return out


def _chimera_ranks(pp: int, m: int) -> list[list[_Op]]:
    """Slot order of the merged unit-time timeline (module docstring, Chimera)."""
    placement = bidirectional_stage_to_rank(CHIMERA, pp)
    slotted: list[list[tuple[int, _Op]]] = [[] for _ in range(pp)]
    for j, rep, k, i in _unit_layout(pp, m):
        base = 2 * pp * k + 2 * i
        for s in range(pp):
            g = rep * pp + s
            r = placement[g]
            slotted[r].append((base + s, (g, j, "F")))
            slotted[r].append((base + 2 * pp - 1 - s, (g, j, "B")))
    return [[op for _, op in sorted(ops)] for ops in slotted]


def _bitpipe_ranks(pp: int, m: int) -> list[list[_Op]]:
    """Start order of the unit-time list schedule (module docstring, BitPipe)."""
    n_st = 2 * pp  # stages per replica
    placement = bidirectional_stage_to_rank(BITPIPE, pp)
    fwd, bwd = 1, 2  # slots of a forward and of a backward, as the paper's figures draw them
    # step p of micro-batch j: p < n_st -> F of local stage p, else B of local stage 2·n_st-1-p
    rep_of: dict[int, int] = {}
    layout = _unit_layout(pp, m)
    units = m // pp
    by_unit: dict[tuple[int, int], list[int]] = {}  # (unit, replica) -> micro-batches in order
    for j, rep, k, _ in layout:
        rep_of[j] = rep
        by_unit.setdefault((k, rep), []).append(j)
    unit_of = {j: k for j, _, k, _ in layout}
    release: dict[int, int] = {}
    pending: list[tuple[int, int]] = []  # (release slot, micro-batch)

    def release_unit(k: int, rep: int, t0: int, spacing: int) -> None:
        for i, j in enumerate(by_unit[(k, rep)]):
            release[j] = t0 + spacing * i
            heapq.heappush(pending, (release[j], j))

    for rep in (0, 1):
        release_unit(0, rep, 0, 2)
    ready: list[list[tuple[int, int, int, int]]] = [[] for _ in range(pp)]
    running: list[tuple[int, int, int]] = []  # (end slot, micro-batch, step)
    free = [0] * pp
    order: list[list[_Op]] = [[] for _ in range(pp)]
    total = m * 2 * n_st
    done = 0
    t = 0

    def stage_of(j: int, p: int) -> int:
        local = p if p < n_st else 2 * n_st - 1 - p
        return rep_of[j] * n_st + local

    def push(j: int, p: int) -> None:
        # priority: backward first, then the oldest micro-batch
        heapq.heappush(ready[placement[stage_of(j, p)]], (int(p < n_st), release[j], j, p))

    while done < total:
        while running and running[0][0] <= t:
            _, j, p = heapq.heappop(running)
            done += 1
            if p + 1 < 2 * n_st:
                push(j, p + 1)
            elif (unit_of[j] + 1 < units
                  and by_unit[(unit_of[j], rep_of[j])][0] == j):
                # the unit's first micro-batch has left: the next unit enters, back to back
                release_unit(unit_of[j] + 1, rep_of[j], t, 1)
        while pending and pending[0][0] <= t:
            push(heapq.heappop(pending)[1], 0)
        for r in range(pp):
            if free[r] <= t and ready[r]:
                _, _, j, p = heapq.heappop(ready[r])
                dur = fwd if p < n_st else bwd
                free[r] = t + dur
                heapq.heappush(running, (t + dur, j, p))
                order[r].append((stage_of(j, p), j, "F" if p < n_st else "B"))
        if done >= total:
            break
        candidates = [running[0][0]] if running else []
        if pending:
            candidates.append(pending[0][0])
        busy_ends = [f for f in free if f > t]
        t = min(candidates + busy_ends) if candidates or busy_ends else t + 1
    return order


def bidirectional_ranks(name: str, pp: int, n_microbatches: int) -> list[list[_Op]]:
    """The per-rank ``(global stage, micro-batch, kind)`` order of Chimera or BitPipe (checked
    by the caller with :func:`check_bidirectional`)."""
    if name == CHIMERA:
        return _chimera_ranks(pp, n_microbatches)
    return _bitpipe_ranks(pp, n_microbatches)
