"""Straggler sensitivity in the search: every returned plan's explanation carries what one GPU
10 % slower costs it (costmodel.what_if.straggler_sensitivity), and
constraints.max_straggler_sensitivity keeps the fragile plans out.

In pure data parallelism every rank waits for the slowest GPU, so a 10 % slower GPU costs
about 10 % of the compute share of the step (llama3-8b below: +9.98 %); in a pipeline only
the slow stage computes slower and the schedule's bubbles absorb part of it (+8.6 to 9.7 %
for the pp = 2 plans here). A limit of 9.7 % therefore excludes the data-parallel winner and
the search returns a pipeline."""

from __future__ import annotations

import copy
from typing import Any

import pytest

import costmodel
from costmodel.errors import SpecError
from costmodel.what_if import StragglerSensitivity
from solver import search
from solver.request import SearchRequest


def body(**constraints: Any) -> dict[str, Any]:
    """llama3-8b, 64 × 4096-token sequences on 2 × 8 H100 (tests/solver/test_search.body)."""
    return {"model": {"preset": "llama3-8b"},
            "training": {"global_batch_size": 64, "seq_len": 4096},
            "cluster": {"pools": [{"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                                   "nodes": 2, "price_per_gpu_hour": 2.0}]},
            "constraints": constraints, "top_k": 5, "time_limit_s": 20.0}


def _direct(b: dict[str, Any], plan: Any) -> StragglerSensitivity:
    req = SearchRequest.model_validate(copy.deepcopy(b))
    return costmodel.straggler_sensitivity({
        "model": req.model.model_dump(), "training": req.training.model_dump(),
        "cluster": req.cluster.model_dump(), "plan": plan.model_dump()})


def test_every_explanation_reports_the_straggler_sensitivity() -> None:
    """Checks: each returned plan's explanation has the what-if's sensitivity of that plan
    (the same figures as calling it directly) and a note saying it in words."""
    b = body(max_memory_fraction=0.3)  # pipeline plans too
    result = search(b)
    assert result.plans
    assert any(rp.plan.pp > 1 for rp in result.plans)
    for rp in result.plans:
        s = rp.explanation.straggler_sensitivity
        assert s is not None
        direct = _direct(b, rp.plan)
        assert s.increase_fraction == pytest.approx(direct.increase_fraction, rel=1e-12)
        assert s.worst_stage == direct.worst_stage
        assert s.step_time_s == pytest.approx(rp.estimate.step_time_s * (1 + s.increase_fraction))
        assert 0 < s.increase_fraction <= 0.1 + 1e-9  # a 10 % slower GPU costs at most 10 %
        assert any("10 % slower" in n and f"{100 * s.increase_fraction:.1f} %" in n
                   for n in rp.explanation.notes)
    dumped = result.model_dump(mode="json")
    assert "increase_fraction" in dumped["plans"][0]["explanation"]["straggler_sensitivity"]


def test_the_constraint_excludes_the_fragile_data_parallel_plan() -> None:
    """Checks: unconstrained, pure data parallelism wins and loses ~10 % to one slow GPU; with
    max_straggler_sensitivity 0.097 every returned plan (and Pareto point) is at most that
    sensitive, the winner is a pipeline, and it is no better than the unconstrained winner
    (the constraint only removes plans); the search is still certified optimal."""
    free = search(body())
    fragile = free.plans[0]
    fs = fragile.explanation.straggler_sensitivity
    assert fragile.plan.pp == 1 and fs is not None and fs.increase_fraction > 0.097
    limit = 0.097
    robust = search(body(max_straggler_sensitivity=limit))
    assert robust.optimality.status == "optimal" and robust.plans
    for rp in robust.plans:
        s = rp.explanation.straggler_sensitivity
        assert s is not None and s.increase_fraction <= limit
    for pt in robust.pareto:
        assert _direct(body(), pt.plan).increase_fraction <= limit
    best = robust.plans[0]
    assert best.plan.pp > 1
    assert best.objective_value <= fragile.objective_value
    # oracle: any unconstrained plan that meets the limit ranks no better than the winner
    for rp in free.plans:
        s = rp.explanation.straggler_sensitivity
        if s is not None and s.increase_fraction <= limit:
            assert rp.objective_value <= best.objective_value * (1 + 1e-9)


def test_a_limit_no_plan_meets_is_explained() -> None:
    """Checks: 1 % is below what any data-parallel plan loses (fixed tp = pp = 1): the
    search's "no plan" answer, whose reason names the constraint, the number of plans it
    excluded and the least sensitive of them."""
    result = search(body(max_straggler_sensitivity=0.01, fixed={"tp": 1, "pp": 1}))
    assert result.optimality.status == "infeasible" and result.plans == []
    reason = result.infeasible_reason
    assert reason is not None
    assert reason.startswith("constraints.max_straggler_sensitivity 0.01: every plan that fits")
    assert "excluded" in reason and "the least sensitive" in reason
    assert not result.stats.timed_out


def test_the_time_limit_holds_when_nothing_meets_the_limit() -> None:
    """Checks: a limit nothing meets does not make the search run past its time limit (each
    plan costs pp + 1 simulations); the reason says the plans were checked up to it."""
    result = search({**body(max_straggler_sensitivity=0.01), "time_limit_s": 1.0})
    assert result.plans == [] and result.stats.timed_out
    assert result.stats.elapsed_s < 3.0
    assert result.infeasible_reason is not None
    assert "before the time limit" in result.infeasible_reason


@pytest.mark.parametrize("value", [-0.1, 11])
def test_a_bad_limit_is_refused_naming_the_field(value: float) -> None:
    with pytest.raises(SpecError) as err:
        search(body(max_straggler_sensitivity=value))
    assert any(p.field == "constraints.max_straggler_sensitivity"
               for p in err.value.problems)
