"""CP-SAT schedule synthesis (solver.schedule_synthesis) against brute force, the named
schedules, the zero-bubble paper's known optima and the float simulator."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costmodel.pipeline.schedules import Action, ScheduleError, stage_to_rank, validate_schedule
from solver import schedule_synthesis as ss
from solver.schedule_synthesis import (
    SynthesisProblem,
    greedy_schedule,
    named_schedules_for,
    synthesize_schedule,
)

LIMIT_S = 30.0  # hang guard only: these instances solve to optimality in well under a second


def _orders(ops: list[Action], n_stages: int) -> Iterator[list[Action]]:
    """Every order of one rank's actions that does not wait on itself: each action after the
    actions of its own micro-batch on this rank that its dependency chain puts before it
    (``F(0) → … → F(S-1) → I/B(S-1) → … → I/B(0)``, and ``W`` after its ``I``); any other
    order deadlocks. Generated recursively."""
    def chain(a: Action) -> int:
        return a.stage if a.kind == "F" else 2 * n_stages - 1 - a.stage

    def ready(a: Action, left: list[Action]) -> bool:
        if a.kind == "W":
            return all(not (b.stage == a.stage and b.mb == a.mb and b.kind == "I")
                       for b in left)
        return all(not (b.mb == a.mb and b.kind != "W" and chain(b) < chain(a)) for b in left)

    def rec(left: list[Action], acc: list[Action]) -> Iterator[list[Action]]:
        if not left:
            yield list(acc)
            return
        for k, a in enumerate(left):
            if ready(a, left):
                acc.append(a)
                yield from rec(left[:k] + left[k + 1:], acc)
                acc.pop()

    yield from rec(ops, [])


def _brute_force(problem: SynthesisProblem) -> float:
    """The best float makespan over every per-rank order within the in-flight limit."""
    kinds = ("F", "I", "W") if problem.split_backward else ("F", "B")
    per_rank = []
    limits = problem.limits()
    for r in range(problem.n_ranks):
        ops = [Action(s, j, k) for s, rr in enumerate(problem.stage_ranks) if rr == r
               for j in range(problem.n_microbatches) for k in kinds]
        ok = []
        for order in _orders(ops, problem.n_stages):
            held = peak = 0
            for a in order:
                held += 1 if a.kind == "F" else -1 if a.kind in "BW" else 0
                peak = max(peak, held)
            if peak <= limits[r]:
                ok.append(order)
        per_rank.append(ok)
    best = math.inf
    for combo in itertools.product(*per_rank):
        try:
            best = min(best, problem.simulate(list(combo)).step_time)
        except ScheduleError:
            continue  # a cross-rank deadlock
    return best


def _random_problem(rng: random.Random, stage_ranks: Sequence[int], m: int,
                    limits: Sequence[int] | None, split: bool) -> SynthesisProblem:
    n = len(stage_ranks)
    return SynthesisProblem(
        t_f=tuple(rng.uniform(0.5, 2.0) for _ in range(n)),
        t_i=tuple(rng.uniform(0.5, 2.5) for _ in range(n)),
        t_w=tuple(rng.uniform(0.3, 1.5) for _ in range(n)),
        p2p=tuple(rng.uniform(0.0, 0.3) for _ in range(n - 1)),
        stage_ranks=tuple(stage_ranks), n_microbatches=m,
        max_inflight=None if limits is None else tuple(limits), split_backward=split)


def _tolerance(problem: SynthesisProblem, result: ss.SynthesisResult) -> float:
    """How far the grid optimum may sit above the float optimum: every action and latency
    floored by less than one grid unit, along a path of at most all actions."""
    kinds = 3 if problem.split_backward else 2
    return result.unit_s * problem.n_stages * problem.n_microbatches * (kinds + 2)


# --------------------------------------------------------------------------------------------
# Brute force
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("stage_ranks", "m", "limits", "split", "seed"), [
    ((0, 1), 2, None, True, 1),
    ((0, 1), 2, (1, 1), True, 2),
    ((0, 1), 2, (2, 1), True, 3),
    ((0, 1), 3, None, False, 4),
    ((0, 1), 3, (2, 2), False, 5),
    ((0, 1, 2), 2, (2, 1, 2), False, 6),
    ((0, 1, 1, 0), 1, None, True, 7),   # V placement: two stages per rank (cumulative limit)
    ((0, 1, 1, 0), 2, (2, 3), False, 8),
])
def test_optimum_equals_brute_force(stage_ranks: tuple[int, ...], m: int,
                                    limits: tuple[int, ...] | None, split: bool,
                                    seed: int) -> None:
    problem = _random_problem(random.Random(seed), stage_ranks, m, limits, split)
    best = _brute_force(problem)
    result = synthesize_schedule(problem, time_limit_s=LIMIT_S, seed=0)
    assert result.status == "optimal"
    assert result.step_time is not None and result.actions is not None
    # never below the true optimum; above it by at most the grid's rounding
    assert result.step_time >= best - 1e-9
    assert result.step_time <= best + _tolerance(problem, result)
    assert result.bound_s is not None and result.bound_s <= best + 1e-9


# --------------------------------------------------------------------------------------------
# Never worse than the named schedules; the limit holds; the answer is what it says
# --------------------------------------------------------------------------------------------


@st.composite
def problems(draw: st.DrawFn) -> SynthesisProblem:
    placement = draw(st.sampled_from(["single", "v"]))
    pp = draw(st.integers(2, 4))
    stage_ranks = (tuple(range(pp)) if placement == "single"
                   else tuple(stage_to_rank("ZBVZeroBubble", pp, 2)))
    m = draw(st.integers(pp, 2 * pp + 2))
    per_rank = 1 if placement == "single" else 2
    limits = tuple(draw(st.integers(per_rank, per_rank * (pp + 2))) for _ in range(pp))
    split = draw(st.booleans())
    seed = draw(st.integers(0, 10**6))
    return _random_problem(random.Random(seed), stage_ranks, m, limits, split)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_never_worse_than_best_named_and_limit_respected(problem: SynthesisProblem) -> None:
    result = synthesize_schedule(problem, time_limit_s=2.0, seed=0,
                                 deterministic_time=0.5)
    assert result.actions is not None and result.step_time is not None
    fitting = [n for n in result.named if n.within_limit]
    if fitting:
        assert result.step_time <= min(n.step_time for n in fitting)
        if result.source == "named":
            assert result.hint is not None and result.step_time == result.hint_step_time
    actions = [list(r) for r in result.actions]
    validate_schedule(actions, list(problem.stage_ranks))
    sim = problem.simulate(actions)
    assert sim.step_time == result.step_time
    assert result.peak_inflight == tuple(int(x) for x in sim.peak_inflight)
    assert all(p <= lim for p, lim in zip(sim.peak_inflight, problem.limits(), strict=True))
    if not problem.split_backward:
        assert all(a.kind in "FB" for r in actions for a in r)
    assert result.bound_s is None or result.bound_s <= result.step_time + 1e-12


def test_named_schedules_follow_the_placement_and_the_backward_kind() -> None:
    single = SynthesisProblem((1.0,) * 4, (1.0,) * 4, (1.0,) * 4, (0.0,) * 3, (0, 1, 2, 3), 8)
    assert {n.label for n in named_schedules_for(single)} == {
        "GPipe", "1F1B", "InterleavedZeroBubble"}
    full = SynthesisProblem((1.0,) * 4, (1.0,) * 4, (1.0,) * 4, (0.0,) * 3, (0, 1, 2, 3), 8,
                            split_backward=False)
    assert {n.label for n in named_schedules_for(full)} == {"GPipe", "1F1B"}
    v = tuple(stage_to_rank("ZBVZeroBubble", 4, 2))
    vee = SynthesisProblem((1.0,) * 8, (1.0,) * 8, (1.0,) * 8, (0.0,) * 7, v, 8)
    assert {n.label for n in named_schedules_for(vee)} == {"ZBVZeroBubble×2", "DualPipeV×2"}


# --------------------------------------------------------------------------------------------
# Known optima (Qi et al. 2024, "Zero Bubble Pipeline Parallelism", §3.1)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("t_i", "limit", "makespan"), [
    # T_F = T_B = T_W: ZB-H1's bubble (p-1)(T_F + T_B - T_W) = p-1 is the floor already
    (1.0, 4, 3 * 8 + 3),
    # T_B = 2 T_W: ZB-H1 under 1F1B's memory (p per rank): 4m + (p-1)(1 + 2 - 1), optimal
    (2.0, 4, 4 * 8 + 3 * 2),
    # ZB-H2's memory (2p - 1): zero bubble, only the unavoidable (p-1)·T_F warm-up remains
    (2.0, 7, 4 * 8 + 3),
])
def test_uniform_stages_reproduce_the_zero_bubble_optima(t_i: float, limit: int,
                                                         makespan: float) -> None:
    p, m = 4, 8
    problem = SynthesisProblem((1.0,) * p, (t_i,) * p, (1.0,) * p, (0.0,) * (p - 1),
                               tuple(range(p)), m, (limit,) * p)
    result = synthesize_schedule(problem, time_limit_s=LIMIT_S)
    assert result.status == "optimal"
    assert result.step_time == pytest.approx(makespan)
    zb1 = next(n for n in result.named if n.name == "InterleavedZeroBubble")
    # ZB-H1's makespan: m·(T_F + T_B + T_W) + (p-1)(T_F + T_B - T_W), T_B the input grad
    assert zb1.step_time == pytest.approx(m * (1 + t_i + 1) + (p - 1) * (1 + t_i - 1))
    if limit == p:  # ZB-H1 is optimal under 1F1B's memory: the named schedule is kept
        assert result.source == "named" and result.hint == "InterleavedZeroBubble"
    else:
        assert result.source in ("synthesized", "greedy") and result.improved


def test_skewed_stage_beats_the_named_schedules() -> None:
    p, m = 4, 8
    t = [1.0] * p
    t[2] = 1.5  # one stage 1.5x slower
    problem = SynthesisProblem(tuple(t), tuple(2 * x for x in t), tuple(t), (0.0,) * 3,
                               tuple(range(p)), m, (p,) * p)
    result = synthesize_schedule(problem, time_limit_s=LIMIT_S)
    best_named = min(n.step_time for n in result.named if n.within_limit)
    assert result.step_time is not None and result.step_time < best_named
    assert result.improved


# --------------------------------------------------------------------------------------------
# The extracted order reproduces CP-SAT's makespan
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [11, 12, 13])
@pytest.mark.parametrize("placement", ["single", "v"])
def test_extracted_order_reproduces_the_cpsat_makespan(seed: int, placement: str) -> None:
    pp, m = 3, 4
    sr = tuple(range(pp)) if placement == "single" else tuple(stage_to_rank("DualPipeV", pp, 2))
    per = 1 if placement == "single" else 2
    problem = _random_problem(random.Random(seed), sr, m, (per * pp,) * pp, True)
    res = ss.DEFAULT_RESOLUTION
    grid = ss._grid_problem(problem, res)
    named = [n for n in named_schedules_for(problem) if n.within_limit]
    hint_actions = (ss._named_actions(min(named, key=lambda n: n.step_time), problem) if named
                    else greedy_schedule(problem))
    assert hint_actions is not None
    proto = ss._prepare(problem, res, 0)
    hint = ss._hint_starts(proto, grid, hint_actions)
    assert hint is not None
    data = ss._prepare(problem, res, hint[1])
    model = ss.ScheduleModel(data)
    model.add_hint(*hint)
    solver, status = model.solve(LIMIT_S, 0, 1)
    assert solver.status_name(status) == "OPTIMAL"
    order = model.extract(solver)
    validate_schedule(order, list(sr))
    # ASAP execution of the order on the grid is exactly CP-SAT's optimum
    assert grid.simulate(order).step_time == solver.objective_value
    # and with the float times it is within the rounding of the grid
    fl = problem.simulate(order).step_time
    assert fl >= solver.objective_value * data.unit - data.excess_s - 1e-9
    assert fl <= solver.objective_value * data.unit + data.unit * len(data.d_f) * m * 5


# --------------------------------------------------------------------------------------------
# Greedy, infeasibility, input checks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("priority", ss.GREEDY_PRIORITIES)
@pytest.mark.parametrize("placement", ["single", "v", "loop"])
def test_greedy_respects_the_limit_on_every_placement(placement: str, priority: str) -> None:
    pp, m = 4, 8
    sr = {"single": tuple(range(pp)), "v": tuple(stage_to_rank("ZBVZeroBubble", pp, 2)),
          "loop": tuple(stage_to_rank("Interleaved1F1B", pp, 2))}[placement]
    per = 1 if placement == "single" else 2
    for lim in range(per, per * m + 1, 3):
        problem = _random_problem(random.Random(lim), sr, m, (lim,) * pp, True)
        acts = greedy_schedule(problem, priority)
        assert acts is not None
        sim = problem.simulate(acts)
        assert int(sim.peak_inflight.max()) <= lim


def test_limit_below_the_stages_of_a_rank_is_explained() -> None:
    sr = tuple(stage_to_rank("ZBVZeroBubble", 2, 2))
    problem = _random_problem(random.Random(0), sr, 4, (1, 2), True)
    result = synthesize_schedule(problem, time_limit_s=LIMIT_S)
    assert result.status == "infeasible" and result.actions is None
    assert result.explanation is not None and "rank 0 holds 2 stage(s)" in result.explanation


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"t_f": (1.0,)}, "t_f has 1 entries for 2 stages"),
    ({"p2p": ()}, "p2p has 0 entries for 1 stage boundaries"),
    ({"stage_ranks": (0, 2)}, "must use every rank"),
    ({"n_microbatches": 0}, "n_microbatches must be >= 1"),
    ({"max_inflight": (1,)}, "max_inflight has 1 entries for 2 ranks"),
    ({"t_i": (1.0, math.nan)}, "finite"),
])
def test_problem_rejects_bad_input(kwargs: dict[str, object], fragment: str) -> None:
    base: dict[str, object] = {"t_f": (1.0, 1.0), "t_i": (1.0, 1.0), "t_w": (1.0, 1.0),
                               "p2p": (0.0,), "stage_ranks": (0, 1), "n_microbatches": 2}
    base.update(kwargs)
    with pytest.raises(ValueError, match=fragment):
        SynthesisProblem(**base)  # type: ignore[arg-type]
