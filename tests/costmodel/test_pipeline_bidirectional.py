"""Chimera and BitPipe: two model replicas in one pipeline (costmodel.pipeline.bidirectional).

D = pp (pipeline depth), N = micro-batches, T = one slot. References: Li & Hoefler 2021,
"Chimera" (SC'21), §3.1-3.2 (bidirectional merge, bubble count D − 2, Table 2: bubble ratio
(D−2)/(2N+D−2) and activation memory between (D/2+1)·M_a and D·M_a); Wu, Chen & Yu 2024,
"BitPipe" (arXiv 2410.19367), Figure "BitPipe" (D = 4, N = 4, backward = 2 forwards).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costmodel.pipeline.bidirectional import microbatch_replica, stages_per_replica
from costmodel.pipeline.schedules import (
    ALL_SCHEDULES,
    BIDIRECTIONAL_SCHEDULES,
    SCHEDULES,
    Action,
    ScheduleError,
    build_custom,
    build_schedule,
    n_stages,
    replicas,
    stage_to_rank,
)
from costmodel.pipeline.simulator import SimResult, encoded_schedule, simulate, simulate_named


def chimera(pp: int, m: int, tf: float | np.ndarray = 1.0, tb: float | np.ndarray = 1.0,
            p2p: float | np.ndarray = 0.0) -> SimResult:
    return simulate_named("Chimera", pp, m, 1, tf, tb, 0.0, p2p)


def bitpipe(pp: int, m: int, tf: float | np.ndarray = 1.0, tb: float | np.ndarray = 2.0,
            p2p: float | np.ndarray = 0.0) -> SimResult:
    return simulate_named("BitPipe", pp, m, 2, tf, tb, 0.0, p2p)


# ----------------------------------------------------------------------------------------------
# Names, placement, preconditions
# ----------------------------------------------------------------------------------------------


def test_names_and_replicas() -> None:
    assert BIDIRECTIONAL_SCHEDULES == ("Chimera", "BitPipe")
    assert ALL_SCHEDULES == SCHEDULES + BIDIRECTIONAL_SCHEDULES
    assert [replicas(s) for s in ALL_SCHEDULES] == [1] * 6 + [2, 2]
    assert n_stages("Chimera", 4) == 8
    assert n_stages("BitPipe", 4, 2) == 16
    assert stages_per_replica("Chimera", 4) == 4
    assert stages_per_replica("BitPipe", 4) == 8


def test_placements() -> None:
    # Chimera §3.1: down replica stage s on rank s, up replica on rank D-1-s
    assert stage_to_rank("Chimera", 4) == [0, 1, 2, 3, 3, 2, 1, 0]
    # BitPipe: two V-shaped replicas in opposite directions
    assert stage_to_rank("BitPipe", 4, 2) == [0, 1, 2, 3, 3, 2, 1, 0, 3, 2, 1, 0, 0, 1, 2, 3]
    for pp in (2, 4, 6):
        ranks = stage_to_rank("BitPipe", pp, 2)
        assert Counter(ranks) == dict.fromkeys(range(pp), 4)  # 2 stages per rank and replica
        ranks = stage_to_rank("Chimera", pp)
        assert Counter(ranks) == dict.fromkeys(range(pp), 2)


@pytest.mark.parametrize(
    ("name", "pp", "m", "v", "field"),
    [
        ("Chimera", 3, 6, 1, "pp"),
        ("Chimera", 1, 2, 1, "pp"),
        ("Chimera", 4, 6, 1, "n_microbatches"),
        ("Chimera", 4, 2, 1, "n_microbatches"),
        ("Chimera", 4, 4, 2, "virtual_stages"),
        ("BitPipe", 4, 4, 1, "virtual_stages"),
        ("BitPipe", 5, 10, 2, "pp"),
        ("BitPipe", 4, 10, 2, "n_microbatches"),
    ],
)
def test_preconditions(name: str, pp: int, m: int, v: int, field: str) -> None:
    with pytest.raises(ScheduleError) as info:
        build_schedule(name, pp, m, v)
    assert info.value.field == field


@pytest.mark.parametrize("name", BIDIRECTIONAL_SCHEDULES)
@pytest.mark.parametrize(("pp", "units"), [(2, 1), (2, 3), (4, 1), (4, 2), (6, 2), (8, 3)])
def test_every_stage_microbatch_once_on_its_replica(name: str, pp: int, units: int) -> None:
    """Every micro-batch runs F and B exactly once on every stage of its own replica, none on
    the other; half of each unit goes to each replica; each rank runs its stages' actions."""
    m = units * pp
    v = 1 if name == "Chimera" else 2
    sched = build_schedule(name, pp, m, v)
    per = stages_per_replica(name, pp)
    rep = microbatch_replica(pp, m)
    assert Counter(rep) == {0: m // 2, 1: m // 2}
    count = Counter((a.stage, a.mb, a.kind) for acts in sched for a in acts)
    expected = {(r * per + s, j, k) for j, r in enumerate(rep) for s in range(per)
                for k in "FB"}
    assert set(count) == expected
    assert set(count.values()) == {1}
    placement = stage_to_rank(name, pp, v)
    for r, acts in enumerate(sched):
        assert all(placement[a.stage] == r for a in acts)
    build_custom(sched, placement, replicas=2)  # passes the validator


# ----------------------------------------------------------------------------------------------
# Chimera closed forms (uniform stages, forward = backward = T)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pp", [2, 4, 6, 8, 16])
@pytest.mark.parametrize("units", [1, 2, 3])
def test_chimera_bubbles_match_the_paper(pp: int, units: int) -> None:
    """Chimera §3.2 / Table 2: with equal forward and backward times every worker runs its 2N
    passes in 2N + D − 2 slots, D − 2 bubbles (1F1B and GPipe have 2(D − 1)); bubble ratio
    (D−2)/(2N+D−2) of the makespan, i.e. (D−2)/(2N) of the busy time as SimResult counts it.
    Direct concatenation of basic units keeps it seamless (§3.5)."""
    m = units * pp
    res = chimera(pp, m)
    np.testing.assert_allclose(res.per_rank_busy, 2 * m)
    assert res.step_time == pytest.approx(2 * m + pp - 2)
    assert (res.step_time - res.max_rank_busy) / res.step_time == pytest.approx(
        (pp - 2) / (2 * m + pp - 2))
    f1b = simulate_named("1F1B", pp, m, 1, 1.0, 1.0, 0.0)
    assert f1b.step_time - f1b.max_rank_busy == pytest.approx(2 * (pp - 1))  # 2(D-1) bubbles
    if pp > 2:
        assert res.bubble_fraction < f1b.bubble_fraction


@pytest.mark.parametrize(("pp", "units"), [(2, 2), (4, 1), (4, 3), (6, 2), (8, 1)])
def test_chimera_order_is_the_paper_timeline(pp: int, units: int) -> None:
    """Each rank runs its actions in the order of their slots in the merged timeline
    (micro-batch i of a unit enters at 2i, F(s) at 2i + s, B(s) at 2i + 2D − 1 − s, units 2D
    slots apart; the Chimera generator's timeline), no two in one slot; replayed as early as
    dependencies allow with unit times, no action starts later than its slot."""
    m = units * pp
    rep = microbatch_replica(pp, m)

    def slot(a: Action) -> int:
        k, idx = divmod(a.mb, pp)
        base = 2 * pp * k + 2 * (idx % (pp // 2))
        s = a.stage % pp
        return base + s if a.kind == "F" else base + 2 * pp - 1 - s

    for acts in build_schedule("Chimera", pp, m):
        slots = [slot(a) for a in acts]
        assert slots == sorted(slots)
        assert len(set(slots)) == len(slots)
        assert all(rep[a.mb] == a.stage // pp for a in acts)
    res = chimera(pp, m)
    tl = res.timeline
    for i in range(len(tl.start)):
        a = Action(int(tl.stage[i]), int(tl.mb[i]), "FB"[int(tl.kind[i])])
        assert tl.start[i] <= slot(a)


def test_chimera_rank_order_golden() -> None:
    """D = 4, N = 4 (the paper's Figure 3 unit): rank 0 holds down stage 0 (global 0) and up
    stage 3 (global 7); micro-batches 0, 1 go down, 2, 3 up."""
    sched = build_schedule("Chimera", 4, 4)
    assert sched[0] == [
        Action(0, 0, "F"), Action(0, 1, "F"), Action(7, 2, "F"), Action(7, 2, "B"),
        Action(7, 3, "F"), Action(7, 3, "B"), Action(0, 0, "B"), Action(0, 1, "B"),
    ]


@pytest.mark.parametrize("pp", [4, 6, 8, 16])
@pytest.mark.parametrize("units", [1, 2])
def test_chimera_activation_memory(pp: int, units: int) -> None:
    """Chimera Table 2: activation memory between (D/2 + 1) and D micro-batches' worth per
    worker (1F1B: from 1 on the last rank to D on the first), and symmetric between the
    workers r and D − 1 − r."""
    res = chimera(pp, units * pp)
    peak = res.peak_inflight.tolist()
    assert min(peak) == pp // 2 + 1
    assert max(peak) == pp
    assert peak == peak[::-1]


# ----------------------------------------------------------------------------------------------
# BitPipe
# ----------------------------------------------------------------------------------------------

# The paper's Figure "BitPipe" (D = 4, N = 4, forward 1 slot, backward 2): start slot of every
# action, read off the figure (its micro-batches 1, 2 go down = ours 0, 1; 3, 4 up = ours 2, 3).
# Per micro-batch: forward starts on the replica's stages 0..7, then backward starts on its
# stages 7..0.
BITPIPE_FIGURE = {
    0: ([0, 1, 2, 3, 4, 5, 6, 7], [8, 10, 12, 14, 16, 18, 20, 22]),
    1: ([2, 3, 4, 5, 6, 7, 8, 10], [12, 14, 16, 18, 20, 22, 24, 26]),
    2: ([0, 1, 2, 3, 4, 5, 6, 7], [8, 10, 12, 14, 16, 18, 20, 22]),
    3: ([2, 3, 4, 5, 6, 7, 8, 10], [12, 14, 16, 18, 20, 22, 24, 26]),
}


def test_bitpipe_reproduces_the_paper_figure() -> None:
    """Each rank runs the figure's actions in the figure's order; replayed as early as the
    dependencies allow (the figure holds micro-batch 1 back to slot 2; the replay may start it
    at 1) with the figure's times, nothing starts later than in the figure and the step ends
    at the figure's 28 slots."""
    placement = stage_to_rank("BitPipe", 4, 2)
    figure: dict[int, list[tuple[int, Action]]] = {r: [] for r in range(4)}
    for mb, (fwd, bwd) in BITPIPE_FIGURE.items():
        base = 8 * microbatch_replica(4, 4)[mb]
        for s in range(8):
            figure[placement[base + s]].append((fwd[s], Action(base + s, mb, "F")))
            figure[placement[base + s]].append((bwd[7 - s], Action(base + s, mb, "B")))
    sched = build_schedule("BitPipe", 4, 4, 2)
    for r in range(4):
        assert sched[r] == [a for _, a in sorted(figure[r], key=lambda x: x[0])], r
    res = bitpipe(4, 4, 1.0, 2.0)
    slot = {a: t for r in range(4) for t, a in figure[r]}
    tl = res.timeline
    for i in range(len(tl.start)):
        a = Action(int(tl.stage[i]), int(tl.mb[i]), "FB"[int(tl.kind[i])])
        assert tl.start[i] <= slot[a]
    assert res.step_time == 28.0  # 24 slots of work + 2(D − 2) bubbles per rank


@pytest.mark.parametrize("pp", [2, 4, 6])
def test_bitpipe_basic_unit_bubbles(pp: int) -> None:
    """One basic unit (N = D) with backward = 2 forwards: 6N slots of work per rank and
    2(D − 2) idle slots, bubble ratio (D−2)/(3N+D−2) (the figure's count, D ≤ 6)."""
    res = bitpipe(pp, pp)
    np.testing.assert_allclose(res.per_rank_busy, 6 * pp)
    assert res.step_time == pytest.approx(6 * pp + 2 * (pp - 2))
    assert (res.step_time - res.max_rank_busy) / res.step_time == pytest.approx(
        (pp - 2) / (3 * pp + pp - 2))


@pytest.mark.parametrize("pp", [4, 8, 16])
@pytest.mark.parametrize("units", [1, 2])
def test_bitpipe_fewer_bubbles_than_chimera_and_1f1b(pp: int, units: int) -> None:
    """BitPipe's claim over its baselines with a backward twice a forward: fewer bubbles than
    Chimera and than 1F1B on the same model (a BitPipe chunk is half a stage)."""
    m = units * pp
    bit = bitpipe(pp, m, 0.5, 1.0)
    chim = chimera(pp, m, 1.0, 2.0)
    f1b = simulate_named("1F1B", pp, m, 1, 1.0, 2.0, 0.0)
    np.testing.assert_allclose(bit.per_rank_busy, chim.per_rank_busy)
    assert bit.bubble_fraction < chim.bubble_fraction < f1b.bubble_fraction


@pytest.mark.parametrize("pp", [2, 4, 6, 8])
@pytest.mark.parametrize("units", [1, 2, 3])
def test_bitpipe_activation_memory_is_balanced(pp: int, units: int) -> None:
    """Bidirectional placement balances activations: rank r and rank D − 1 − r hold the same
    peak, and no rank holds more than 2D half-stage chunks, the D full-stage activations of
    1F1B's first rank."""
    res = bitpipe(pp, units * pp)
    peak = res.peak_inflight.tolist()
    assert peak == peak[::-1]
    assert max(peak) <= 2 * pp
    assert max(peak) / 2 <= simulate_named("1F1B", pp, units * pp, 1, 1.0, 2.0, 0.0
                                           ).peak_inflight.max()


# ----------------------------------------------------------------------------------------------
# Simulation with replicas: dependencies stay inside a replica, any stage times
# ----------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(BIDIRECTIONAL_SCHEDULES),
    pp=st.sampled_from([2, 4, 6]),
    units=st.integers(1, 3),
    data=st.data(),
)
def test_random_stage_times_respect_dependencies(
    name: str, pp: int, units: int, data: st.DataObject
) -> None:
    """Never deadlocks; each action starts after its in-replica predecessor (+ p2p across
    ranks), a rank runs one action at a time in its order, and nothing waits on the other
    replica."""
    v = 1 if name == "Chimera" else 2
    m = units * pp
    per = stages_per_replica(name, pp)
    n_st = 2 * per
    dur = st.floats(0.0, 3.0, allow_nan=False)
    tf = np.array(data.draw(st.lists(dur, min_size=per, max_size=per)))
    ti = np.array(data.draw(st.lists(dur, min_size=per, max_size=per)))
    lat = np.array(data.draw(st.lists(dur, min_size=n_st - 1, max_size=n_st - 1)))
    res = simulate_named(name, pp, m, v, tf, ti, 0.0, lat)
    tl = res.timeline
    placement = stage_to_rank(name, pp, v)
    end = {}
    for i in range(len(tl.start)):
        end[(int(tl.kind[i]), int(tl.stage[i]), int(tl.mb[i]))] = (tl.start[i], tl.end[i])
    for (kind, g, j), (start, _) in end.items():
        s = g % per
        deps = []
        if kind == 0 and s > 0:
            deps.append(((0, g - 1, j), g - 1))
        if kind == 1:
            deps.append(((0, g, j), None))
            if s < per - 1:
                deps.append(((1, g + 1, j), g))
        for key, boundary in deps:
            assert key in end  # the predecessor is in the same replica
            charge = lat[boundary] if boundary is not None and \
                placement[boundary] != placement[boundary + 1] else 0.0
            assert start >= end[key][1] + charge - 1e-9
    for r in range(pp):
        sel = tl.rank == r
        assert (tl.start[sel][1:] >= tl.end[sel][:-1] - 1e-12).all()
    assert res.replicas == 2
    assert res.stage_ranks == tuple(placement)


def test_durations_per_model_stage_or_per_global_stage() -> None:
    tf = np.array([1.0, 2.0, 1.5, 0.5])
    a = chimera(4, 8, tf, 2 * tf)
    b = chimera(4, 8, np.tile(tf, 2), np.tile(2 * tf, 2))
    assert a.step_time == b.step_time
    np.testing.assert_array_equal(a.timeline.start, b.timeline.start)
    with pytest.raises(ScheduleError) as info:
        chimera(4, 8, np.ones(3))
    assert info.value.field == "t_f"
    assert "per model stage (4)" in str(info.value)


def test_encoded_bidirectional_schedule_knows_its_replicas() -> None:
    enc = encoded_schedule("BitPipe", 4, 8, 2)
    assert enc.n_replicas == 2
    assert enc.n_stages == 16
    sched = build_schedule("BitPipe", 4, 8, 2)
    a = simulate(sched, stage_to_rank("BitPipe", 4, 2), 1.0, 1.0, 1.0, 0.1, replicas=2)
    b = simulate(enc, None, 1.0, 1.0, 1.0, 0.1)
    np.testing.assert_array_equal(a.timeline.start, b.timeline.start)


def test_validator_rejects_a_microbatch_on_both_replicas() -> None:
    # stages 0-1 replica 0, 2-3 replica 1 (pp = 2, one stage per rank and replica)
    good = [
        [Action(0, 0, "F"), Action(3, 1, "F"), Action(3, 1, "B"), Action(0, 0, "B")],
        [Action(2, 1, "F"), Action(1, 0, "F"), Action(1, 0, "B"), Action(2, 1, "B")],
    ]
    assert build_custom(good, replicas=2).n_stages == 4
    both = [[*list(good[0]), Action(3, 0, "F")], list(good[1])]
    with pytest.raises(ScheduleError, match="micro-batch 0 has forwards on replicas"):
        build_custom(both, replicas=2)
    stray = [[*list(good[0]), Action(3, 0, "B")], list(good[1])]
    with pytest.raises(ScheduleError, match="has a backward but no F action"):
        build_custom(stray, replicas=2)
    with pytest.raises(ScheduleError, match="no F action"):  # one replica: incomplete
        build_custom(good)
    with pytest.raises(ScheduleError, match="not a multiple of its 3 model replicas"):
        build_custom(good, replicas=3)
