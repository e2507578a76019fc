"""Partial recompute (``plan.recompute_num_layers``): the first N layers of every stage
recomputed, the rest keeping their stash (Megatron's ``--recompute-method block``), in the
estimate, the bulk path and check_plan."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from costmodel import SpecError, evaluate
from costmodel.bulk import SCHEDULES, Candidates, evaluate_bulk, recomputed_layers
from costmodel.specs.cluster import Cluster, GPUPool
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.presets import get_preset
from costmodel.specs.training import TrainingSpec
from tests.costmodel.test_bulk import CLUSTER, MODEL, POOL, TRAINING, _sample

PIPE = {"pool": "h100", "tp": 8, "pp": 4, "dp": 2, "schedule": "1F1B"}
"""80 layers over 4 ranks: 20 per stage."""


def _est(**kw: object):  # type: ignore[no-untyped-def]
    return evaluate(MODEL, TRAINING, CLUSTER, ParallelPlan(**{**PIPE, **kw}))


@pytest.mark.parametrize("extra", [{}, {"schedule": "Interleaved1F1B", "virtual_stages": 2},
                                   {"zero_stage": 3}])
def test_memory_falls_and_compute_grows_with_the_recomputed_layers(extra: dict) -> None:
    """Checks: as N grows, peak memory strictly falls, recompute time and step time strictly
    grow; N = every layer of the largest stage equals plain full recompute exactly; N = 1 sits
    between no and full recompute."""
    chunk = 20 // extra.get("virtual_stages", 1)
    none = _est(**extra)
    full = _est(recompute="full", **extra)
    ests = [_est(recompute="full", recompute_num_layers=k, **extra) for k in range(1, chunk + 1)]
    peaks = [e.memory.peak_gib for e in ests]
    rcs = [e.breakdown.recompute_s for e in ests]
    steps = [e.step_time_s for e in ests]
    assert all(a > b for a, b in pairwise(peaks)), peaks
    assert all(a < b for a, b in pairwise(rcs)), rcs
    assert all(a < b for a, b in pairwise(steps)), steps
    assert ests[-1].step_time_s == full.step_time_s
    assert ests[-1].memory.peak_gib == full.memory.peak_gib
    assert ests[-1].breakdown.recompute_s == full.breakdown.recompute_s
    assert none.memory.peak_gib > peaks[0] and none.step_time_s < steps[0]
    # recompute time is linear in N: each recomputed layer re-runs one block forward
    assert rcs[0] * chunk == pytest.approx(full.breakdown.recompute_s, rel=1e-9)


def test_stash_is_the_recomputed_layers_inputs_plus_the_others_full_stash() -> None:
    """Checks: per micro-batch in flight, the stash of N of a stage's 20 layers recomputed is
    N/20 of full recompute's plus (20 − N)/20 of no recompute's (both include the embedding
    output on rank 0, once)."""
    none = _est().memory.per_stage[1]
    full = _est(recompute="full").memory.per_stage[1]
    for k in (5, 10, 15):
        part = _est(recompute="full", recompute_num_layers=k).memory.per_stage[1]
        want = (k * full.inflight_gib_per_microbatch
                + (20 - k) * none.inflight_gib_per_microbatch) / 20
        assert part.inflight_gib_per_microbatch == pytest.approx(want, rel=1e-12)


def test_a_stage_with_fewer_layers_than_n_recomputes_all_of_them() -> None:
    """Checks: with layers_per_stage [5, 25, 25, 25] and N = 10 the first stage recomputes its
    5 layers, the others 10 each (Megatron's block method: layer_idx < N per block): the
    recompute time of rank 0 is that of 5 layers and of rank 1 that of 10."""
    split = {"layers_per_stage": [5, 25, 25, 25]}
    est = _est(recompute="full", recompute_num_layers=10, **split)
    full = _est(recompute="full", **split)
    one = _est(recompute="full", recompute_num_layers=1, **split)
    # rank 1 is the busiest (25 blocks, no vocabulary layers): its breakdown
    assert est.breakdown.recompute_s == pytest.approx(10 * one.breakdown.recompute_s, rel=1e-9)
    assert full.breakdown.recompute_s == pytest.approx(25 * one.breakdown.recompute_s, rel=1e-9)
    # rank 0's stage: all 5 layers recomputed, as with plain full recompute
    f0 = full.memory.per_stage[0].inflight_gib_per_microbatch
    assert est.memory.per_stage[0].inflight_gib_per_microbatch == pytest.approx(f0, rel=1e-12)


def test_hardware_flops_count_only_the_recomputed_layers() -> None:
    """Checks: HFU − MFU (the recompute's share of the hardware FLOPs) is N/20 of full
    recompute's at equal step time, i.e. the recompute FLOPs scale with N."""
    full = _est(recompute="full")
    part = _est(recompute="full", recompute_num_layers=5)
    extra_full = (full.hfu - full.mfu) * full.step_time_s
    extra_part = (part.hfu - part.mfu) * part.step_time_s
    assert extra_part == pytest.approx(extra_full * 5 / 20, rel=1e-9)


def test_moe_partial_recompute() -> None:
    """Checks: an MoE model with dense first layers (DeepSeek-V3's 3) takes the first N layers
    of each stage by kind: memory and step lie between none and full."""
    model = get_preset("deepseek-v3")
    training = TrainingSpec(global_batch_size=512, seq_len=4096)
    cluster = Cluster(pools=[GPUPool(name="h100", gpu="H100-SXM-80GB", nodes=64)])
    base = {"pool": "h100", "pp": 8, "dp": 64, "ep": 8, "schedule": "1F1B", "zero_stage": 1}
    ests = [evaluate(model, training, cluster, ParallelPlan(**base, **kw))
            for kw in ({}, {"recompute": "full", "recompute_num_layers": 4},
                       {"recompute": "full"})]
    peaks = [e.memory.peak_gib for e in ests]
    steps = [e.step_time_s for e in ests]
    assert peaks[0] > peaks[1] > peaks[2]
    assert steps[0] < steps[1] < steps[2]


@pytest.mark.parametrize("plan,rule", [
    ({"recompute": "selective", "recompute_num_layers": 4}, "only with recompute 'full'"),
    ({"recompute_num_layers": 4}, "only with recompute 'full'"),
    ({"recompute": "full", "recompute_num_layers": 21}, "at most the 20 layers"),
    ({"recompute": "full", "recompute_num_layers": 11, "schedule": "Interleaved1F1B",
      "virtual_stages": 2}, "at most the 10 layers"),
])
def test_check_plan_names_the_field_and_the_rule(plan: dict, rule: str) -> None:
    """Checks: an invalid recompute_num_layers is a SpecError on plan.recompute_num_layers
    whose rule says what holds."""
    with pytest.raises(SpecError) as exc:
        _est(**plan)
    probs = [p for p in exc.value.problems if p.field == "plan.recompute_num_layers"]
    assert probs and rule in probs[0].rule, exc.value.problems


def test_check_plan_limit_is_the_largest_stage() -> None:
    """Checks: with an uneven split the limit is the largest stage (N above a small stage
    means that stage recomputes all its layers), not the smallest."""
    _est(recompute="full", recompute_num_layers=25, layers_per_stage=[5, 25, 25, 25])
    with pytest.raises(SpecError):
        _est(recompute="full", recompute_num_layers=26, layers_per_stage=[5, 25, 25, 25])


def test_recomputed_layers_per_rank_follow_the_chunk_split() -> None:
    """Checks: a rank of 7 layers over 2 chunks (4 + 3) recomputes min(N, 4) + min(N, 3);
    N = 0 means every layer."""
    got = recomputed_layers(np.full(5, 7.0), np.full(5, 2.0), np.array([0, 1, 3, 4, 9.0]))
    assert got.tolist() == [7, 2, 6, 7, 7]


# ---------------------------------------------------------------------------- bulk == estimate

GRID = Candidates.grid(
    tp=[4, 8], pp=[1, 2, 4, 8], dp=[1, 2, 4], mbs=[1, 2], v=[1, 2, 4],
    schedule=list(SCHEDULES), recompute=["full"], sp=[False, True], zero=[0, 1, 3],
    rc_layers=[1, 3, 7, 20])


@pytest.fixture(scope="module")
def bulk():  # type: ignore[no-untyped-def]
    return evaluate_bulk(MODEL, TRAINING, POOL, GRID)


def test_bulk_memory_equals_the_estimate(bulk) -> None:  # type: ignore[no-untyped-def]
    """Checks: for partial-recompute plans the bulk peak the search filters by equals the
    estimate's (the same per-layer formulas, the same per-chunk recomputed layers)."""
    for i in _sample(bulk.valid, 50, seed=11):
        est = evaluate(MODEL, TRAINING, CLUSTER, GRID.plan(int(i), pool="h100"))
        assert bulk.peak_gib[i] == pytest.approx(est.memory.peak_gib, rel=1e-9), GRID.plan(
            int(i))


def test_bulk_step_time_tracks_the_estimate(bulk) -> None:  # type: ignore[no-untyped-def]
    """Checks: the closed forms stay within the bounds test_bulk.py holds them to (4.5 %
    without ZeRO-3, 20 % with it) for partial-recompute plans."""
    for zero3, tol, seed in ((False, 0.045, 12), (True, 0.20, 13)):
        for i in _sample(bulk.valid & ((GRID.zero == 3) == zero3), 30, seed=seed):
            est = evaluate(MODEL, TRAINING, CLUSTER, GRID.plan(int(i), pool="h100"))
            assert bulk.step_time_s[i] == pytest.approx(est.step_time_s, rel=tol), GRID.plan(
                int(i))


def test_bulk_bounds_stay_below_the_estimate(bulk) -> None:  # type: ignore[no-untyped-def]
    """Checks: both lower bounds (any partition; the even split) are ≤ the simulated step of
    partial-recompute plans, and the any-partition bound ≤ that of an uneven split."""
    for i in _sample(bulk.valid, 60, seed=14):
        plan = GRID.plan(int(i), pool="h100")
        est = evaluate(MODEL, TRAINING, CLUSTER, plan)
        assert bulk.lower_bound_even_s[i] <= est.step_time_s * (1 + 1e-9), plan
        assert bulk.lower_bound_s[i] <= est.step_time_s * (1 + 1e-9), plan
    c = Candidates.grid(tp=[8], pp=[4], dp=[2], recompute=["full"], rc_layers=[3])
    lb = float(evaluate_bulk(MODEL, TRAINING, POOL, c).lower_bound_s[0])
    uneven = _est(recompute="full", recompute_num_layers=3, layers_per_stage=[2, 38, 38, 2])
    assert lb <= uneven.step_time_s


def test_bulk_plan_round_trips_recompute_num_layers() -> None:
    """Checks: Candidates.from_plans / plan keep recompute_num_layers (0 = null)."""
    plans = [ParallelPlan(**PIPE, recompute="full", recompute_num_layers=7),
             ParallelPlan(**PIPE, recompute="full")]
    c = Candidates.from_plans(plans)
    assert c.rc_layers.tolist() == [7, 0]
    assert [c.plan(i, pool="h100") for i in range(2)] == plans
    ok = evaluate_bulk(MODEL, TRAINING, POOL, Candidates.grid(
        tp=[8], pp=[4], dp=[2], recompute=["none", "full"], rc_layers=[5, 20, 21])).valid
    # rc_layers only with full recompute, and at most the 20 layers of a stage
    assert ok.tolist() == [False, False, False, True, True, False]
