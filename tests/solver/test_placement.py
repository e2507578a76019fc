"""Stage placement by measured bandwidth (solver/placement.py): a brute-force oracle over all
injective assignments, the routing model against the oracle at every threshold, rack and
slow-node scenarios, layouts where stages share nodes, explained errors and infeasibility,
determinism and the time limit."""

from __future__ import annotations

import itertools
import math
import random
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ortools.sat.python import cp_model

from solver.placement import (
    WEIGHT_RESOLUTION,
    PlacementProblem,
    PlacementResult,
    ThresholdModel,
    _prepare,
    _probe,
    bottleneck_Gbps,
    boundary_bandwidths,
    communicating_pairs,
    link_Gbps,
    solve_placement,
    total_Gbps,
)

Matrix = list[list[float]]


def uniform(n: int, value: float) -> Matrix:
    return [[0.0 if a == b else value for b in range(n)] for a in range(n)]


def racks(n: int, rack_of: Any, inside: float = 400.0, across: float = 100.0) -> Matrix:
    return [[0.0 if a == b else (inside if rack_of(a) == rack_of(b) else across)
             for b in range(n)] for a in range(n)]


def random_matrix(n: int, seed: int, lo: float = 10.0, hi: float = 400.0) -> Matrix:
    rng = np.random.default_rng(seed)
    m = rng.uniform(lo, hi, (n, n))
    np.fill_diagonal(m, 0.0)
    return [[float(x) for x in row] for row in m]


def problem(matrix: Matrix, pp: int, k: int = 1, gpn: int = 8, **kw: Any) -> PlacementProblem:
    """``k`` nodes per stage (stride = k * gpus_per_node)."""
    return PlacementProblem(bandwidth_Gbps=tuple(tuple(r) for r in matrix), pp=pp,
                            stride=k * gpn, gpus_per_node=gpn, **kw)


# --------------------------------------------------------------------------------------------
# Oracle: every injective assignment of nodes to unit positions, evaluated from the definition.
# --------------------------------------------------------------------------------------------


def oracle_links(p: PlacementProblem, nodes: tuple[int, ...]) -> list[float]:
    """Links of a placement, straight from the layout definition (Megatron order)."""
    bw, gpn, stride = p.bandwidth_Gbps, p.gpus_per_node, p.stride
    out = []
    for s in range(p.pp - 1):
        for j in range(stride):             # GPU j of stage s -> GPU j of stage s + 1
            na = (s * stride + j) // gpn
            nb = ((s + 1) * stride + j) // gpn
            if na != nb:
                a, b = nodes[na], nodes[nb]
                out.append(min(bw[a][b], bw[b][a]))
    return out


def oracle(p: PlacementProblem) -> tuple[float, float]:
    """(best bottleneck, best sum of links among placements with that bottleneck); the sum
    counts each communicating node pair once."""
    pairs = communicating_pairs(p)
    best_b, best_t = -math.inf, -math.inf
    for nodes in itertools.permutations(range(p.n_nodes), p.n_positions):
        links = oracle_links(p, nodes)
        b = min(links, default=math.inf)
        t = math.fsum(link_Gbps(p, nodes[a], nodes[c]) for a, c in pairs)
        if b > best_b or (b == best_b and t > best_t):
            best_b, best_t = b, t
    return best_b, best_t


def assert_valid(p: PlacementProblem, r: PlacementResult) -> None:
    assert r.nodes is not None and r.bottleneck_Gbps is not None
    assert len(r.nodes) == p.n_positions
    assert len(set(r.nodes)) == len(r.nodes)
    assert all(0 <= a < p.n_nodes for a in r.nodes)
    assert r.bottleneck_Gbps == min(oracle_links(p, r.nodes), default=math.inf)
    assert r.bottleneck_Gbps == bottleneck_Gbps(p, r.nodes)
    assert r.total_Gbps == pytest.approx(total_Gbps(p, r.nodes))
    assert r.bound_Gbps is not None and r.bound_Gbps >= r.bottleneck_Gbps
    assert r.gap is not None and 0.0 <= r.gap <= 1.0
    identity = tuple(range(p.n_positions))
    assert r.naive_bottleneck_Gbps == bottleneck_Gbps(p, identity)
    if r.status == "optimal":
        assert r.bound_Gbps == r.bottleneck_Gbps and r.gap == 0.0
        assert r.explanation is None
    else:
        assert r.status == "feasible" and r.explanation


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "pp", "k"), [(6, 4, 1), (6, 6, 1), (8, 3, 2), (8, 4, 2)])
def test_uniform_matrix_any_order_is_optimal(n: int, pp: int, k: int) -> None:
    p = problem(uniform(n, 300.0), pp, k)
    r = solve_placement(p)
    assert_valid(p, r)
    assert r.status == "optimal"
    assert r.bottleneck_Gbps == r.bound_Gbps == r.naive_bottleneck_Gbps == 300.0
    assert r.total_status == "optimal"
    assert r.total_Gbps == pytest.approx(300.0 * (pp - 1) * k)


def test_two_racks_one_crossing_is_unavoidable() -> None:
    p = problem(racks(8, lambda a: a // 4), pp=8)
    r = solve_placement(p)
    assert_valid(p, r)
    assert r.status == "optimal"
    assert r.bottleneck_Gbps == r.bound_Gbps == 100.0
    # the tie-break crosses the racks exactly once: 6 fast boundaries and one slow one
    assert r.nodes is not None
    assert sorted(boundary_bandwidths(p, r.nodes)) == [100.0] + [400.0] * 6
    assert r.total_status == "optimal"
    assert r.total_Gbps == 6 * 400.0 + 100.0


def test_two_racks_short_pipeline_stays_inside_a_rack() -> None:
    # racks are the even and the odd nodes: the identity order crosses at every boundary
    p = problem(racks(8, lambda a: a % 2), pp=4)
    r = solve_placement(p)
    assert_valid(p, r)
    assert r.status == "optimal"
    assert r.bottleneck_Gbps == 400.0
    assert r.naive_bottleneck_Gbps == 100.0
    assert r.nodes is not None
    assert len({a % 2 for a in r.nodes}) == 1
    assert boundary_bandwidths(p, r.nodes) == [400.0] * 3


def test_two_nodes_per_stage_keep_both_pipelines_inside_racks() -> None:
    # k = 2: two disjoint pipelines of 4 nodes, each fits in one rack of 4; the identity
    # order puts stages 0, 1 on rack 0 and stages 2, 3 on rack 1
    p = problem(racks(8, lambda a: a // 4), pp=4, k=2)
    r = solve_placement(p)
    assert_valid(p, r)
    assert r.status == "optimal" and r.bottleneck_Gbps == 400.0
    assert r.naive_bottleneck_Gbps == 100.0


def test_a_hidden_slow_node_is_avoided() -> None:
    m = uniform(8, 400.0)
    for b in range(8):
        if b != 2:
            m[2][b] = m[b][2] = 10.0
    p = problem(m, pp=4)
    r = solve_placement(p)
    assert_valid(p, r)
    assert r.status == "optimal" and r.bottleneck_Gbps == 400.0
    assert r.nodes is not None and 2 not in r.nodes
    assert r.naive_bottleneck_Gbps == 10.0


def test_the_slower_direction_of_a_link_counts() -> None:
    m = uniform(4, 400.0)
    m[0][1] = 50.0                       # 1 -> 0 still measures 400
    p = problem(m, pp=4)
    assert link_Gbps(p, 0, 1) == link_Gbps(p, 1, 0) == 50.0
    assert bottleneck_Gbps(p, (0, 1, 2, 3)) == 50.0
    r = solve_placement(p)
    assert r.status == "optimal" and r.bottleneck_Gbps == 400.0   # 0 and 1 not adjacent


def test_rack_structured_pool_is_proven_optimal_quickly() -> None:
    # 8 racks of 8 with jittered bandwidths: the threshold graphs are cliques joined by a few
    # links, which CP-SAT's circuit cuts settle at once
    rng = np.random.default_rng(0)
    rack = np.arange(64) // 8
    m = np.where(rack[:, None] == rack[None, :], 400.0, 100.0) * rng.uniform(0.9, 1.0, (64, 64))
    p = problem(m.tolist(), pp=32)
    r = solve_placement(p, time_limit_s=5.0)
    assert_valid(p, r)
    assert r.status == "optimal" and r.bottleneck_Gbps is not None
    assert 90.0 <= r.bottleneck_Gbps <= 100.0     # 32 nodes span at least 4 racks
    assert r.nodes is not None
    crossings = sum(1 for x in boundary_bandwidths(p, r.nodes) if x < 360.0)
    assert crossings >= 3
    if r.total_status == "optimal":               # the tie-break crosses as little as it can
        assert crossings == 3


# --------------------------------------------------------------------------------------------
# Brute force as the oracle.
# --------------------------------------------------------------------------------------------


@st.composite
def small_problems(draw: st.DrawFn) -> PlacementProblem:
    n = draw(st.integers(2, 6))
    levels = draw(st.sampled_from([(0.0, 100.0, 400.0), (10.0, 25.0, 50.0, 100.0, 200.0),
                                   None]))
    entry = (st.sampled_from(levels) if levels is not None
             else st.floats(0.0, 400.0, allow_nan=False, allow_infinity=False))
    matrix = [[draw(entry) for _ in range(n)] for _ in range(n)]
    if draw(st.booleans()):                          # k nodes per stage
        k = draw(st.integers(1, 2))
        gpn = draw(st.sampled_from([1, 4, 8]))
        pp = draw(st.integers(1, max(1, n // k)))
        stride = k * gpn
    else:                                            # g stages per node
        g = draw(st.sampled_from([2, 4]))
        gpn, stride = 8, 8 // g
        pp = g * draw(st.integers(1, n))
    return PlacementProblem(bandwidth_Gbps=tuple(tuple(r) for r in matrix), pp=pp,
                            stride=stride, gpus_per_node=gpn)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_problems())
def test_bottleneck_matches_brute_force(p: PlacementProblem) -> None:
    best, best_total = oracle(p)
    r = solve_placement(p, time_limit_s=5.0)
    assert_valid(p, r)
    assert r.status == "optimal"
    assert r.bottleneck_Gbps == best
    assert r.bound_Gbps is not None and r.bound_Gbps >= best
    assert r.total_Gbps is not None and r.total_Gbps <= best_total + 1e-6
    if r.total_status == "optimal":
        # integer weights: each link rounds by at most half a step
        top = max((x for i, row in enumerate(p.bandwidth_Gbps) for j, x in enumerate(row)
                   if i != j), default=0.0)
        tol = len(communicating_pairs(p)) * top / WEIGHT_RESOLUTION + 1e-9
        assert r.total_Gbps >= best_total - tol


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_problems())
def test_routing_model_decides_every_threshold_like_brute_force(p: PlacementProblem) -> None:
    """The CP-SAT model alone (no greedy), at every distinct link value."""
    data = _prepare(p)
    if not data.pairs:
        return
    bottlenecks = [min(oracle_links(p, nodes))
                   for nodes in itertools.permutations(range(p.n_nodes), p.n_positions)]
    for idx, tau in enumerate(data.values):
        exists = any(b >= tau for b in bottlenecks)
        pr = _probe(data, idx)
        for chain in (False, True) if data.n_paths > 1 else (False,):
            tm = ThresholdModel(data, pr, chain=chain)
            solver, status = tm.solve(5.0, 0, 1)
            assert status in (cp_model.OPTIMAL, cp_model.FEASIBLE, cp_model.INFEASIBLE)
            found = status != cp_model.INFEASIBLE
            if found:
                nodes = tm.nodes(solver)
                assert len(set(nodes)) == p.n_positions
                assert min(oracle_links(p, nodes)) >= tau
            if not chain:
                assert found == exists


# --------------------------------------------------------------------------------------------
# Layouts.
# --------------------------------------------------------------------------------------------


def test_stages_sharing_a_node_report_only_node_crossing_boundaries() -> None:
    m = random_matrix(4, seed=1)
    # 2 GPUs per stage on 8-GPU nodes: 4 stages per node, pp=8 -> two nodes
    p = PlacementProblem(bandwidth_Gbps=tuple(tuple(r) for r in m), pp=8, stride=2,
                         gpus_per_node=8)
    assert (p.stages_per_node, p.nodes_per_stage, p.n_positions) == (4, 1, 2)
    b = boundary_bandwidths(p, (3, 1))
    assert b[:3] == [math.inf] * 3 and b[4:] == [math.inf] * 3
    assert b[3] == link_Gbps(p, 3, 1)
    r = solve_placement(p)
    assert_valid(p, r)
    best = max(link_Gbps(p, a, c) for a in range(4) for c in range(4) if a != c)
    assert r.status == "optimal" and r.bottleneck_Gbps == best

    # 4 GPUs per stage: 2 stages per node, boundaries 1, 3, 5 cross nodes
    p = PlacementProblem(bandwidth_Gbps=tuple(tuple(r) for r in m), pp=8, stride=4,
                         gpus_per_node=8)
    b = boundary_bandwidths(p, (0, 1, 2, 3))
    assert [i for i, x in enumerate(b) if math.isfinite(x)] == [1, 3, 5]
    assert b[1] == link_Gbps(p, 0, 1) and b[5] == link_Gbps(p, 2, 3)


def test_a_single_unit_has_no_crossing_boundary() -> None:
    p = PlacementProblem(bandwidth_Gbps=tuple(tuple(r) for r in uniform(3, 100.0)), pp=4,
                         stride=2, gpus_per_node=8)
    r = solve_placement(p)
    assert r.status == "optimal" and r.nodes == (0,)
    assert r.bottleneck_Gbps == math.inf and r.bound_Gbps == math.inf and r.gap == 0.0
    assert boundary_bandwidths(p, (2,)) == [math.inf] * 3


def test_stages_spanning_nodes_take_the_slowest_pair_per_boundary() -> None:
    m = uniform(6, 400.0)
    m[1][3] = m[3][1] = 40.0
    p = problem(m, pp=3, k=2)             # positions: stage 0 -> (0, 1), 1 -> (2, 3), ...
    assert communicating_pairs(p) == [(0, 2), (1, 3), (2, 4), (3, 5)]
    assert boundary_bandwidths(p, (0, 1, 2, 3, 4, 5)) == [40.0, 400.0]
    assert boundary_bandwidths(p, (0, 1, 3, 2, 4, 5)) == [400.0, 400.0]
    r = solve_placement(p)
    assert r.status == "optimal" and r.bottleneck_Gbps == 400.0
    assert r.naive_bottleneck_Gbps == 40.0


# --------------------------------------------------------------------------------------------
# Errors and infeasibility.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"bandwidth_Gbps": ((0.0, 1.0), (1.0, 0.0), (1.0, 1.0))}, "square"),
    ({"bandwidth_Gbps": ((0.0, 1.0), (1.0,))}, "square"),
    ({"bandwidth_Gbps": ()}, "empty"),
    ({"bandwidth_Gbps": ((0.0, -1.0), (1.0, 0.0))}, "bandwidth_Gbps[0][1] = -1.0"),
    ({"bandwidth_Gbps": ((0.0, math.nan), (1.0, 0.0))}, "finite"),
    ({"bandwidth_Gbps": ((0.0, 1.0), (math.inf, 0.0))}, "bandwidth_Gbps[1][0] = inf"),
    ({"pp": 0}, "pp must be an integer >= 1"),
    ({"pp": 2.0}, "pp must be an integer"),
    ({"stride": True}, "stride must be an integer"),
    ({"gpus_per_node": 0}, "gpus_per_node must be an integer >= 1"),
    ({"stride": 12}, "stride=12 GPUs per stage (tp*cp*dp) is not a multiple of "
                     "gpus_per_node=8"),
    ({"stride": 3}, "stride=3 GPUs per stage (tp*cp*dp) does not divide gpus_per_node=8"),
    ({"stride": 4, "pp": 3}, "2 stages share each node"),
    ({"min_link_Gbps": -1.0}, "min_link_Gbps"),
])
def test_invalid_inputs_name_the_problem(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"bandwidth_Gbps": tuple(tuple(r) for r in uniform(2, 100.0)),
                            "pp": 2, "stride": 8, "gpus_per_node": 8}
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        PlacementProblem(**args)
    assert message in str(info.value)


def test_too_few_nodes_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"too few nodes: the layout needs 8 distinct nodes "
                                         r"\(pp=4 stages × 2 node\(s\) each.*has 6"):
        problem(uniform(6, 100.0), pp=4, k=2)
    with pytest.raises(ValueError, match="too few nodes"):
        problem(uniform(3, 100.0), pp=4)


def test_the_diagonal_is_ignored_and_arrays_are_accepted() -> None:
    m = np.full((3, 3), 100.0)
    np.fill_diagonal(m, np.nan)
    p = PlacementProblem(bandwidth_Gbps=m, pp=3, stride=8,  # type: ignore[arg-type]
                         gpus_per_node=8)
    assert isinstance(p.bandwidth_Gbps, tuple) and p.bandwidth_Gbps[0][1] == 100.0
    assert solve_placement(p).bottleneck_Gbps == 100.0


def test_bad_node_lists_are_rejected() -> None:
    p = problem(uniform(4, 100.0), pp=3)
    for nodes, message in (((0, 1), "3 unit positions"), ((0, 1, 1), "distinct"),
                           ((0, 1, 4), "0..3")):
        with pytest.raises(ValueError, match=message):
            boundary_bandwidths(p, nodes)


def test_min_link_requirement_infeasible_is_explained() -> None:
    m = racks(8, lambda a: a // 4)
    r = solve_placement(problem(m, pp=8, min_link_Gbps=200.0))
    assert r.status == "infeasible"
    assert r.nodes is None and r.bottleneck_Gbps is None and r.bound_Gbps is None
    assert r.naive_bottleneck_Gbps == 100.0
    assert r.explanation is not None
    assert "no placement keeps every node-crossing link >= 200 Gb/s" in r.explanation
    assert "groups of 4 (4 with two), 4 (4 with two) nodes" in r.explanation
    assert "needs 8 nodes in one group" in r.explanation

    r = solve_placement(problem(m, pp=8, min_link_Gbps=100.0))
    assert r.status == "optimal" and r.bottleneck_Gbps == 100.0

    r = solve_placement(problem(m, pp=4, min_link_Gbps=400.0))
    assert r.status == "optimal" and r.bottleneck_Gbps == 400.0

    r = solve_placement(problem(m, pp=2, min_link_Gbps=500.0))
    assert r.status == "infeasible" and r.explanation is not None
    assert "the fastest link is 400 Gb/s" in r.explanation


def test_counting_bound_passes_but_cp_sat_refutes() -> None:
    # fast links form K_{2,4} (nodes 0, 1 against 2..5): one group of 6, every node with two
    # fast links, so the counting bound allows a 6-node path at 400 Gb/s; but a path
    # alternates sides, and 4 nodes on one side need 3 on the other
    fast = {(a, b) for a in (0, 1) for b in (2, 3, 4, 5)}
    m = [[0.0 if a == b else (400.0 if (a, b) in fast or (b, a) in fast else 10.0)
          for b in range(6)] for a in range(6)]
    p = problem(m, pp=6)
    assert oracle(p)[0] == 10.0
    r = solve_placement(p)
    assert r.status == "optimal" and r.bottleneck_Gbps == r.bound_Gbps == 10.0

    r = solve_placement(problem(m, pp=6, min_link_Gbps=100.0))
    assert r.status == "infeasible" and r.nodes is None
    assert r.explanation is not None and "proved by CP-SAT" in r.explanation

    # with 5 nodes the path 2-0-3-1-4 exists
    r = solve_placement(problem(m, pp=5, min_link_Gbps=100.0))
    assert r.status == "optimal" and r.bottleneck_Gbps == 400.0


# --------------------------------------------------------------------------------------------
# Determinism, the time limit, large pools.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pp", "k"), [(8, 1), (4, 2)])
def test_deterministic_for_a_seed(pp: int, k: int) -> None:
    p = problem(random_matrix(16, seed=7), pp=pp, k=k)
    a = solve_placement(p, seed=3)
    b = solve_placement(p, seed=3)
    assert a == b                                   # wall_time_s is not compared
    assert a.status == "optimal"
    c = solve_placement(p, seed=11)
    assert c.bottleneck_Gbps == a.bottleneck_Gbps


def test_time_limit_is_respected_on_64_nodes() -> None:
    p = problem(random_matrix(64, seed=0), pp=32)
    start = time.perf_counter()
    r = solve_placement(p, time_limit_s=0.5)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5 + 20.0  # hang guard; speed: benchmarks/
    assert_valid(p, r)
    assert r.naive_bottleneck_Gbps is not None and r.bottleneck_Gbps is not None
    assert r.bottleneck_Gbps > 2 * r.naive_bottleneck_Gbps


def test_large_pool_returns_a_placement_and_a_valid_bound() -> None:
    n = 512
    p = problem(random_matrix(n, seed=5), pp=64)
    start = time.perf_counter()
    r = solve_placement(p, time_limit_s=1.0)
    assert time.perf_counter() - start < 1.0 + 20.0  # hang guard; speed: benchmarks/
    assert_valid(p, r)
    assert r.gap is not None and r.gap < 0.05
    assert r.bound_Gbps is not None and r.bound_Gbps <= 400.0     # the fastest link
    assert r.naive_bottleneck_Gbps is not None and r.bottleneck_Gbps is not None
    assert r.bottleneck_Gbps > 10 * r.naive_bottleneck_Gbps


def test_random_instances_against_brute_force_with_k_paths() -> None:
    rng = random.Random(4)
    for _ in range(25):
        n = rng.randint(4, 7)
        m = [[rng.choice([10.0, 50.0, 100.0, 200.0, 400.0]) for _ in range(n)]
             for _ in range(n)]
        k = rng.choice([2, 3])
        if n // k < 2:
            continue
        p = problem(m, pp=rng.randint(2, n // k), k=k)
        best, _ = oracle(p)
        r = solve_placement(p)
        assert_valid(p, r)
        assert r.status == "optimal" and r.bottleneck_Gbps == best
