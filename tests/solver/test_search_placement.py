"""The search places pipelines on the best-connected nodes of a measured bandwidth matrix."""

from __future__ import annotations

import copy
from typing import Any

import costmodel
import solver

RACK = {n: n % 2 for n in range(8)}  # interleaved racks: even nodes in one, odd in the other
MATRIX = [[0.0 if a == b else (400.0 if RACK[a] == RACK[b] else 25.0) for b in range(8)]
          for a in range(8)]
REQUEST: dict[str, Any] = {
    "model": {"preset": "llama3-8b"},
    "training": {"global_batch_size": 64, "seq_len": 4096},
    "cluster": {"pools": [{"name": "p", "gpu": "H100-SXM-80GB", "gpus_per_node": 8, "nodes": 8,
                           "price_per_gpu_hour": 2.0}],
                "node_bandwidth_Gbps": MATRIX},
    "constraints": {"fixed": {"tp": 8, "pp": 4, "dp": 1, "cp": 1}, "schedules": ["1F1B"]},
    "top_k": 1, "time_limit_s": 20,
}


def test_pipeline_is_placed_inside_one_rack() -> None:
    """Identity order (nodes 0, 1, 2, 3) crosses racks at every boundary (25 Gb/s); the
    placement keeps all four stages in one rack (400 Gb/s), which the estimate then sees."""
    result = solver.search(REQUEST)
    best = result.plans[0]
    order = best.plan.node_order
    assert order is not None and len(order) == 4
    assert len({RACK[n] for n in order}) == 1
    assert result.stats.placements_solved == 1
    identity = costmodel.estimate({k: REQUEST[k] for k in ("model", "training", "cluster")}
                                  | {"plan": best.plan.model_copy(
                                      update={"node_order": None}).model_dump()})
    assert all(p < q for p, q in zip(best.estimate.pipeline.p2p_s, identity.pipeline.p2p_s,
                                     strict=True))
    assert best.estimate.step_time_s < identity.step_time_s


def test_without_a_matrix_nothing_is_placed() -> None:
    req = copy.deepcopy(REQUEST)
    del req["cluster"]["node_bandwidth_Gbps"]
    result = solver.search(req)
    assert result.plans[0].plan.node_order is None
    assert result.stats.placements_solved == 0


def test_node_order_is_validated() -> None:
    body = {k: REQUEST[k] for k in ("model", "training", "cluster")}
    plan = {"pool": "p", "tp": 8, "pp": 4, "dp": 1, "node_order": [0, 0, 2, 9]}
    try:
        costmodel.estimate({**body, "plan": plan})
    except costmodel.SpecError as exc:
        rules = [p.rule for p in exc.problems if p.field == "plan.node_order"]
        assert any("distinct" in r for r in rules)
        assert any("0..7" in r for r in rules)
    else:
        raise AssertionError("an invalid node_order was accepted")
