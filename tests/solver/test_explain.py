"""Why the next plan ranks lower (:func:`solver.explain.runner_up`): two plans on different
GPU counts compare in the objective's unit, and small differences keep their digits."""

from __future__ import annotations

from typing import Any

import pytest

import costmodel
from solver.explain import _ADDITIVE, _BREAKDOWN_LABELS, _part_text, objective_parts, runner_up
from solver.request import SearchRequest

BASE: dict[str, Any] = {
    "model": {"preset": "llama3-8b"},
    "training": {"global_batch_size": 64, "seq_len": 4096},
    "cluster": {"pools": [{"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                           "nodes": 4, "price_per_gpu_hour": 2.0}]}}


def _estimate(dp: int) -> costmodel.Estimate:
    return costmodel.estimate({**BASE, "plan": {"tp": 2, "pp": 1, "dp": dp}})


def test_cost_compares_two_gpu_counts_in_dollars_per_million_tokens() -> None:
    """8 GPUs against 32 for the same batch: the larger plan's step is ~4× shorter, so every
    one of its parts is fewer seconds per step, yet it costs more per token. The explanation
    names the part whose dollars grew most, in $/M tokens, not a '+0.000 s per step'."""
    small, large = _estimate(4), _estimate(16)
    assert large.step_time_s < small.step_time_s / 3
    assert large.cost_per_million_tokens > small.cost_per_million_tokens
    req = SearchRequest.model_validate({**BASE, "objective": "cost"})
    va, vb = small.cost_per_million_tokens, large.cost_per_million_tokens
    text = runner_up(req, (va, small.plan, small), (vb, large.plan, large))
    pa, pb = objective_parts("cost", va, small), objective_parts("cost", vb, large)
    d, k = max((pb[k] - pa[k], k) for k in _ADDITIVE)
    assert d > 0
    assert f"most of it is {_BREAKDOWN_LABELS[k]} (+${d:.3g}/M tokens)" in text
    assert " s per step" not in text and "dp 4→16" in text


def test_a_cost_part_is_its_seconds_share_of_the_objective() -> None:
    est = _estimate(4)
    parts = objective_parts("cost", est.cost_per_million_tokens, est)
    b = est.breakdown.model_dump()
    for k in _ADDITIVE:
        assert parts[k] == pytest.approx(
            b[k] / est.step_time_s * est.cost_per_million_tokens, rel=1e-12)
    # throughput and time to train keep seconds per step
    assert objective_parts("throughput", -est.tokens_per_s, est) == {k: b[k] for k in _ADDITIVE}


@pytest.mark.parametrize(("objective", "d", "text"), [
    ("throughput", 1.5, "1.500 s per step"),
    ("throughput", 0.0123, "12.3 ms per step"),
    ("time_to_train", 0.0004, "400 µs per step"),
    ("cost", 0.00165, "$0.00165/M tokens"),
    ("cost_to_train", 123456.7, "$123,457 to train"),
    ("cost_to_train", 12.5, "$12.5 to train"),
])
def test_a_difference_keeps_three_digits_and_its_unit(objective: str, d: float,
                                                      text: str) -> None:
    assert _part_text(objective, d) == text
