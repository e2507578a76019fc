"""What-if analysis of stragglers (costmodel.what_if)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

import costmodel
from costmodel import SpecError
from costmodel.estimate import scaled_evaluation
from costmodel.pipeline.simulator import simulate_named
from costmodel.specs.request import EstimateRequest, num_microbatches
from tests.costmodel.test_estimate import request

ONE_F_ONE_B = {"schedule": "1F1B", "virtual_stages": 1}


@pytest.fixture(scope="module")
def pipe() -> dict[str, Any]:
    return request(plan=ONE_F_ONE_B)


@pytest.fixture(scope="module")
def pure_dp() -> dict[str, Any]:
    return request(model={"preset": "llama3-8b"}, training={"global_batch_size": 64},
                   plan={"tp": 1, "pp": 1, "dp": 8, **ONE_F_ONE_B,
                         "sequence_parallel": False})


def test_neutral_scenario_is_the_estimate_exactly(pipe: dict[str, Any]) -> None:
    est = costmodel.estimate(pipe)
    neutral = {"ranks": {"5": 1.0}, "stages": {"1": 1.0}, "nodes": {"0": 1.0},
               "pools": {"h100": 1.0},
               "links": {"intra_node": 1.0, "inter_node": 1.0,
                         "between": [{"nodes": [0, 1], "factor": 1.0}]}}
    for sc in ({}, neutral):
        w = costmodel.what_if(pipe, sc, sensitivity=False)
        assert w.step_time_s == est.step_time_s
        assert w.baseline_step_time_s == est.step_time_s
        assert w.change == 0.0
        assert w.scenario.tokens_per_s == pytest.approx(est.tokens_per_s, rel=1e-12)
        assert w.scenario.cost_per_million_tokens == pytest.approx(
            est.cost_per_million_tokens, rel=1e-12)
        assert w.idle_s == w.baseline_idle_s


def test_slow_stage_equals_direct_simulation(pipe: dict[str, Any]) -> None:
    """Slowing stage 1 of a 1F1B pipeline by f = simulating the unequal pipeline directly,
    plus the estimate's DP/optimizer tail (the optimizer on the slow rank also x f)."""
    f = 1.3
    w = costmodel.what_if(pipe, {"stages": {"1": f}}, sensitivity=False)
    req = EstimateRequest.model_validate(pipe)
    st = scaled_evaluation(req).step()
    scale = np.ones(req.plan.pp)
    scale[1] = f
    sim = simulate_named("1F1B", req.plan.pp, num_microbatches(req.training, req.plan), 1,
                         st.tf * scale, st.ti * scale, st.tw * scale, st.p2p)
    assert w.critical_path.pipeline_s == pytest.approx(sim.step_time, rel=1e-12)
    assert w.critical_path.pipeline_s > st.makespan
    assert w.stage_factors == [1.0, f, 1.0, 1.0]
    # the tail (DP exposure + optimizer) is the estimate's own, bounded by f times it
    base_tail = st.step - st.makespan
    assert base_tail * 0.5 <= w.critical_path.tail_s <= base_tail * f + 1e-9
    assert w.critical_path.rank == 1  # the slow stage dominates the critical path
    assert w.idle_s[1] == min(w.idle_s)  # and waits least


def test_pure_dp_slow_gpu_costs_its_share_of_compute(pure_dp: dict[str, Any]) -> None:
    """dp=8, tp=pp=1: one GPU 10 % slower makes the whole step wait for it (the gradient
    all-reduce is synchronous): the increase is 10 % of the compute (makespan + optimizer).
    Tolerance 2 % of that increase: the only other term, the exposed DP communication (the
    last gradient bucket, 0.3 % of this step), can only shrink when the backward it overlaps
    grows, and here it does not change at all."""
    est = costmodel.estimate(pure_dp)
    w = costmodel.what_if(pure_dp, {"ranks": {"3": 1.1}})
    compute = est.pipeline.makespan_s + est.breakdown.optimizer_s
    assert w.step_time_s - est.step_time_s == pytest.approx(0.1 * compute, rel=0.02)
    assert w.stage_factors == [1.1]
    sens = w.straggler_sensitivity
    assert sens is not None
    assert sens.increase_s == pytest.approx(w.step_time_s - est.step_time_s, rel=1e-12)


@pytest.mark.parametrize(("scenario", "sign"), [
    ({"nodes": {"0": 1.2}}, 1),
    ({"nodes": {"0": 0.9}}, 0),  # only node 0 faster: the others still set the step
    ({"pools": {"h100": 1.1}}, 1),
    ({"pools": {"h100": 0.9}}, -1),
    ({"links": {"inter_node": 2.0}}, 1),
    ({"links": {"inter_node": 0.5}}, -1),
    ({"links": {"between": [{"nodes": [0, 2], "factor": 3.0}]}}, 1),
])
def test_direction(pipe: dict[str, Any], scenario: dict[str, Any], sign: int) -> None:
    w = costmodel.what_if(pipe, scenario, sensitivity=False)
    if sign > 0:
        assert w.change > 0
        assert w.scenario.tokens_per_s < w.baseline.tokens_per_s
        assert w.scenario.cost_per_million_tokens > w.baseline.cost_per_million_tokens
    elif sign < 0:
        assert w.change < 0
    else:
        assert w.change <= 1e-12


def test_pool_factor_scales_compute_exactly(pipe: dict[str, Any]) -> None:
    """Every stage 10 % slower: the makespan grows by 10 % of its compute; only the send/recv
    times (a few ms of a 140 s step, not scaled by a compute factor) keep it under 1.1x."""
    w = costmodel.what_if(pipe, {"pools": {"h100": 1.1}}, sensitivity=False)
    base = costmodel.estimate(pipe).pipeline.makespan_s
    assert base * 1.0999 < w.critical_path.pipeline_s < base * 1.1


def test_jitter_mean_at_least_the_step_and_seeded(pipe: dict[str, Any]) -> None:
    sc = {"jitter": {"cv": 0.05, "steps": 16, "seed": 7}}
    a = costmodel.what_if(pipe, sc, sensitivity=False)
    b = costmodel.what_if(pipe, sc, sensitivity=False)
    c = costmodel.what_if(pipe, {"jitter": {"cv": 0.05, "steps": 16, "seed": 8}},
                          sensitivity=False)
    assert a.jitter is not None and b.jitter is not None and c.jitter is not None
    assert a.jitter.step_times_s == b.jitter.step_times_s
    assert a.jitter.step_times_s != c.jitter.step_times_s
    assert a.jitter.mean_step_time_s >= a.baseline_step_time_s
    assert a.step_time_s == a.jitter.mean_step_time_s
    assert len(a.jitter.step_times_s) == 16
    zero = costmodel.what_if(pipe, {"jitter": {"cv": 0.0, "steps": 3}}, sensitivity=False)
    assert zero.step_time_s == zero.baseline_step_time_s


def test_straggler_sensitivity(pipe: dict[str, Any]) -> None:
    s = costmodel.straggler_sensitivity(pipe)
    assert len(s.per_stage_increase_s) == 4
    assert s.increase_s == max(s.per_stage_increase_s) > 0
    # never more than the 10 % of the step the slow GPU's compute can add
    assert 0 < s.increase_fraction <= 0.1 + 1e-9
    assert s.worst_rank // 16 == s.worst_stage  # tp·dp = 16 GPUs per pipeline stage


def test_critical_path_is_a_chain(pipe: dict[str, Any]) -> None:
    w = costmodel.what_if(pipe, {"stages": {"2": 1.5}}, sensitivity=False)
    acts = w.critical_path.actions
    assert acts
    assert acts[-1].end_s == pytest.approx(w.critical_path.pipeline_s)
    for a, b in itertools.pairwise(acts):
        assert a.end_s <= b.start_s + 1e-9


@pytest.mark.parametrize(("scenario", "field"), [
    ({"ranks": {"64": 1.1}}, "ranks.64"),
    ({"ranks": {"0": 0.0}}, "ranks.0"),
    ({"stages": {"4": 1.1}}, "stages.4"),
    ({"stages": {"0": -1.0}}, "stages.0"),
    ({"nodes": {"16": 1.1}}, "nodes.16"),
    ({"pools": {"a100": 1.1}}, "pools.a100"),
    ({"links": {"inter_node": 0}}, "links.inter_node"),
    ({"links": {"between": [{"nodes": [0, 99], "factor": 2}]}}, "links.between.0.nodes"),
    ({"jitter": {"cv": -0.1}}, "jitter.cv"),
    ({"jitter": {"cv_per_rank": {"1": -1}}}, "jitter.cv_per_rank.1"),
    ({"jitter": {"steps": 0}}, "jitter.steps"),
    ({"typo": 1}, "typo"),
])
def test_bad_scenario_names_the_field(pipe: dict[str, Any], scenario: dict[str, Any],
                                      field: str) -> None:
    with pytest.raises(SpecError) as exc:
        costmodel.what_if(pipe, scenario)
    assert exc.value.field == field


def _bidirectional(schedule: str, v: int) -> dict[str, Any]:
    from tests.costmodel.test_estimate_bidirectional import request as bireq

    return bireq(schedule, v)


def _hetero() -> dict[str, Any]:
    from tests.costmodel.test_heterogeneous import _mixed

    return _mixed()  # llama3-8b, three stages on H100, the last on A100


@pytest.mark.parametrize("make", [lambda: _bidirectional("Chimera", 1),
                                  lambda: _bidirectional("BitPipe", 2), _hetero,
                                  lambda: request(plan={"schedule": "ZBVZeroBubble",
                                                        "virtual_stages": 2})],
                         ids=["Chimera", "BitPipe", "hetero", "ZBV"])
def test_neutral_and_slowed_on_other_schedules(make: Any) -> None:
    """Two model replicas per pipeline (each rank runs a stage of each), a pipeline over two
    pools and a V-shaped zero-bubble schedule: neutral is exact, a slower stage costs time."""
    req = make()
    w = costmodel.what_if(req, {}, sensitivity=False)
    assert w.step_time_s == costmodel.estimate(req).step_time_s
    assert costmodel.what_if(req, {"stages": {"1": 1.3}}, sensitivity=False).change > 0


def test_pools_of_a_heterogeneous_pipeline() -> None:
    """The A100 stage is the slowest: slowing its pool costs ~its factor, slowing the H100 pool
    (whose stages wait for the A100 one) costs little."""
    req = _hetero()
    slow_a100 = costmodel.what_if(req, {"pools": {"a100": 1.2}}, sensitivity=False).change
    slow_h100 = costmodel.what_if(req, {"pools": {"h100": 1.2}}, sensitivity=False).change
    assert 0.1 < slow_a100 <= 0.2 + 1e-9
    assert 0 <= slow_h100 < slow_a100
