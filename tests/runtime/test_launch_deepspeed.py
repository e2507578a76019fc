"""DeepSpeed emitter: the ds_config satisfies DeepSpeed's batch assertion and pipeline rules
(framework_rules.check_deepspeed) for the plan it was rendered from; what a plain ds_config
cannot express is refused with the field and the rule."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runtime.launch import LaunchError, refusals, render
from tests.runtime.framework_rules import check_deepspeed
from tests.runtime.plans import PLANS

H100 = {"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8, "nodes": 4}


def req(precision: str = "bf16", gbs: int = 64, **plan: Any) -> dict[str, Any]:
    return {"model": {"preset": "llama3-8b"},
            "training": {"global_batch_size": gbs, "seq_len": 4096, "precision": precision},
            "cluster": {"pools": [H100]}, "plan": plan}


def refused(request: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(LaunchError) as info:
        render("deepspeed", request)
    return {p.field: p.rule for p in info.value.problems}


@pytest.mark.parametrize("name", ["llama3_8b_dp", "mixtral_ep", "llama3_8b_zero3",
                                  "llama3_8b_gpipe", "llama3_8b_pp2_uneven"])
def test_representative_plans_pass_deepspeed_rules(name: str) -> None:
    cfg = render("deepspeed", PLANS[name])
    assert check_deepspeed(cfg, PLANS[name]) == []


def test_gpipe_runs_as_deepspeeds_train_schedule() -> None:
    cfg = render("deepspeed", PLANS["llama3_8b_gpipe"])
    ds = json.loads(cfg.content)
    # config.py _batch_assertion: 64 == 2 * 16 * dp 2
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"],
            ds["gradient_accumulation_steps"]) == (64, 2, 16)
    assert any("TrainSchedule" in n for n in cfg.notes)


def test_fp16_and_zero3() -> None:
    ds = json.loads(render("deepspeed", req("fp16", dp=16, zero_stage=3)).content)
    assert ds["fp16"]["enabled"] and "bf16" not in ds
    assert ds["zero_optimization"]["stage"] == 3


def test_refusals() -> None:
    assert "Megatron-DeepSpeed" in refused(req(tp=2, dp=8))["plan.tp"]
    assert "plan.cp" in refused(req(cp=2, dp=8))
    assert "plan.training.precision" not in refused(req("fp8", dp=8))
    assert "fp8" in refused(req("fp8", dp=8))["training.precision"]
    rule = refused(req(pp=4, dp=2, zero_stage=2))["plan.zero_stage"]
    assert "PipelineEngine.__init__" in rule
    assert "TrainSchedule" in refused(req(pp=4, dp=2, schedule="InterleavedZeroBubble"))[
        "plan.schedule"]
    assert "plan.virtual_stages" in refused(
        req(pp=4, dp=2, schedule="Interleaved1F1B", virtual_stages=2))


def test_the_rule_checker_catches_a_broken_config() -> None:
    r = PLANS["llama3_8b_gpipe"]
    cfg = render("deepspeed", r)
    broken = cfg.model_copy(update={"content": cfg.content.replace(
        '"gradient_accumulation_steps": 16', '"gradient_accumulation_steps": 8')})
    assert any("_batch_assertion" in p for p in check_deepspeed(broken, r))


def test_refuses_native_moe_with_zero3() -> None:
    # deepspeed/runtime/engine.py: "MoE not supported with Stage 3" (v0.17.6, line 1793)
    moe = {"model": {"preset": "mixtral-8x7b"},
           "training": {"global_batch_size": 64, "seq_len": 4096},
           "cluster": {"pools": [H100]}, "plan": {"dp": 8, "ep": 8, "zero_stage": 3}}
    assert "ZeRO Stage 3" in refused(moe)["plan.zero_stage"]
    assert refusals("deepspeed", moe) and refusals("deepspeed", {
        **moe, "plan": {"dp": 8, "ep": 8, "zero_stage": 2}}) == []


def test_partial_recompute_without_a_pipeline_is_the_scripts_choice() -> None:
    """Checks: at pp = 1 a partial-recompute plan renders (the training script decides which
    blocks deepspeed.checkpointing.checkpoint wraps) and the notes say how many; with a
    pipeline it is refused naming plan.recompute_num_layers (PipelineModule checkpoints every
    layer in groups of activation_checkpoint_interval)."""
    r = req(dp=8, recompute="full", recompute_num_layers=5)
    cfg = render("deepspeed", r)
    assert check_deepspeed(cfg, r) == []
    assert "activation_checkpointing" in json.loads(cfg.content)
    assert any("first 5 of the model's 32 transformer blocks" in n for n in cfg.notes)
    piped = req(pp=2, dp=4, schedule="1F1B", recompute="full", recompute_num_layers=5)
    assert "activation_checkpoint_interval" in refused(piped)["plan.recompute_num_layers"]
    assert refusals("deepspeed", piped)
