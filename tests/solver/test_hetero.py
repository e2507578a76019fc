"""CP-SAT assignment of pipeline stages to GPU pools against brute force."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from solver.hetero import HeteroProblem, solve_hetero, stage_times

GIB = 2.0**30


def _problem(**kw: object) -> HeteroProblem:
    base: dict[str, object] = dict(
        num_layers=8, pp=4, gpus_per_stage=8, pools=("fast", "slow"), pool_gpus=(16, 32),
        layer_time=(1.0, 2.0), first_time=(0.1, 0.2), last_time=(0.5, 1.0),
        layer_bytes=((GIB,) * 4, (GIB,) * 4), fixed_bytes=((GIB,) * 4, (GIB,) * 4),
        capacity_bytes=(80 * GIB, 80 * GIB))
    base.update(kw)
    return HeteroProblem(**base)  # type: ignore[arg-type]


def _compositions(n: int, k: int) -> list[tuple[int, ...]]:
    """Every way to write n as k positive parts (cut points between 1 and n−1)."""
    return [tuple(b - a for a, b in zip((0, *c), (*c, n), strict=True))
            for c in itertools.combinations(range(1, n), k - 1)]


def test_compositions_oracle() -> None:
    assert sorted(_compositions(4, 2)) == [(1, 3), (2, 2), (3, 1)]
    assert all(sum(c) == 12 for c in _compositions(12, 4))
    assert len(_compositions(12, 4)) == math.comb(11, 3)


def brute_force(pr: HeteroProblem) -> float | None:
    best: float | None = None
    P = len(pr.pools)
    budgets = dict(zip(pr.pools, pr.pool_gpus, strict=True))
    for pools in itertools.product(range(P), repeat=pr.pp):
        used: dict[str, int] = {}
        for o in pools:
            g = pr.stage_gpus[o] if pr.stage_gpus is not None else pr.gpus_per_stage
            used[pr.pools[o]] = used.get(pr.pools[o], 0) + g
        if any(used[n] > budgets[n] for n in used):
            continue
        if len({pr.pools[o] for o in pools}) < pr.min_pools:
            continue
        for layers in _compositions(pr.num_layers, pr.pp):
            ok = all(math.ceil(pr.layer_bytes[p][s] / 2**20) * n
                     + math.ceil(pr.fixed_bytes[p][s] / 2**20)
                     <= math.floor(pr.capacity_bytes[p] / 2**20)
                     for s, (p, n) in enumerate(zip(pools, layers, strict=True)))
            if not ok:
                continue
            t = max(stage_times(pr, pools, layers))
            best = t if best is None else min(best, t)
    return best


def test_slower_pool_gets_fewer_layers() -> None:
    """Two stages on a 2x faster pool, two on the slower one: the slow stages get about half
    the layers, which beats an even split (the point of Metis' heterogeneous stages)."""
    pr = _problem(num_layers=12)
    res = solve_hetero(pr)
    assert res.status == "optimal" and res.pools is not None and res.layers is not None
    fast = [n for p, n in zip(res.pools, res.layers, strict=True) if p == "fast"]
    slow = [n for p, n in zip(res.pools, res.layers, strict=True) if p == "slow"]
    assert sum(fast) > sum(slow)
    assert res.max_stage_time == pytest.approx(brute_force(pr))


def test_gpu_counts_are_respected() -> None:
    pr = _problem(pool_gpus=(8, 32))  # the fast pool holds only one stage
    res = solve_hetero(pr)
    assert res.pools is not None and res.pools.count("fast") <= 1


def test_memory_moves_layers_off_a_small_gpu() -> None:
    """The fast pool's GPUs hold at most 2 layers: its stages stay within that."""
    pr = _problem(capacity_bytes=(3.5 * GIB, 80 * GIB))
    res = solve_hetero(pr)
    assert res.pools is not None and res.layers is not None
    assert all(n <= 2 for p, n in zip(res.pools, res.layers, strict=True) if p == "fast")
    assert res.max_stage_time == pytest.approx(brute_force(pr))


def test_infeasible_is_explained() -> None:
    res = solve_hetero(_problem(pool_gpus=(8, 8)))
    assert res.status == "infeasible" and res.pools is None
    assert res.explanation is not None and "needs 4" in res.explanation
    res = solve_hetero(_problem(capacity_bytes=(GIB, GIB)))
    assert res.status == "infeasible" and "memory" in (res.explanation or "")


def test_min_pools_forces_a_mixed_pipeline() -> None:
    res = solve_hetero(_problem(min_pools=2, pool_gpus=(64, 64)))
    assert res.pools is not None and len(set(res.pools)) == 2


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="pool_gpus"):
        _problem(pool_gpus=(8,))
    with pytest.raises(ValueError, match="layer_time"):
        _problem(layer_time=(0.0, 1.0))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.data())
def test_matches_brute_force(data: st.DataObject) -> None:
    P = data.draw(st.integers(1, 3))
    pp = data.draw(st.integers(1, 4))
    L = data.draw(st.integers(pp, 8))
    g = data.draw(st.sampled_from([1, 2]))
    cap = tuple(data.draw(st.floats(2.0, 12.0)) * GIB for _ in range(P))
    pr = HeteroProblem(
        num_layers=L, pp=pp, gpus_per_stage=g, pools=tuple(f"p{i}" for i in range(P)),
        pool_gpus=tuple(data.draw(st.integers(0, 4)) * g for _ in range(P)),
        layer_time=tuple(data.draw(st.floats(0.5, 3.0)) for _ in range(P)),
        first_time=tuple(data.draw(st.floats(0.0, 1.0)) for _ in range(P)),
        last_time=tuple(data.draw(st.floats(0.0, 2.0)) for _ in range(P)),
        layer_bytes=tuple(tuple(data.draw(st.floats(0.2, 2.0)) * GIB for _ in range(pp))
                          for _ in range(P)),
        fixed_bytes=tuple(tuple(data.draw(st.floats(0.0, 2.0)) * GIB for _ in range(pp))
                          for _ in range(P)),
        capacity_bytes=cap, min_pools=data.draw(st.sampled_from([1, 1, 2])))
    expected = brute_force(pr)
    res = solve_hetero(pr, time_limit_s=5)
    if expected is None:
        assert res.status == "infeasible"
    else:
        assert res.status == "optimal"
        assert res.max_stage_time is not None
        # integer time scaling: within one unit per layer term of the float optimum
        assert res.max_stage_time == pytest.approx(expected, rel=1e-5, abs=1e-5)
        assert res.bound is not None and res.bound <= res.max_stage_time + 1e-12


def test_tensor_parallel_options_share_their_pool() -> None:
    """Options (pool, tp): the slow pool can run a stage at tp=8 (half the time per layer,
    twice the GPUs) or tp=4; both draw on the same 32 GPUs. The solver may mix them but never
    exceeds the pool, and it matches brute force."""
    pr = HeteroProblem(
        num_layers=12, pp=4, gpus_per_stage=4, pools=("fast", "slow", "slow"),
        pool_gpus=(8, 24, 24), stage_gpus=(4, 4, 8), tps=(4, 4, 8),
        layer_time=(1.0, 2.0, 1.1), first_time=(0.0, 0.0, 0.0), last_time=(0.3, 0.6, 0.35),
        layer_bytes=((GIB,) * 4, (GIB,) * 4, (0.5 * GIB,) * 4),
        fixed_bytes=((0.0,) * 4, (0.0,) * 4, (0.0,) * 4),
        capacity_bytes=(80 * GIB, 80 * GIB, 80 * GIB))
    res = solve_hetero(pr)
    assert res.status == "optimal" and res.pools is not None and res.tps is not None
    slow_gpus = sum(4 if t == 4 else 8 for p, t in zip(res.pools, res.tps, strict=True)
                    if p == "slow")
    assert slow_gpus <= 24
    assert 8 in res.tps  # the faster tp=8 option is worth its GPUs here
    assert res.max_stage_time == pytest.approx(brute_force(pr), rel=1e-5)


def test_options_of_one_pool_must_agree_on_its_gpus() -> None:
    with pytest.raises(ValueError, match="pool_gpus differs"):
        _problem(pools=("a", "a"), pool_gpus=(8, 16))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_options_match_brute_force(data: st.DataObject) -> None:
    names = data.draw(st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=3))
    P = len(names)
    pp = data.draw(st.integers(1, 3))
    L = data.draw(st.integers(pp, 7))
    budget = {n: data.draw(st.integers(0, 6)) * 2 for n in set(names)}
    pr = HeteroProblem(
        num_layers=L, pp=pp, gpus_per_stage=2, pools=tuple(names),
        pool_gpus=tuple(budget[n] for n in names),
        stage_gpus=tuple(data.draw(st.sampled_from([2, 4])) for _ in range(P)),
        tps=tuple(range(1, P + 1)),
        layer_time=tuple(data.draw(st.floats(0.5, 3.0)) for _ in range(P)),
        first_time=tuple(data.draw(st.floats(0.0, 1.0)) for _ in range(P)),
        last_time=tuple(data.draw(st.floats(0.0, 2.0)) for _ in range(P)),
        layer_bytes=tuple(tuple(data.draw(st.floats(0.2, 2.0)) * GIB for _ in range(pp))
                          for _ in range(P)),
        fixed_bytes=tuple(tuple(0.0 for _ in range(pp)) for _ in range(P)),
        capacity_bytes=tuple(data.draw(st.floats(2.0, 12.0)) * GIB for _ in range(P)))
    expected = brute_force(pr)
    res = solve_hetero(pr, time_limit_s=5)
    if expected is None:
        assert res.status == "infeasible"
    else:
        assert res.status == "optimal" and res.max_stage_time is not None
        assert res.max_stage_time == pytest.approx(expected, rel=1e-5, abs=1e-5)


def _three_pool_sixteen_stages() -> HeteroProblem:
    """Issue 12's three-pool case at pp = 16 (llama3-70b, cp·dp = 16): H100, A100 and L40S
    stages at tp 2, 4 or 8, in-flight activations falling with the stage's position."""
    names = ("h100", "a100", "l40s")
    tps = (2, 4, 8)
    per_tp = {2: (9.578, 0.5238), 4: (4.789, 0.2619), 8: (2.395, 0.13095)}  # GiB, GiB/stage
    return HeteroProblem(
        num_layers=80, pp=16, gpus_per_stage=32,
        pools=tuple(n for n in names for _ in tps), tps=tps * 3,
        pool_gpus=tuple(g for g in (256, 512, 256) for _ in tps),
        stage_gpus=tuple(16 * t for _ in names for t in tps),
        layer_time=(0.020002, 0.011115, 0.007312, 0.056249, 0.029524, 0.017987,
                    0.087952, 0.057114, 0.044186),
        first_time=(0.00094, 0.000592, 0.000434, 0.001437, 0.000929, 0.000675,
                    0.004709, 0.00401, 0.00366),
        last_time=(0.025141, 0.01269, 0.006543, 0.066596, 0.033615, 0.016972,
                   0.095121, 0.04886, 0.026016),
        layer_bytes=tuple(tuple((per_tp[t][0] - per_tp[t][1] * s) * GIB for s in range(16))
                          for _ in names for t in tps),
        fixed_bytes=tuple(tuple(0.0 for _ in range(16)) for _ in range(9)),
        capacity_bytes=tuple(c * GIB for c in (69.435,) * 6 + (41.211,) * 3), min_pools=2)


def test_a_sixteen_stage_three_pool_assignment_is_proven_optimal() -> None:
    """The bisection over thresholds proves this instance optimal; the min-max CP-SAT model
    it replaced stopped at its 5 s limit with 0.1223 s and a bound of 0.018 s (measured when
    written; the search gives it at most 1 s)."""
    pr = _three_pool_sixteen_stages()
    res = solve_hetero(pr, time_limit_s=30)
    assert res.status == "optimal" and res.pools is not None and res.layers is not None
    assert res.tps is not None and res.max_stage_time is not None
    assert res.bound == res.max_stage_time and res.max_stage_time <= 0.1223
    assert sum(res.layers) == 80 and min(res.layers) >= 1 and len(set(res.pools)) >= 2
    options = [next(o for o in range(9) if pr.pools[o] == p and pr.tps[o] == t)  # type: ignore[index]
               for p, t in zip(res.pools, res.tps, strict=True)]
    for name, budget in (("h100", 256), ("a100", 512), ("l40s", 256)):
        assert sum(pr.stage_gpus[o] for o in options if pr.pools[o] == name) <= budget  # type: ignore[index]
    for s, (o, n) in enumerate(zip(options, res.layers, strict=True)):
        assert math.ceil(pr.layer_bytes[o][s] / 2**20) * n <= math.floor(
            pr.capacity_bytes[o] / 2**20)
    assert max(stage_times(pr, tuple(options), res.layers)) == pytest.approx(res.max_stage_time)
