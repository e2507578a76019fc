"""The search's time_to_train and cost_to_train objectives with training.reliability: they
rank by the estimate's goodput-aware figures (costmodel.goodput), so with GPUs that fail
often a smaller plan, losing less to restarts and lost work, beats the fastest one; the
branch and bound's optimistic bounds stay bounds (goodput ≤ 1 and the share at the step's
lower bound is an upper bound on the plan's)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from costmodel.estimate import evaluate
from solver import search
from solver.request import SearchRequest

TOKENS = 10**12
FLAKY = {"restart_s": 1800, "checkpoint_GBps_per_node": 1, "gpu_mtbf_hours": 40}
"""A GPU failing every 40 hours (Llama 3's is ~50,680 h): 64 GPUs fail 1.6 times an hour and
lose 85 % of the wall time to restarts and lost work, 32 GPUs about half of it."""


def body(objective: str = "time_to_train", reliability: dict[str, Any] | None = None,
         preemption: float = 0.0, **constraints: Any) -> dict[str, Any]:
    training: dict[str, Any] = {"global_batch_size": 256, "seq_len": 4096,
                                "train_tokens": TOKENS}
    if reliability is not None:
        training["reliability"] = reliability
    return {"model": {"preset": "llama3-8b"}, "training": training,
            "cluster": {"pools": [{"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                                   "nodes": 8, "price_per_gpu_hour": 2.0,
                                   "preemption_per_hour": preemption}]},
            "objective": objective, "constraints": constraints, "top_k": 3,
            "time_limit_s": 30}


def _with_reliability(plan: Any) -> Any:
    """The estimate of ``plan`` under FLAKY reliability."""
    req = SearchRequest.model_validate(body("time_to_train", FLAKY))
    return evaluate(req.model, req.training, req.cluster, plan)


@pytest.mark.parametrize("objective", ["time_to_train", "cost_to_train"])
def test_failures_make_a_smaller_plan_win(objective: str) -> None:
    """Checks: failure-free, the whole pool (64 GPUs) has the shortest time to train and 16
    GPUs the lowest cost (the fastest of equally efficient plans); with a GPU MTBF of 40 h the
    goodput-aware objective picks fewer GPUs (32 and 4), whose value (goodput included) beats the
    failure-free winner's value under the same failures; every value is the estimate's own
    goodput figure."""
    free = search(body(objective))
    flaky = search(body(objective, FLAKY))
    assert free.optimality.status == "optimal" and flaky.optimality.status == "optimal"
    fast, robust = free.plans[0], flaky.plans[0]
    assert fast.estimate.goodput is None
    assert fast.estimate.num_gpus == (64 if objective == "time_to_train" else 16)
    g = robust.estimate.goodput
    assert g is not None and robust.estimate.num_gpus < fast.estimate.num_gpus
    figure = g.time_to_train_s if objective == "time_to_train" else g.cost_to_train
    assert robust.objective_value == pytest.approx(figure, rel=1e-9)
    # the fast plan judged with the same failures is worse than the one chosen
    fast_flaky = _with_reliability(fast.plan).goodput
    assert fast_flaky is not None and fast_flaky.goodput < g.goodput
    fast_value = (fast_flaky.time_to_train_s if objective == "time_to_train"
                  else fast_flaky.cost_to_train)
    assert fast_value is not None and fast_value > robust.objective_value
    # steady state the fast plan is faster: the ranking turned on goodput alone
    assert fast.estimate.tokens_per_s > robust.estimate.tokens_per_s
    for rp in flaky.plans:
        gg = rp.estimate.goodput
        assert gg is not None
        assert rp.objective_value == pytest.approx(
            gg.time_to_train_s if objective == "time_to_train" else gg.cost_to_train, rel=1e-9)
        assert rp.objective_value == pytest.approx(
            (TOKENS / (rp.estimate.tokens_per_s * gg.goodput)) * (
                1 if objective == "time_to_train" else rp.estimate.cost_per_hour / 3600),
            rel=1e-9)
    # the bound is a bound
    assert flaky.optimality.bound is not None and flaky.optimality.value is not None
    assert flaky.optimality.bound <= flaky.optimality.value * (1 + 1e-9)


def test_the_goodput_optimum_is_no_worse_than_any_gpu_budget() -> None:
    """Oracle: the same search restricted to 8, 16, 32 or 64 GPUs never finds a better
    goodput-aware time to train than the unrestricted search's certified optimum."""
    best = search(body("time_to_train", FLAKY))
    assert best.optimality.status == "optimal"
    for n in (8, 16, 32, 64):
        sub = search({**body("time_to_train", FLAKY, max_gpus=n), "top_k": 1})
        assert sub.plans
        assert sub.plans[0].objective_value >= best.plans[0].objective_value * (1 - 1e-9)


def test_throughput_and_cost_objectives_stay_steady_state() -> None:
    """Checks: reliability changes only the to-train objectives; the throughput and cost
    objectives rank by the steady state as before (the same plans)."""
    for objective in ("throughput", "cost"):
        a = search(body(objective))
        b = search(body(objective, FLAKY))
        assert [p.plan for p in a.plans] == [p.plan for p in b.plans]
        assert [p.objective_value for p in a.plans] == pytest.approx(
            [p.objective_value for p in b.plans], rel=1e-12)


def test_preemptible_nodes_count_in_the_search() -> None:
    """Checks: spot nodes preempted 0.5 times an hour each (and GPUs failing at Llama 3's
    rate) make the search pick fewer nodes than on-demand capacity, and the value is the
    estimate's goodput-aware time to train with those preemptions."""
    rel = {"restart_s": 1800, "checkpoint_GBps_per_node": 1}
    steady = search(body("time_to_train", rel))
    spot = search(body("time_to_train", rel, preemption=0.5))
    assert steady.plans[0].estimate.num_gpus == 64
    g = spot.plans[0].estimate.goodput
    assert g is not None and g.preemptions_per_day > 0
    assert spot.plans[0].estimate.num_gpus < 64
    assert spot.plans[0].objective_value == pytest.approx(g.time_to_train_s, rel=1e-9)


def test_negative_preemption_is_refused_naming_the_field() -> None:
    from costmodel.errors import SpecError

    b = copy.deepcopy(body())
    b["cluster"]["pools"][0]["preemption_per_hour"] = -1
    with pytest.raises(SpecError) as err:
        search(b)
    assert any(p.field == "cluster.pools.0.preemption_per_hour" for p in err.value.problems)
