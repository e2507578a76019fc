"""Failure-aware goodput (costmodel.goodput): the interval is the model's optimum, goodput is
monotone in what it should be, the schemes order as they should, and the estimate carries it."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

import costmodel
from costmodel.goodput import optimal_interval, wall_per_useful
from costmodel.specs.reliability import LLAMA3_GPU_MTBF_HOURS
from service.estimates.schemas import LLAMA3_70B_EXAMPLE

RELIABILITY = {"restart_s": 600, "checkpoint_GBps_per_node": 5}


def _estimate(**reliability: Any) -> costmodel.Estimate:
    body = copy.deepcopy(LLAMA3_70B_EXAMPLE)
    body["training"]["reliability"] = {**RELIABILITY, **reliability}
    body["training"]["train_tokens"] = 15_000_000_000_000
    return costmodel.estimate(body)


def _golden_section(f: Any, lo: float, hi: float, iters: int = 200) -> float:
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    for _ in range(iters):
        c, d = b - g * (b - a), a + g * (b - a)
        if f(c) < f(d):
            b = d
        else:
            a = c
    return (a + b) / 2


@pytest.mark.parametrize("delta,restart,mtbf_h", [(30, 600, 3.0), (300, 1800, 1.0),
                                                  (5, 60, 24.0), (120, 600, 0.5)])
def test_the_interval_is_the_numerical_optimum_of_the_same_model(
        delta: float, restart: float, mtbf_h: float) -> None:
    rate = 1 / (mtbf_h * 3600)
    tau = optimal_interval(delta, restart, rate, 0.0, 0.0)
    # W is finite for τ < 2a, a = M − R − δ/2 (the denominator's root); W is unimodal there
    a = mtbf_h * 3600 - restart - delta / 2
    numeric = _golden_section(lambda t: wall_per_useful(t, delta, restart, rate, 0.0, 0.0),
                              1e-3, 2 * a * 0.999)
    assert tau == pytest.approx(numeric, rel=0.02)
    # and Young's first-order sqrt(2 δ M) is close when M ≫ δ
    if mtbf_h * 3600 > 100 * delta:
        assert tau == pytest.approx(math.sqrt(2 * delta * mtbf_h * 3600), rel=0.15)


def test_goodput_is_monotone_in_mtbf_and_checkpoint_bandwidth() -> None:
    by_mtbf = [_estimate(gpu_mtbf_hours=h).goodput for h in (5_000, 20_000, 80_000)]
    by_bw = [_estimate(checkpoint_GBps_per_node=b).goodput for b in (0.5, 2, 20)]
    for series in (by_mtbf, by_bw):
        values = [g.goodput for g in series if g is not None]
        assert len(values) == 3 and values == sorted(values) and values[0] < values[-1]
    assert all(0 < v < 1 for v in values)


def test_the_estimate_reports_failures_interval_and_time_to_train() -> None:
    est = _estimate()
    g = est.goodput
    assert g is not None and g.scheme == "checkpoint"
    assert g.failures_per_day == pytest.approx(est.num_gpus * 24 / LLAMA3_GPU_MTBF_HOURS)
    assert g.checkpoint_interval_s is not None and g.checkpoint_interval_s > g.checkpoint_write_s
    assert g.tokens_per_s == pytest.approx(est.tokens_per_s * g.goodput)
    assert g.time_to_train_s == pytest.approx(15e12 / g.tokens_per_s)
    assert g.cost_to_train == pytest.approx(g.time_to_train_s / 3600 * est.cost_per_hour)
    assert costmodel.estimate(LLAMA3_70B_EXAMPLE).goodput is None


def test_recovery_schemes_order_as_their_costs() -> None:
    # pp 4 in the example: CheckFree recovers the 2 intermediate stages from neighbours
    slow_storage = {"checkpoint_GBps_per_node": 0.5}
    ckpt = _estimate(**slow_storage).goodput
    free = _estimate(scheme="checkfree", **slow_storage).goodput
    plus = _estimate(scheme="checkfree", checkfree_plus=True, **slow_storage).goodput
    assert ckpt and free and plus
    assert ckpt.goodput < free.goodput < plus.goodput
    assert plus.checkpoint_interval_s is None


def test_a_given_interval_is_used_and_costs_goodput() -> None:
    best = _estimate().goodput
    assert best is not None and best.checkpoint_interval_s is not None
    worse = _estimate(checkpoint_interval_s=best.checkpoint_interval_s * 4).goodput
    assert worse is not None and worse.checkpoint_interval_s == best.checkpoint_interval_s * 4
    assert worse.goodput < best.goodput


def test_bad_reliability_is_a_spec_error_naming_the_field() -> None:
    body = copy.deepcopy(LLAMA3_70B_EXAMPLE)
    body["training"]["reliability"] = {"restart_s": -1, "checkpoint_GBps_per_node": 5}
    with pytest.raises(costmodel.SpecError) as err:
        costmodel.estimate(body)
    assert any("training.reliability.restart_s" in p.field for p in err.value.problems)


def _spot_estimate(preemption_per_hour: float, **reliability: Any) -> costmodel.Estimate:
    body = copy.deepcopy(LLAMA3_70B_EXAMPLE)
    body["cluster"]["pools"][0]["preemption_per_hour"] = preemption_per_hour
    if reliability is not None:
        body["training"]["reliability"] = {**RELIABILITY, **reliability}
    body["training"]["train_tokens"] = 15_000_000_000_000
    return costmodel.estimate(body)


@pytest.mark.parametrize("scheme", ["checkpoint", "in_memory", "checkfree"])
def test_preemptions_add_to_the_interruptions_and_lower_goodput(scheme: str) -> None:
    """Spot pools: each node of the plan is preempted preemption_per_hour times an hour;
    more preemption, strictly lower goodput and a longer time to train, every scheme."""
    series = [_spot_estimate(p, scheme=scheme) for p in (0.0, 0.001, 0.01, 0.05)]
    goods = [e.goodput for e in series]
    assert all(g is not None for g in goods)
    shares = [g.goodput for g in goods if g is not None]
    assert shares == sorted(shares, reverse=True) and len(set(shares)) == 4
    days = [g.time_to_train_days for g in goods if g is not None]
    assert all(d is not None for d in days) and days == sorted(d or 0.0 for d in days)
    est, g = series[2], goods[2]
    assert g is not None
    nodes = est.num_gpus // 8  # the example's pool has 8 GPUs per node
    assert g.preemptions_per_day == pytest.approx(nodes * 0.01 * 24)
    assert g.failures_per_day == pytest.approx(goods[0].failures_per_day)  # type: ignore[union-attr]
    assert g.job_mtbf_hours == pytest.approx(24 / (g.failures_per_day + g.preemptions_per_day))
    assert any("preemption" in n for n in g.notes)


def test_a_preemption_costs_what_a_failure_costs() -> None:
    """A preemption rate equal to the GPU failure rate gives the goodput of twice the failure
    rate (half the MTBF): the two enter the model the same way."""
    base = _spot_estimate(0.0)
    assert base.goodput is not None
    per_node_hour = 8 / LLAMA3_GPU_MTBF_HOURS  # one node's 8 GPUs' failures per hour
    spot = _spot_estimate(per_node_hour).goodput
    doubled = _spot_estimate(0.0, gpu_mtbf_hours=LLAMA3_GPU_MTBF_HOURS / 2).goodput
    assert spot is not None and doubled is not None
    assert spot.goodput == pytest.approx(doubled.goodput, rel=1e-12)
    assert spot.checkpoint_interval_s == pytest.approx(doubled.checkpoint_interval_s)


def test_preemption_without_reliability_is_a_warning() -> None:
    body = copy.deepcopy(LLAMA3_70B_EXAMPLE)
    body["cluster"]["pools"][0]["preemption_per_hour"] = 0.01
    est = costmodel.estimate(body)
    assert est.goodput is None
    assert any("preemption_per_hour" in w and "training.reliability" in w
               for w in est.warnings)


@pytest.mark.parametrize("value", [-0.01, "x"])
def test_bad_preemption_is_a_spec_error_naming_the_field(value: Any) -> None:
    body = copy.deepcopy(LLAMA3_70B_EXAMPLE)
    body["cluster"]["pools"][0]["preemption_per_hour"] = value
    with pytest.raises(costmodel.SpecError) as err:
        costmodel.estimate(body)
    assert any(p.field == "cluster.pools.0.preemption_per_hour" for p in err.value.problems)


def test_goodput_fraction_on_arrays_is_the_estimates_goodput() -> None:
    """The vectorized model (what the search's bounds use) gives the estimate's figure, and
    falls with more GPUs and more preemption."""
    from costmodel.goodput import goodput_fraction
    from costmodel.specs.reliability import ReliabilitySpec

    est = _spot_estimate(0.01)
    g = est.goodput
    assert g is not None
    req = costmodel.EstimateRequest.model_validate(copy.deepcopy(LLAMA3_70B_EXAMPLE))
    rel = ReliabilitySpec(**RELIABILITY)
    nodes = est.num_gpus // 8
    nic = req.cluster.pools[0].nic_GBps * 8
    shares = goodput_fraction(req.model, req.training, rel, num_gpus=[est.num_gpus] * 3,
                              nodes=[nodes] * 3, pp=[est.plan.pp] * 3, nic_GBps_per_node=nic,
                              step_time_s=est.step_time_s,
                              preemptions_per_hour=[0.0, nodes * 0.01, nodes * 0.1])
    assert float(shares[1]) == pytest.approx(g.goodput, rel=1e-12)
    assert shares[0] > shares[1] > shares[2]
    more = goodput_fraction(req.model, req.training, rel, num_gpus=[64, 128, 256],
                            nodes=[8, 16, 32], pp=4, nic_GBps_per_node=nic, step_time_s=5.0)
    assert more[0] > more[1] > more[2]


def test_a_pools_own_mtbf_sets_its_failure_rate() -> None:
    """pool_gpu_mtbf_hours: the plan's pool fails at its own rate (GPUs / its GPU-hours per
    interruption), other pools' entries change nothing, and the default is gpu_mtbf_hours."""
    base = _estimate().goodput
    same = _estimate(pool_gpu_mtbf_hours={"h100": LLAMA3_GPU_MTBF_HOURS}).goodput
    other = _estimate(pool_gpu_mtbf_hours={"a100": 1_000.0}).goodput
    flaky = _estimate(pool_gpu_mtbf_hours={"h100": LLAMA3_GPU_MTBF_HOURS / 4}).goodput
    assert base is not None and same is not None and other is not None and flaky is not None
    assert same.goodput == pytest.approx(base.goodput) == pytest.approx(other.goodput)
    assert flaky.failures_per_day == pytest.approx(4 * base.failures_per_day)
    assert flaky.goodput < base.goodput


def test_an_unknown_pool_in_pool_mtbf_names_the_field() -> None:
    import solver

    with pytest.raises(costmodel.SpecError) as err:
        _estimate(pool_gpu_mtbf_hours={"b200": 1_000.0})
    assert err.value.problems[0].field == "training.reliability.pool_gpu_mtbf_hours"
    assert "unknown pools ['b200']" in err.value.problems[0].rule
    body = copy.deepcopy(LLAMA3_70B_EXAMPLE)
    del body["plan"]
    body["training"]["reliability"] = {**RELIABILITY, "pool_gpu_mtbf_hours": {"h200": 5.0}}
    with pytest.raises(costmodel.SpecError) as err:
        solver.search(body)
    assert err.value.problems[0].field == "training.reliability.pool_gpu_mtbf_hours"
    with pytest.raises(costmodel.SpecError) as err:
        _estimate(pool_gpu_mtbf_hours={"h100": 0.0})
    assert "pool_gpu_mtbf_hours" in err.value.problems[0].field


def test_time_to_train_avoids_the_pool_that_fails_more() -> None:
    """Two pools of the same hardware and price, one of GPUs that fail 2,000x as often (an
    interruption every ~25 GPU-hours): with the goodput-aware time_to_train objective the
    search trains on the reliable pool alone, and its objective is the estimate's own time to
    train. (At 50x the best plan is a pipeline over both pools: twice the GPUs outweigh a
    goodput of 0.98.)"""
    import solver

    pools = [{"name": name, "gpu": "H100-SXM-80GB", "gpus_per_node": 8, "nodes": 8,
              "price_per_gpu_hour": 2.0} for name in ("flaky", "steady")]
    res = solver.search({
        "model": {"preset": "llama3-8b"},
        "training": {"global_batch_size": 256, "seq_len": 4096,
                     "train_tokens": 1_000_000_000_000,
                     "reliability": {**RELIABILITY,
                                     "pool_gpu_mtbf_hours": {"flaky": LLAMA3_GPU_MTBF_HOURS
                                                             / 2000}}},
        "cluster": {"pools": pools}, "objective": "time_to_train", "top_k": 1,
        "time_limit_s": 30})
    best = res.plans[0]
    assert best.plan.pool == "steady" and best.plan.stages is None
    assert best.estimate.goodput is not None
    assert best.objective_value == pytest.approx(best.estimate.goodput.time_to_train_s)
    flaky = next(b for b in res.best_per_pool if b.pool == "flaky")
    assert flaky.objective_value > best.objective_value
