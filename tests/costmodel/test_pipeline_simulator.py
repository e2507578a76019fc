"""Tests of the pipeline simulator (costmodel.pipeline.simulator).

Closed forms are derived in the docstrings; p = pp (ranks), m = micro-batches, v = stages per
rank, tb = t_i + t_w (a full backward).

References: Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU
Clusters Using Megatron-LM" (1F1B and interleaved bubbles and in-flight micro-batches);
Qi et al. 2023, "Zero Bubble Pipeline Parallelism" (arXiv 2401.10241; ZB-H1 in Sec. 2.1, ZB-V
in Sec. 6).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from costmodel.pipeline.schedules import (
    KIND_CODES,
    SCHEDULES,
    Action,
    ScheduleError,
    build_schedule,
    stage_to_rank,
)
from costmodel.pipeline.simulator import (
    EncodedSchedule,
    SimResult,
    _per_rank_peak,
    encode_schedule,
    encoded_schedule,
    simulate,
    simulate_named,
)


def run(
    name: str,
    pp: int,
    m: int,
    v: int = 1,
    tf: float | np.ndarray = 1.0,
    ti: float | np.ndarray = 1.0,
    tw: float | np.ndarray = 1.0,
    p2p: float | np.ndarray | list[float] = 0.0,
) -> SimResult:
    return simulate_named(name, pp, m, v, tf, ti, tw, p2p)


def stages_per_rank(name: str) -> list[int]:
    return {
        "GPipe": [1],
        "1F1B": [1],
        "Interleaved1F1B": [2, 3, 4],
        "InterleavedZeroBubble": [1, 2, 3],
    }.get(name, [2])


def is_valid(name: str, pp: int, m: int, v: int) -> bool:
    try:
        encoded_schedule(name, pp, m, v)
    except ScheduleError:
        return False
    return True


# ----------------------------------------------------------------------------------------------
# Reference simulator: a deliberately naive re-statement of the timing model, used as an oracle.
# ----------------------------------------------------------------------------------------------


def reference_starts(
    schedule: list[list[Action]],
    placement: list[int],
    tf: np.ndarray,
    ti: np.ndarray,
    tw: np.ndarray,
    p2p: np.ndarray,
) -> list[list[float]]:
    n_st = len(placement)

    def lat(boundary: int) -> float:
        return float(p2p[boundary]) if placement[boundary] != placement[boundary + 1] else 0.0

    def dur(a: Action) -> float:
        return float(
            {"F": tf, "I": ti, "W": tw}[a.kind][a.stage]
            if a.kind != "B"
            else ti[a.stage] + tw[a.stage]
        )

    end: dict[tuple[str, int, int], float] = {}
    starts: list[list[float]] = [[] for _ in schedule]
    free = [0.0] * len(schedule)
    ptr = [0] * len(schedule)
    progress = True
    while progress:
        progress = False
        for r, acts in enumerate(schedule):
            while ptr[r] < len(acts):
                a = acts[ptr[r]]
                deps: list[tuple[tuple[str, int, int], float]] = []
                if a.kind == "F" and a.stage > 0:
                    deps.append((("F", a.stage - 1, a.mb), lat(a.stage - 1)))
                if a.kind in "BI":
                    deps.append((("F", a.stage, a.mb), 0.0))
                    if a.stage < n_st - 1:
                        deps.append((("G", a.stage + 1, a.mb), lat(a.stage)))
                if a.kind == "W":
                    deps.append((("G", a.stage, a.mb), 0.0))
                if any(d not in end for d, _ in deps):
                    break
                t = max([free[r]] + [end[d] + la for d, la in deps])
                starts[r].append(t)
                free[r] = t + dur(a)
                end[("G" if a.kind in "BI" else a.kind, a.stage, a.mb)] = free[r]
                ptr[r] += 1
                progress = True
    assert all(ptr[r] == len(schedule[r]) for r in range(len(schedule))), "reference deadlock"
    return starts


# ----------------------------------------------------------------------------------------------
# Uniform stages, no p2p: closed forms
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["GPipe", "1F1B"])
@pytest.mark.parametrize(("pp", "m"), [(1, 1), (2, 2), (4, 4), (4, 8), (3, 7), (8, 32)])
@pytest.mark.parametrize(("tf", "ti", "tw"), [(1.0, 1.0, 1.0), (1.0, 2.0, 0.0), (2.0, 0.5, 0.25)])
def test_gpipe_and_1f1b_step_time(
    name: str, pp: int, m: int, tf: float, ti: float, tw: float
) -> None:
    """Fill-drain and 1F1B both take (m + p - 1)(tf + tb): the first micro-batch needs p - 1
    forward hops before the last stage starts, the last one p - 1 backward hops after it ends,
    and no rank idles in between. Bubble fraction = (p - 1) / m (Narayanan et al. 2021)."""
    res = run(name, pp, m, 1, tf, ti, tw)
    tb = ti + tw
    assert res.step_time == pytest.approx((m + pp - 1) * (tf + tb))
    np.testing.assert_allclose(res.per_rank_busy, m * (tf + tb))
    assert res.bubble_fraction == pytest.approx((pp - 1) / m)


@pytest.mark.parametrize("pp", [2, 3, 4, 8])
@pytest.mark.parametrize("v", [2, 3, 4])
@pytest.mark.parametrize("rounds", [1, 2, 3])
@pytest.mark.parametrize(("tf", "tb"), [(1.0, 2.0), (1.0, 1.0), (2.0, 1.0)])
def test_interleaved_1f1b_bubble_for_multiples_of_pp(
    pp: int, v: int, rounds: int, tf: float, tb: float
) -> None:
    """Interleaved 1F1B with m a multiple of p: bubble (p - 1) / (v m) (Narayanan et al. 2021,
    Sec. 2.2.2): each of the v chunks takes 1/v of the stage time."""
    m = rounds * pp
    res = run("Interleaved1F1B", pp, m, v, tf, tb, 0.0)
    assert res.bubble_fraction == pytest.approx((pp - 1) / (v * m))
    assert res.step_time == pytest.approx((v * m + pp - 1) * (tf + tb))


@pytest.mark.parametrize(("pp", "m"), [(4, 10), (4, 6), (8, 18), (8, 10), (3, 4)])
@pytest.mark.parametrize("v", [2, 3])
def test_interleaved_1f1b_bubble_under_torch_rule(pp: int, m: int, v: int) -> None:
    """torch only asks m % max(1, m // p) == 0 (e.g. p=4, m=10: 2 rounds of 5); the bubble stays
    (p - 1) / (v m) for every accepted m >= p."""
    res = run("Interleaved1F1B", pp, m, v, 1.0, 2.0, 0.0)
    assert res.bubble_fraction == pytest.approx((pp - 1) / (v * m))


@pytest.mark.parametrize(("pp", "m"), [(2, 1), (4, 3), (4, 1), (8, 7), (8, 5)])
@pytest.mark.parametrize("v", [2, 3])
def test_interleaved_1f1b_bubble_with_fewer_microbatches_than_ranks(
    pp: int, m: int, v: int
) -> None:
    """m < p (one round of m): besides the (p - 1)(tf + tb) fill/drain, rank 0 finishes a
    chunk's m forwards p - m steps before micro-batch 0 comes back for the next chunk, at each
    of the v - 1 forward and v - 1 backward chunk changes: bubble = ((p-1) + (v-1)(p-m)) / (v m).
    """
    res = run("Interleaved1F1B", pp, m, v, 1.0, 2.0, 0.0)
    assert res.bubble_fraction == pytest.approx(((pp - 1) + (v - 1) * (pp - m)) / (v * m))


# ----------------------------------------------------------------------------------------------
# Zero-bubble schedules with t_f = t_i = t_w
# ----------------------------------------------------------------------------------------------


def startup_lower_bound(res: SimResult, tf: float, pp: int) -> float:
    """With loop or V placement, rank p-1 holds stage p-1 and no lower stage: it cannot start
    before micro-batch 0 has passed stages 0..p-2, i.e. (p-1) tf, and then has its whole busy
    time to do. So step_time >= (p-1) tf + busy(p-1) for every schedule order."""
    return (pp - 1) * tf + float(res.per_rank_busy[pp - 1])


ZB_CASES = (
    [
        ("InterleavedZeroBubble", pp, m, v)
        for pp in (2, 4, 8)
        for v in (1, 2, 3)
        for m in (pp, 2 * pp, 3 * pp)
    ]
    + [
        ("ZBVZeroBubble", pp, m, 2)
        for pp in (2, 3, 4, 8)
        for m in (2 * pp - 1, 2 * pp, 4 * pp, 4 * pp + 1)
    ]
    + [("DualPipeV", pp, m, 2) for pp in (2, 3, 4, 8) for m in (2 * pp, 2 * pp + 1, 4 * pp)]
)


@pytest.mark.parametrize(("name", "pp", "m", "v"), ZB_CASES)
def test_zero_bubble_orders_reach_the_startup_bound(name: str, pp: int, m: int, v: int) -> None:
    """With t_f = t_i = t_w = T, torch's zero-bubble orders idle only for the unavoidable
    start-up of the last rank: step_time = (p-1)T + 3vmT exactly (optimal for any order), so the
    bubble fraction is (p-1)/(3vm). The paper's tables call ZB-V and ZB-H2 'zero bubble'; this
    start-up term is what remains of it and vanishes as m grows. Strictly below 1F1B's (p-1)/m.
    """
    T = 1.0
    res = run(name, pp, m, v, T, T, T)
    np.testing.assert_allclose(res.per_rank_busy, 3 * v * m * T)
    assert res.step_time == pytest.approx(startup_lower_bound(res, T, pp))
    assert res.bubble_fraction == pytest.approx((pp - 1) / (3 * v * m))
    if pp > 1:
        assert res.bubble_fraction < (pp - 1) / m  # 1F1B's bubble fraction


@pytest.mark.parametrize(("pp", "m"), [(2, 2), (4, 4), (4, 8), (8, 8), (8, 24)])
def test_zb_h1_matches_paper(pp: int, m: int) -> None:
    """InterleavedZeroBubble with one stage per rank is the paper's ZB-H1 (torch: "ZB1P"):
    bubble (p-1)(T_F + T_B - T_W) = (p-1)T, one third of 1F1B's 3(p-1)T (Qi et al. 2023,
    Sec. 2.1), with every rank holding p in-flight micro-batches, the peak of 1F1B's rank 0."""
    zb = run("InterleavedZeroBubble", pp, m, 1)
    f1b = run("1F1B", pp, m, 1)
    assert zb.step_time - zb.max_rank_busy == pytest.approx((pp - 1) * 1.0)
    assert zb.bubble_fraction == pytest.approx(f1b.bubble_fraction / 3)
    assert zb.peak_inflight.tolist() == [pp] * pp
    assert zb.peak_inflight.max() == f1b.peak_inflight.max()


@pytest.mark.parametrize(("pp", "m"), [(2, 4), (4, 8), (4, 16), (8, 16)])
def test_zbv_memory_matches_1f1b(pp: int, m: int) -> None:
    """ZB-V keeps 1F1B's activation memory (Qi et al. 2023, Sec. 6): every rank peaks at 2p
    half-size chunk activations = p full-stage activations = 1F1B's peak on rank 0."""
    res = run("ZBVZeroBubble", pp, m, 2)
    assert res.peak_inflight.tolist() == [2 * pp] * pp
    assert res.peak_inflight.max() / 2 == run("1F1B", pp, m).peak_inflight.max()


@pytest.mark.parametrize(("pp", "m", "v"), [(2, 4, 1), (4, 8, 1), (4, 8, 2), (8, 16, 2)])
def test_interleaved_zero_bubble_defers_w(pp: int, m: int, v: int) -> None:
    """torch delays rank r's weight grads by r steady steps (num_1f1b_microbatches = rank), so
    rank r holds at most r + 1 input-grad-done-but-W-pending micro-batches."""
    res = run("InterleavedZeroBubble", pp, m, v)
    assert res.peak_pending_w.tolist() == [r + 1 for r in range(pp)]


# ----------------------------------------------------------------------------------------------
# In-flight activations
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pp", "m"), [(1, 1), (2, 2), (4, 4), (4, 9), (8, 32)])
def test_1f1b_and_gpipe_peak_inflight(pp: int, m: int) -> None:
    """1F1B: rank r holds min(p - r, m) micro-batches (Narayanan et al. 2021); GPipe: all m."""
    f1b = run("1F1B", pp, m)
    assert f1b.peak_inflight.tolist() == [min(pp - r, m) for r in range(pp)]
    gpipe = run("GPipe", pp, m)
    assert gpipe.peak_inflight.tolist() == [m] * pp
    assert f1b.peak_pending_w.tolist() == [0] * pp  # full backward: no W stash
    assert gpipe.peak_pending_w.tolist() == [0] * pp


def test_inflight_counting_rules() -> None:
    """+1 at the end of F, -1 at the end of B, or of W for a split backward; pending W counts
    the I-done, W-not-done micro-batches."""
    sched = [
        [
            Action(0, 0, "F"),
            Action(0, 1, "F"),
            Action(0, 0, "I"),
            Action(0, 1, "B"),
            Action(0, 2, "F"),
            Action(0, 2, "I"),
            Action(0, 0, "W"),
            Action(0, 2, "W"),
        ]
    ]
    res = simulate(sched, [0], 1.0, 1.0, 1.0)
    # running count: F+1 F+2 I2 B1 F2 I2 W1 W0 -> 2 ; pending W: 0 0 1 1 1 2 1 0 -> 2
    assert res.peak_inflight.tolist() == [2]
    assert res.peak_pending_w.tolist() == [2]


# ----------------------------------------------------------------------------------------------
# Unequal stage times
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pp", "m"), [(4, 8), (4, 16), (8, 8), (8, 32)])
@pytest.mark.parametrize("slow", [0, 1, 2, 3])
def test_one_slow_stage_dominates_1f1b(pp: int, m: int, slow: int) -> None:
    """Stage k 1.5x slower. Lower bound (any single-stage schedule whose ranks end on a
    backward, as 1F1B's do): rank k cannot start before micro-batch 0's forwards through stages
    < k, must then work m(tf_k + tb_k), and its last backward must still travel through stages
    < k: step >= sum_{s<k} tf_s + m (tf_k + tb_k) + sum_{s<k} tb_s, for every k.
    Upper bound by monotonicity: raising every stage to the slowest one gives the uniform
    (m + p - 1) T_slow. So step - m T_slow <= (p - 1) T_slow: the slow stage dominates."""
    tf = np.ones(pp)
    tb = 2 * np.ones(pp)
    tf[slow] *= 1.5
    tb[slow] *= 1.5
    res = run("1F1B", pp, m, 1, tf, tb, 0.0)
    t_slow = tf[slow] + tb[slow]
    lower = max(tf[:k].sum() + m * (tf[k] + tb[k]) + tb[:k].sum() for k in range(pp))
    assert res.step_time >= lower - 1e-9
    assert res.step_time <= (m + pp - 1) * t_slow + 1e-9
    assert res.max_rank_busy == pytest.approx(m * t_slow)
    # slower than the uniform pipeline by at least the extra work of the slow stage's rank
    assert res.step_time >= (m + pp - 1) * 3.0 + m * (t_slow - 3.0) * (slow == pp - 1) - 1e-9


def test_naive_bound_with_downstream_stages_does_not_hold() -> None:
    """(m-1) T_slow + sum_s T_s is NOT a lower bound for 1F1B when the slow stage is not last:
    the warm-up forwards on the slow rank overlap part of the downstream round trip."""
    pp, m = 4, 8
    tf = np.ones(pp)
    tb = 2 * np.ones(pp)
    tf[0] *= 1.5
    tb[0] *= 1.5
    res = run("1F1B", pp, m, 1, tf, tb, 0.0)
    assert res.step_time < (m - 1) * (tf[0] + tb[0]) + (tf + tb).sum()


# ----------------------------------------------------------------------------------------------
# p2p latency
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pp", "m"), [(2, 2), (4, 4), (4, 9), (8, 16)])
@pytest.mark.parametrize("lat", [0.05, 0.5, 3.0])
def test_p2p_adds_2_p_minus_1_latencies_to_gpipe(pp: int, m: int, lat: float) -> None:
    """GPipe has no F/B interleaving, so latency sits only on the fill (p-1 forward hops of the
    first micro-batch) and the drain (p-1 backward hops of the last): +2(p-1) latency."""
    tf, tb = 1.0, 2.0
    res = run("GPipe", pp, m, 1, tf, tb, 0.0, lat)
    assert res.step_time == pytest.approx((m + pp - 1) * (tf + tb) + 2 * (pp - 1) * lat)


@pytest.mark.parametrize(("pp", "m"), [(2, 2), (2, 5), (4, 4), (4, 5), (4, 9), (8, 8), (8, 13)])
@pytest.mark.parametrize("lat", [0.01, 0.1, 0.5])
def test_p2p_latency_on_1f1b(pp: int, m: int, lat: float) -> None:
    """1F1B: the fill/drain alone adds 2(p-1) latencies, but 1F1B's steady state is a zero-slack
    round trip: rank 0 runs F(j+p) only after B(j), whose gradient needed micro-batch j to go
    down and back up the pipe (2(p-1) p2p edges) while rank 0 did exactly p forwards and p
    backwards. Hence:
    * a lower bound from a path with two full round trips (micro-batch 0, then rank 0 up to
      F(m-1), then micro-batch m-1): step >= (m+p-1)(tf+tb) + 4(p-1) lat for m > p;
    * periodicity: p more micro-batches add p(tf+tb) + 2(p-1) lat (one more round trip)."""
    tf, tb = 1.0, 2.0
    base = (m + pp - 1) * (tf + tb)
    res = run("1F1B", pp, m, 1, tf, tb, 0.0, lat)
    assert res.step_time >= base + 2 * (pp - 1) * lat - 1e-9
    if m > pp:
        assert res.step_time >= base + 4 * (pp - 1) * lat - 1e-9
        assert res.step_time > base + 2 * (pp - 1) * lat  # more than the fill/drain alone
    more = run("1F1B", pp, m + pp, 1, tf, tb, 0.0, lat)
    assert more.step_time - res.step_time == pytest.approx(pp * (tf + tb) + 2 * (pp - 1) * lat)


def test_p2p_not_charged_between_stages_on_one_rank() -> None:
    """V placement puts stages p-1 and p on rank p-1: latency on that boundary costs nothing,
    nor does any latency when all stages share one rank."""
    pp, m = 4, 8
    p2p = np.zeros(2 * pp - 1)
    p2p[pp - 1] = 100.0
    assert (
        run("ZBVZeroBubble", pp, m, 2, p2p=p2p).step_time
        == run("ZBVZeroBubble", pp, m, 2).step_time
    )
    p2p[0] = 0.5  # stages 0 -> 1 are on ranks 0 -> 1: charged
    assert (
        run("ZBVZeroBubble", pp, m, 2, p2p=p2p).step_time > run("ZBVZeroBubble", pp, m, 2).step_time
    )
    solo = run("Interleaved1F1B", 1, 4, 3, p2p=7.0)
    assert solo.step_time == pytest.approx(solo.max_rank_busy)
    assert solo.bubble_fraction == 0.0


def test_p2p_accepts_per_boundary_and_per_stage_arrays() -> None:
    pp, m = 4, 8
    r1 = run("1F1B", pp, m, p2p=0.2)
    r2 = run("1F1B", pp, m, p2p=np.full(pp - 1, 0.2))
    r3 = run("1F1B", pp, m, p2p=[0.2] * pp)  # the last entry has no boundary and is ignored
    assert r1.step_time == r2.step_time == r3.step_time


# ----------------------------------------------------------------------------------------------
# Properties over random valid configurations
# ----------------------------------------------------------------------------------------------


@st.composite
def configs(draw: st.DrawFn) -> tuple[str, int, int, int]:
    name = draw(st.sampled_from(SCHEDULES))
    pp = draw(st.integers(1, 6))
    v = draw(st.sampled_from(stages_per_rank(name)))
    m = draw(st.integers(1, 3 * pp * v + 2))
    assume(is_valid(name, pp, m, v))
    return name, pp, m, v


durations = st.floats(0.0, 4.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(cfg=configs(), data=st.data())
def test_random_schedules_simulate_consistently(
    cfg: tuple[str, int, int, int], data: st.DataObject
) -> None:
    name, pp, m, v = cfg
    n_st = pp * v
    tf = np.array(data.draw(st.lists(durations, min_size=n_st, max_size=n_st)))
    ti = np.array(data.draw(st.lists(durations, min_size=n_st, max_size=n_st)))
    tw = np.array(data.draw(st.lists(durations, min_size=n_st, max_size=n_st)))
    p2p = np.array(data.draw(st.lists(durations, min_size=n_st - 1, max_size=n_st - 1)))

    res = run(name, pp, m, v, tf, ti, tw, p2p)  # never deadlocks (would raise)
    assert res.step_time >= res.max_rank_busy - 1e-9
    assert res.bubble_fraction >= -1e-12

    # the timeline is the reference model's, action by action
    sched = build_schedule(name, pp, m, v)
    placement = stage_to_rank(name, pp, v)
    ref = reference_starts(sched, placement, tf, ti, tw, p2p)
    np.testing.assert_allclose(res.timeline.start, np.concatenate([np.asarray(r) for r in ref]))
    assert len(res.timeline.start) == sum(len(r) for r in sched)

    # monotone: a slower forward on one stage never shortens the step
    s = data.draw(st.integers(0, n_st - 1))
    slower = tf.copy()
    slower[s] += data.draw(st.floats(0.01, 3.0))
    assert run(name, pp, m, v, slower, ti, tw, p2p).step_time >= res.step_time - 1e-9


@pytest.mark.parametrize("name", SCHEDULES)
def test_timeline_is_consistent(name: str) -> None:
    pp, m = 4, 8
    v = stages_per_rank(name)[-1] if name != "InterleavedZeroBubble" else 2
    rng = np.random.default_rng(0)
    n_st = pp * v
    tf, ti, tw = rng.uniform(0.5, 2.0, (3, n_st))
    res = run(name, pp, m, v, tf, ti, tw, 0.1)
    tl = res.timeline
    sizes = {len(tl.rank), len(tl.stage), len(tl.mb), len(tl.kind), len(tl.start), len(tl.end)}
    assert len(sizes) == 1
    assert (tl.end >= tl.start).all()
    assert res.step_time == pytest.approx(float(tl.end.max()))
    placement = stage_to_rank(name, pp, v)
    assert (np.asarray(placement)[tl.stage] == tl.rank).all()
    for r in range(pp):
        sel = tl.rank == r
        assert (tl.start[sel][1:] >= tl.end[sel][:-1] - 1e-12).all()  # one at a time, in order
        assert res.per_rank_busy[r] == pytest.approx(float((tl.end[sel] - tl.start[sel]).sum()))
    dur = {KIND_CODES["F"]: tf, KIND_CODES["I"]: ti, KIND_CODES["W"]: tw}
    for i in range(len(tl.start)):
        k, s = int(tl.kind[i]), int(tl.stage[i])
        expected = ti[s] + tw[s] if k == KIND_CODES["B"] else dur[k][s]
        assert tl.end[i] - tl.start[i] == pytest.approx(expected)


def test_list_and_encoded_inputs_agree() -> None:
    name, pp, m, v = "DualPipeV", 3, 7, 2
    sched = build_schedule(name, pp, m, v)
    placement = stage_to_rank(name, pp, v)
    a = simulate(sched, placement, 1.0, 1.5, 0.5, 0.1)
    b = simulate(encoded_schedule(name, pp, m, v), None, 1.0, 1.5, 0.5, 0.1)
    c = simulate(encode_schedule(sched), None, 1.0, 1.5, 0.5, 0.1)  # placement inferred
    assert isinstance(encoded_schedule(name, pp, m, v), EncodedSchedule)
    for other in (b, c):
        assert a.step_time == other.step_time
        np.testing.assert_array_equal(a.timeline.start, other.timeline.start)
        np.testing.assert_array_equal(a.peak_inflight, other.peak_inflight)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


def test_deadlock_names_rank_and_blocked_action() -> None:
    """Rank 0 waits for B(1, 0) before it sends F(0, 1); rank 1 waits for F(0, 1) first."""
    sched = [
        [Action(0, 0, "F"), Action(0, 0, "B"), Action(0, 1, "F"), Action(0, 1, "B")],
        [Action(1, 1, "F"), Action(1, 1, "B"), Action(1, 0, "F"), Action(1, 0, "B")],
    ]
    with pytest.raises(ScheduleError) as info:
        simulate(sched, [0, 1], 1.0, 1.0, 1.0)
    msg = str(info.value)
    assert info.value.field == "schedule"
    assert "deadlock" in msg
    assert "rank 0 blocked at B(stage=0, mb=0)" in msg
    assert "rank 1 blocked at F(stage=1, mb=1)" in msg


def test_self_deadlock_is_reported() -> None:
    sched = [[Action(0, 0, "F"), Action(0, 0, "W"), Action(0, 0, "I")]]
    with pytest.raises(ScheduleError, match="rank 0 would deadlock: W"):
        simulate(sched, [0], 1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"t_f": [1.0, 1.0]}, "t_f"),
        ({"t_i": -1.0}, "t_i"),
        ({"t_w": [1.0, 1.0, math.nan, 1.0]}, "t_w"),
        ({"p2p": [0.1, 0.1]}, "p2p"),
        ({"p2p": -0.5}, "p2p"),
    ],
)
def test_invalid_durations(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"t_f": 1.0, "t_i": 1.0, "t_w": 1.0, "p2p": 0.0}
    args.update(kwargs)
    with pytest.raises(ScheduleError) as info:
        simulate_named("1F1B", 4, 4, 1, **args)  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)


def test_encoded_schedule_rejects_other_placement() -> None:
    enc = encoded_schedule("1F1B", 2, 2)
    with pytest.raises(ScheduleError) as info:
        simulate(enc, [1, 0], 1.0, 1.0, 1.0)
    assert info.value.field == "stage_ranks"


def test_incomplete_schedule_is_rejected_by_simulate() -> None:
    with pytest.raises(ScheduleError, match="needs one B, or one I and one W"):
        simulate([[Action(0, 0, "F"), Action(0, 0, "I")]], [0], 1.0, 1.0, 1.0)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-3, 3), max_size=40), st.lists(st.integers(0, 40), max_size=6))
def test_per_rank_peak_is_the_running_counts_maximum(delta: list[int], cuts: list[int]) -> None:
    """Each rank's peak is the largest running sum of its own actions' deltas, counted from 0
    at its first action (0 when it never goes above), whatever the slices' sizes (empty
    ones included)."""
    n = len(delta)
    offsets = [0, *sorted(min(c, n) for c in cuts), n]
    got = _per_rank_peak(np.array(delta, dtype=np.int64), offsets)
    for r in range(len(offsets) - 1):
        running, best = 0, 0
        for d in delta[offsets[r]:offsets[r + 1]]:
            running += d
            best = max(best, running)
        assert got[r] == best, (r, offsets)
