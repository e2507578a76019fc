"""Layer partition (solver/partition.py): optimality against a brute-force oracle over all
compositions, memory feasibility, explained infeasibility, determinism and the time limit."""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costmodel.pipeline.schedules import stage_to_rank
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.request import rank_layer_split, stage_layers
from solver.partition import (
    TIME_RESOLUTION,
    PartitionModel,
    PartitionProblem,
    _prepare,
    even_partition,
    max_rank_time,
    objective_tolerance,
    rank_layer_counts,
    rank_memory_bytes,
    solve_partition,
)

GIB = float(1 << 30)
MIB = float(1 << 20)


def placement(kind: str, pp: int, v: int = 1) -> tuple[int, ...]:
    if kind == "1f1b":
        return tuple(range(pp))
    if kind == "interleaved":
        return tuple(s % pp for s in range(pp * v))
    assert kind == "v"
    return tuple(s if s < pp else 2 * pp - 1 - s for s in range(2 * pp))


def problem(num_layers: int, ranks: tuple[int, ...], *, layer_time: float = 0.01,
            fixed_time: tuple[float, ...] | None = None,
            act: tuple[float, ...] | None = None, state: float = 0.0,
            fixed_bytes: tuple[float, ...] | None = None, capacity: float = 1e18,
            **kw: Any) -> PartitionProblem:
    n, pp = len(ranks), max(ranks) + 1
    return PartitionProblem(
        num_layers=num_layers, stage_ranks=ranks, layer_time=layer_time,
        fixed_time=fixed_time if fixed_time is not None else (0.0,) * n,
        act_bytes_per_layer=act if act is not None else (0.0,) * pp,
        state_bytes_per_layer=state,
        fixed_bytes=fixed_bytes if fixed_bytes is not None else (0.0,) * pp,
        capacity_bytes=capacity, **kw)


# --------------------------------------------------------------------------------------------
# Oracle: every composition of num_layers into n_stages parts, evaluated from the definition.
# --------------------------------------------------------------------------------------------


def compositions(total: int, parts: int, lo: int) -> Iterator[tuple[int, ...]]:
    rest = total - parts * lo
    if rest < 0:
        return
    for cuts in itertools.combinations(range(rest + parts - 1), parts - 1):
        prev, out = -1, []
        for c in (*cuts, rest + parts - 1):
            out.append(c - prev - 1 + lo)
            prev = c
        yield tuple(out)


def oracle_time(p: PartitionProblem, layers: tuple[int, ...]) -> float:
    per_rank = [0.0] * p.n_ranks
    for s, r in enumerate(p.stage_ranks):
        per_rank[r] += layers[s] * p.layer_time + p.fixed_time[s]
    return max(per_rank)


def oracle_fits(p: PartitionProblem, layers: tuple[int, ...]) -> bool:
    for r in range(p.n_ranks):
        mine = [layers[s] for s, rr in enumerate(p.stage_ranks) if rr == r]
        need = (sum(x * p.act_bytes_per_layer[r] for x in mine)
                + sum(x * p.state_bytes_per_layer for x in mine) + p.fixed_bytes[r])
        if need > p.capacity_bytes:
            return False
    return True


def oracle(p: PartitionProblem) -> float | None:
    best = None
    hi = p.max_layers_per_stage
    for comp in compositions(p.num_layers, p.n_stages, p.min_layers_per_stage):
        if hi is not None and max(comp) > hi:
            continue
        if oracle_fits(p, comp):
            t = oracle_time(p, comp)
            best = t if best is None else min(best, t)
    return best


def assert_valid(p: PartitionProblem, layers: tuple[int, ...]) -> None:
    assert len(layers) == p.n_stages
    assert sum(layers) == p.num_layers
    assert min(layers) >= p.min_layers_per_stage
    if p.max_layers_per_stage is not None:
        assert max(layers) <= p.max_layers_per_stage
    assert oracle_fits(p, layers)
    assert all(m <= p.capacity_bytes for m in rank_memory_bytes(p, layers))


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_layers", "pp", "v"), [(32, 4, 1), (30, 4, 1), (126, 16, 1),
                                                     (126, 16, 4), (7, 7, 1), (61, 8, 2)])
def test_uniform_case_is_ceil_of_layers_over_ranks(num_layers: int, pp: int, v: int) -> None:
    p = problem(num_layers, placement("interleaved", pp, v), layer_time=0.0123)
    r = solve_partition(p)
    assert r.status == "optimal"
    assert r.layers is not None
    assert_valid(p, r.layers)
    assert r.max_rank_time == math.ceil(num_layers / pp) * 0.0123
    assert r.gap == 0.0
    assert r.bound == r.max_rank_time
    assert r.explanation is None


def test_vocab_on_the_ends_moves_layers_off_the_last_stage() -> None:
    lt = 0.01
    p = problem(32, placement("1f1b", 4), layer_time=lt, fixed_time=(1 * lt, 0.0, 0.0, 3 * lt))
    r = solve_partition(p)
    even = even_partition(32, p.stage_ranks)
    assert even == (8, 8, 8, 8)
    assert r.status == "optimal" and r.layers is not None
    assert r.layers[-1] < even[-1]
    assert r.layers[-1] < r.layers[1]
    assert r.max_rank_time is not None
    assert r.max_rank_time < max_rank_time(p, even)
    assert r.max_rank_time == pytest.approx(9 * lt)      # (32 + 1 + 3) / 4 layer times
    assert r.layers == (8, 9, 9, 6)
    best = oracle(p)
    assert best is not None
    assert abs(r.max_rank_time - best) <= objective_tolerance(p)


def test_memory_binding_on_rank_zero_moves_layers_off_it() -> None:
    # 1F1B: rank r keeps pp - r micro-batches in flight (1 GiB of activations per layer each)
    pp = 4
    p = problem(32, placement("1f1b", pp), act=tuple((pp - r) * GIB for r in range(pp)),
                state=0.5 * GIB, fixed_bytes=(2 * GIB,) * pp, capacity=30 * GIB)
    even = even_partition(32, p.stage_ranks)
    assert not oracle_fits(p, even)                       # 8 layers on rank 0 need 38 GiB
    r = solve_partition(p)
    assert r.status == "optimal" and r.layers is not None
    assert_valid(p, r.layers)
    assert r.layers[0] <= 6 < even[0]                     # 6 × 4.5 + 2 = 29 GiB
    assert r.max_rank_time == pytest.approx(9 * 0.01)
    assert r.max_rank_time == oracle(p)


def test_memory_exactly_at_capacity_fits() -> None:
    p = problem(12, placement("1f1b", 2), act=(GIB, 0.5 * GIB), state=0.25 * GIB,
                fixed_bytes=(0.5 * GIB, 0.0), capacity=8 * GIB)  # 6 × 1.25 + 0.5 == 8
    r = solve_partition(p)
    assert r.layers == (6, 6)
    assert rank_memory_bytes(p, r.layers)[0] == p.capacity_bytes
    r = solve_partition(problem(12, placement("1f1b", 2), act=(GIB, 0.5 * GIB),
                                state=0.25 * GIB, fixed_bytes=(0.5 * GIB, 0.0),
                                capacity=8 * GIB - 1))
    assert r.layers == (5, 7)


def test_infeasible_rank_memory_names_the_rank_and_the_gib() -> None:
    p = problem(16, placement("interleaved", 4, 2), act=(3 * GIB, 2 * GIB, GIB, GIB),
                state=0.5 * GIB, fixed_bytes=(2 * GIB, 1 * GIB, 1 * GIB, 4 * GIB),
                capacity=8 * GIB)
    r = solve_partition(p)
    assert r.status == "infeasible"
    assert r.layers is None and r.max_rank_time is None and r.bound is None
    assert r.explanation is not None
    # rank 0 holds 2 stages: 2 × (3 + 0.5) + 2 = 9 GiB > 8 GiB
    assert "rank 0 needs 9.00 GiB for its minimum 2 layer(s)" in r.explanation
    assert "capacity 8.00 GiB" in r.explanation


def test_infeasible_layer_counts_and_total_memory_are_explained() -> None:
    r = solve_partition(problem(3, placement("1f1b", 4)))
    assert r.status == "infeasible" and r.explanation is not None
    assert "too small" in r.explanation and "4 stages" in r.explanation

    r = solve_partition(problem(20, placement("v", 2), max_layers_per_stage=4))
    assert r.status == "infeasible" and r.explanation is not None
    assert "too large" in r.explanation and "at most 16" in r.explanation

    # each rank fits its minimum, but 4 + 4 layers < 10
    p = problem(10, placement("1f1b", 2), act=(GIB, GIB), capacity=4 * GIB)
    r = solve_partition(p)
    assert r.status == "infeasible" and r.explanation is not None
    assert "at most 8 layers in total" in r.explanation
    assert "4.00 GiB" in r.explanation
    assert oracle(p) is None


def test_even_partition_mirrors_costmodel_stage_layers() -> None:
    cases = [("1F1B", 4, 1), ("GPipe", 3, 1), ("Interleaved1F1B", 4, 2),
             ("Interleaved1F1B", 16, 4), ("ZBVZeroBubble", 4, 2), ("DualPipeV", 3, 2)]
    for schedule, pp, v in cases:
        for num_layers in (pp * v, 30, 61, 126):
            plan = ParallelPlan(pp=pp, schedule=schedule, virtual_stages=v)
            model = SimpleNamespace(num_hidden_layers=num_layers)
            ranks = tuple(stage_to_rank(schedule, pp, v))
            assert list(even_partition(num_layers, ranks)) == stage_layers(model, plan)  # type: ignore[arg-type]


def large_problem(seed: int = 7) -> PartitionProblem:
    """126 layers, interleaved v=4 on 16 ranks (64 stages), random vocab/fixed times and a
    memory limit that binds on the early ranks."""
    rng = random.Random(seed)
    pp, v = 16, 4
    ranks = placement("interleaved", pp, v)
    ft = [rng.uniform(0.0, 0.002) for _ in ranks]
    ft[0] += 0.004
    ft[-1] += 0.025
    return problem(126, ranks, layer_time=0.01, fixed_time=tuple(ft),
                   act=tuple((pp - r) * 0.2 * GIB for r in range(pp)), state=0.4 * GIB,
                   fixed_bytes=tuple(rng.uniform(2, 6) * GIB for _ in range(pp)),
                   capacity=26 * GIB)


def test_determinism_same_input_same_seed_same_result() -> None:
    p = large_problem()
    a = solve_partition(p, seed=3)
    b = solve_partition(p, seed=3)
    c = solve_partition(p, seed=11, num_workers=4)
    assert a.status == "optimal" and a.layers is not None
    assert a == b
    assert a.layers == c.layers and a.max_rank_time == c.max_rank_time
    assert_valid(p, a.layers)
    assert a.max_rank_time is not None
    assert a.max_rank_time < max_rank_time(p, even_partition(126, p.stage_ranks))


def test_time_limit_is_respected_on_a_large_instance() -> None:
    rng = random.Random(5)
    pp, v = 128, 8
    ranks = placement("interleaved", pp, v)
    p = problem(4000, ranks, fixed_time=tuple(rng.uniform(0.0, 0.03) for _ in ranks),
                act=tuple((pp - r) * 0.01 * GIB for r in range(pp)), state=0.3 * GIB,
                fixed_bytes=(4 * GIB,) * pp, capacity=60 * GIB)
    start = time.perf_counter()
    r = solve_partition(p, time_limit_s=0.2)
    assert time.perf_counter() - start < 0.2 + 20.0  # hang guard; speed: benchmarks/
    assert r.status in ("optimal", "feasible") and r.layers is not None
    assert_valid(p, r.layers)
    assert r.bound is not None and r.max_rank_time is not None and r.gap is not None
    assert r.bound <= r.max_rank_time and 0.0 <= r.gap < 1e-3


def test_zero_time_limit_still_returns_a_feasible_split() -> None:
    p = large_problem()
    r = solve_partition(p, time_limit_s=0.0)
    assert r.status in ("optimal", "feasible") and r.layers is not None
    assert_valid(p, r.layers)
    assert r.bound is not None and r.max_rank_time is not None
    assert r.bound <= r.max_rank_time


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="every rank"):
        problem(8, (0, 2))
    with pytest.raises(ValueError, match="fixed_time"):
        problem(8, (0, 1), fixed_time=(0.0,))
    with pytest.raises(ValueError, match="layer_time"):
        problem(8, (0, 1), layer_time=0.0)
    with pytest.raises(ValueError, match="max_layers_per_stage"):
        problem(8, (0, 1), min_layers_per_stage=3, max_layers_per_stage=2)


# --------------------------------------------------------------------------------------------
# Property: the solver's objective is the brute-force optimum; infeasible exactly when none.
# --------------------------------------------------------------------------------------------


@st.composite
def small_problems(draw: st.DrawFn) -> PartitionProblem:
    kind = draw(st.sampled_from(["1f1b", "interleaved", "v"]))
    if kind == "1f1b":
        pp, v = draw(st.integers(1, 5)), 1
    elif kind == "interleaved":
        pp = draw(st.integers(1, 2))
        v = draw(st.integers(2, 5 // pp))
    else:
        pp, v = draw(st.integers(1, 2)), 2
    ranks = placement(kind, pp, v)
    n = len(ranks)
    num_layers = draw(st.integers(2, 14))
    layer_time = draw(st.floats(1e-3, 1.0))
    fixed = tuple(draw(st.floats(0.0, 4.0)) * layer_time for _ in range(n))
    # whole MiB so that the oracle's byte sums are exact in floats
    per_mb = draw(st.integers(1, 64))
    act = tuple(float(per_mb * (pp - r)) * MIB for r in range(pp))
    state = float(draw(st.integers(0, 32))) * MIB
    fixed_bytes = tuple(float(draw(st.integers(0, 128))) * MIB for _ in range(pp))
    capacity = float(draw(st.integers(64, 3072))) * MIB
    lo = draw(st.sampled_from([1, 1, 1, 2]))
    hi = draw(st.one_of(st.none(), st.integers(lo, 8)))
    return problem(num_layers, ranks, layer_time=layer_time, fixed_time=fixed, act=act,
                   state=state, fixed_bytes=fixed_bytes, capacity=capacity,
                   min_layers_per_stage=lo, max_layers_per_stage=hi)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_problems())
def test_solver_matches_brute_force_oracle(p: PartitionProblem) -> None:
    best = oracle(p)
    r = solve_partition(p, time_limit_s=5.0)
    if best is None:
        assert r.status == "infeasible"
        assert r.layers is None and r.explanation
        return
    assert r.status == "optimal", r
    assert r.layers is not None and r.max_rank_time is not None and r.bound is not None
    assert_valid(p, r.layers)
    assert r.max_rank_time == pytest.approx(oracle_time(p, r.layers), rel=1e-12)
    tol = objective_tolerance(p) + 1e-12 * best
    assert best - 1e-12 * best <= r.max_rank_time <= best + tol
    assert r.bound <= best + 1e-12 * best
    # tie-break: closest to the even split (L1 over ranks) among the splits whose scaled max
    # is no larger, and each rank's layers spread evenly, earlier chunks first
    data = _prepare(p)
    counts = rank_layer_counts(p.stage_ranks, r.layers)
    even = rank_layer_split(p.num_layers, p.n_ranks)

    def scaled(c: list[int]) -> int:
        return max(TIME_RESOLUTION * x + f for x, f in zip(c, data.fixed_units, strict=True))

    def dist(c: list[int]) -> int:
        return sum(abs(x - e) for x, e in zip(c, even, strict=True))

    z = scaled(counts)
    closest = min(dist(rank_layer_counts(p.stage_ranks, comp))
                  for comp in compositions(p.num_layers, p.n_stages, p.min_layers_per_stage)
                  if (p.max_layers_per_stage is None or max(comp) <= p.max_layers_per_stage)
                  and oracle_fits(p, comp) and scaled(rank_layer_counts(p.stage_ranks, comp)) <= z)
    assert dist(counts) == closest
    for rank in range(p.n_ranks):
        mine = [r.layers[s] for s, rr in enumerate(p.stage_ranks) if rr == rank]
        assert mine == sorted(mine, reverse=True) and mine[0] - mine[-1] <= 1
    # CP-SAT alone (no hint, no tie-break polish) proves the same scaled optimum
    pm = PartitionModel(data)
    solver, status = pm.solve(5.0, 0, 1)
    assert solver.status_name(status) == "OPTIMAL"
    assert abs(solver.objective_value / TIME_RESOLUTION * p.layer_time - best) <= tol
