"""The search gives finalists with unequal stages a synthesized custom schedule."""

from __future__ import annotations

from typing import Any

import pytest

import costmodel
import solver
from solver.custom_schedule import floor_makespan, inflight_limits, synthesis_problem
from solver.request import SearchRequest


def _request(schedules: list[str], **cons: Any) -> dict[str, Any]:
    return {"model": {"preset": "llama3-8b"},
            "training": {"global_batch_size": 32, "seq_len": 4096},
            "cluster": {"pools": [{"name": "h100", "gpu": "H100-SXM-80GB", "nodes": 1,
                                   "price_per_gpu_hour": 2.49}]},
            "objective": "throughput", "top_k": 2, "time_limit_s": 30, "seed": 0,
            "constraints": {"schedules": schedules, "fixed": {"pp": 4, "tp": 1},
                            "recompute": ["selective"], **cons}}


@pytest.fixture(scope="module")
def with_custom() -> solver.SearchResult:
    return solver.search(_request(["1F1B", "custom"]))


@pytest.fixture(scope="module")
def named_only() -> solver.SearchResult:
    return solver.search(_request(["1F1B"]))


def test_synthesized_schedule_beats_the_named_one(with_custom: solver.SearchResult,
                                                  named_only: solver.SearchResult) -> None:
    assert all(p.plan.schedule == "1F1B" for p in named_only.plans)
    best = with_custom.plans[0]
    assert best.plan.schedule == "custom" and best.plan.custom_schedule
    assert with_custom.stats.schedules_synthesized >= 1
    assert best.estimate.tokens_per_s > named_only.plans[0].estimate.tokens_per_s
    assert best.estimate.pipeline.bubble_fraction < named_only.plans[0].estimate.pipeline.\
        bubble_fraction
    assert any("custom schedule synthesized" in n and "replaces 1F1B" in n
               for n in best.explanation.notes)


def test_synthesized_plan_fits_and_reestimates_the_same(with_custom: solver.SearchResult
                                                        ) -> None:
    req = _request(["1F1B", "custom"])
    best = with_custom.plans[0]
    est = costmodel.estimate({"model": req["model"], "training": req["training"],
                              "cluster": req["cluster"], "plan": best.plan.model_dump()})
    assert est.step_time_s == best.estimate.step_time_s
    assert est.fits
    frac = SearchRequest.model_validate(req).constraints.max_memory_fraction
    assert all(sm.total_gib <= sm.capacity_gib * frac for sm in est.memory.per_stage)


def test_inflight_limits_keep_the_plan_within_memory(named_only: solver.SearchResult) -> None:
    req = SearchRequest.model_validate(_request(["1F1B"]))
    est = named_only.plans[0].estimate
    limits = inflight_limits(req, est)
    for sm, lim in zip(est.memory.per_stage, limits, strict=True):
        assert lim >= sm.inflight_microbatches
        grown = sm.total_gib + (lim - sm.inflight_microbatches) * sm.inflight_gib_per_microbatch
        cap = min(sm.usable_gib, sm.capacity_gib * req.constraints.max_memory_fraction)
        assert grown <= cap or lim == len(sm.stages) * est.pipeline.num_microbatches
    problem = synthesis_problem(req.model_copy(update={"constraints": req.constraints.model_copy(
        update={"schedules": None})}), named_only.plans[0].plan, est)
    assert problem is not None
    assert floor_makespan(problem) <= est.pipeline.makespan_s


def test_no_custom_schedule_unless_allowed(named_only: solver.SearchResult) -> None:
    req = SearchRequest.model_validate(_request(["1F1B"]))
    best = named_only.plans[0]
    assert synthesis_problem(req, best.plan, best.estimate) is None
    assert named_only.stats.schedules_synthesized == 0
