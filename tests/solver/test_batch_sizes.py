"""training.global_batch_sizes: the search chooses the batch size too (solver.batch_sizes)."""

from __future__ import annotations

from typing import Any

import pytest

import costmodel
from solver import search
from solver.search import layout_key


def body(sizes: list[int] | None, objective: str = "throughput", gbs: int = 64) -> dict[str, Any]:
    training: dict[str, Any] = {"global_batch_size": gbs, "seq_len": 4096}
    if sizes is not None:
        training["global_batch_sizes"] = sizes
    return {"model": {"preset": "llama3-8b"}, "training": training,
            "cluster": {"pools": [{"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                                   "nodes": 4, "price_per_gpu_hour": 2.0}]},
            "objective": objective, "top_k": 4, "time_limit_s": 30}


@pytest.mark.parametrize("objective", ["throughput", "cost"])
def test_the_chosen_batch_size_is_the_best_of_the_single_size_searches(objective: str) -> None:
    """Checks: the merged search's best equals the best of one search per size (the oracle),
    each plan names its batch size and its estimate is that size's, the plans are distinct
    (size, layout) pairs ranked by objective, and the union is certified optimal."""
    sizes = [32, 128, 256]
    res = search(body(sizes, objective))
    singles = {g: search(body(None, objective, gbs=g)) for g in [32, 64, 128, 256]}
    better = max if objective == "throughput" else min
    oracle = better(r.plans[0].objective_value for r in singles.values())
    assert res.plans[0].objective_value == pytest.approx(oracle, rel=1e-9)
    assert res.optimality.status == "optimal" and res.optimality.gap == 0.0
    values = [p.objective_value for p in res.plans]
    assert values == sorted(values, reverse=objective == "throughput")
    keys = [(p.global_batch_size, *layout_key(p.plan)) for p in res.plans]
    assert len(keys) == len(set(keys)) == 4
    for p in res.plans:
        assert p.global_batch_size in (32, 64, 128, 256)
        job = {k: v for k, v in body(None, gbs=p.global_batch_size or 0).items()
               if k in ("model", "training", "cluster")}
        est = costmodel.estimate({**job, "plan": p.plan})
        assert est.tokens_per_s == pytest.approx(p.estimate.tokens_per_s, rel=1e-9)
        assert any("global batch size" in n for n in p.explanation.notes)
    assert {pt.global_batch_size for pt in res.pareto} <= {32, 64, 128, 256}


def test_without_sizes_the_search_is_unchanged() -> None:
    res = search(body(None))
    assert all(p.global_batch_size is None for p in res.plans)


def test_bad_sizes_name_the_field() -> None:
    with pytest.raises(costmodel.SpecError) as err:
        search(body([0]))
    assert err.value.problems[0].field.startswith("training.global_batch_sizes")
    with pytest.raises(costmodel.SpecError) as err:
        search(body([]))
    assert err.value.problems[0].field.startswith("training.global_batch_sizes")
