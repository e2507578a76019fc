"""torchtitan emitter: every emitted config passes torchtitan's own rules (re-implemented in
framework_rules.check_torchtitan, each citing its file and function) and runs the plan it was
rendered from; what torchtitan cannot run is refused with the field and the rule."""

from __future__ import annotations

import copy
import tomllib
from typing import Any

import pytest

from runtime.launch import LaunchConfig, LaunchError, render
from tests.runtime.framework_rules import check_torchtitan
from tests.runtime.plans import PLANS

H100 = {"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8, "nodes": 8}


def req(model: str = "llama3-8b", gbs: int = 64, seq: int = 4096, precision: str = "bf16",
        **plan: Any) -> dict[str, Any]:
    return {"model": {"preset": model},
            "training": {"global_batch_size": gbs, "seq_len": seq, "precision": precision},
            "cluster": {"pools": [H100]}, "plan": plan}


def toml_of(cfg: LaunchConfig) -> dict[str, Any]:
    return tomllib.loads(cfg.files["meshplan_torchtitan.toml"])


def refused(request: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(LaunchError) as info:
        render("torchtitan", request)
    return {p.field: p.rule for p in info.value.problems}


@pytest.mark.parametrize("name", [n for n in PLANS if n != "llama3_8b_dp"] + ["llama3_8b_dp"])
def test_representative_plans_pass_torchtitan_rules(name: str) -> None:
    cfg = render("torchtitan", PLANS[name])
    assert check_torchtitan(cfg, PLANS[name]) == []


def test_first_and_last_stage_less_layers_reproduce_an_uneven_split() -> None:
    # generate_llm_fqn_per_model_part(2, 32, 2, 0): 34 effective layers, 17 per stage, the
    # embedding counting 2 -> stages of 15 and 17 layers
    cfg = render("torchtitan", PLANS["llama3_8b_pp2_uneven"])
    par = toml_of(cfg)["parallelism"]
    assert par["pipeline_parallel_first_stage_less_layers"] == 2
    assert par["pipeline_parallel_last_stage_less_layers"] == 0
    assert "module_fqns_per_model_part" not in par


def test_split_the_generator_cannot_make_lists_each_stages_modules() -> None:
    cfg = render("torchtitan", PLANS["llama3_70b_interleaved"])
    parts = toml_of(cfg)["parallelism"]["module_fqns_per_model_part"]
    assert [sum(m.startswith("layers.") for m in p) for p in parts] == [9, 11, 11, 9, 9, 11,
                                                                         11, 9]
    assert parts[0][0] == "tok_embeddings" and parts[-1][-2:] == ["norm", "output"]
    assert check_torchtitan(cfg, PLANS["llama3_70b_interleaved"]) == []


def test_layers_per_stage_sets_a_stage_count_other_than_two_per_rank() -> None:
    # pipeline_llm: ceil((32 + 0 + 0) / 4) = 8 stages = 4 per rank on pp 2
    r = req(pp=2, dp=4, schedule="Interleaved1F1B", virtual_stages=4, gbs=64)
    cfg = render("torchtitan", r)
    par = toml_of(cfg)["parallelism"]
    assert par["pipeline_parallel_layers_per_stage"] == 4
    assert check_torchtitan(cfg, r) == []


@pytest.mark.parametrize("schedule", ["ZBVZeroBubble", "DualPipeV", "InterleavedZeroBubble"])
def test_multi_stage_schedules(schedule: str) -> None:
    r = req(pp=4, dp=2, schedule=schedule, virtual_stages=2, gbs=64)
    cfg = render("torchtitan", r)
    assert toml_of(cfg)["parallelism"]["pipeline_parallel_schedule"] == schedule
    assert check_torchtitan(cfg, r) == []


def test_zero_stages_map_to_ddp_and_fsdp() -> None:
    par = toml_of(render("torchtitan", PLANS["llama3_8b_dp"]))["parallelism"]
    assert (par["data_parallel_replicate_degree"], par["data_parallel_shard_degree"]) == (8, 1)
    par = toml_of(render("torchtitan", PLANS["llama3_8b_zero3"]))["parallelism"]
    assert (par["data_parallel_shard_degree"], par["fsdp_reshard_after_forward"]) == (16,
                                                                                     "always")
    cfg = render("torchtitan", req(dp=8, zero_stage=2, gbs=64))
    assert toml_of(cfg)["parallelism"]["fsdp_reshard_after_forward"] == "never"
    assert any("ZeRO-2" in n for n in cfg.notes)


def test_expert_parallel_plan_sets_expert_tensor_parallel_to_tp() -> None:
    r = req("mixtral-8x7b", gbs=128, tp=2, dp=4, ep=4, sequence_parallel=True)
    cfg = render("torchtitan", r)
    par = toml_of(cfg)["parallelism"]
    assert (par["expert_parallel_degree"], par["expert_tensor_parallel_degree"]) == (4, 2)
    assert check_torchtitan(cfg, r) == []


def test_fp8_uses_the_float8_converter() -> None:
    r = req(dp=8, precision="fp8")
    cfg = render("torchtitan", r)
    assert toml_of(cfg)["model"]["converters"] == ["float8"]
    assert check_torchtitan(cfg, r) == []


# ---- refusals: each names the field and the rule's source


def test_refuses_fp16() -> None:
    assert "job_config.py" in refused(req(dp=8, precision="fp16"))["training.precision"]


def test_refuses_ddp_with_other_parallelism() -> None:
    rule = refused(req(tp=2, dp=4, zero_stage=0))["plan.zero_stage"]
    assert "DDP has not supported > 1D parallelism" in rule and "tp=2" in rule


def test_refuses_one_stage_per_rank_with_a_multi_stage_schedule() -> None:
    rule = refused(req(pp=4, dp=2, schedule="InterleavedZeroBubble"))["plan.virtual_stages"]
    assert "pipeline_llm" in rule


def test_refuses_seq_len_not_divisible_by_tp_times_two_cp() -> None:
    rule = refused(req(tp=4, dp=2, seq=4098, sequence_parallel=True))["training.seq_len"]
    assert "tp·2·cp = 8" in rule and "seq_len_divisor" in rule


def test_refuses_expert_parallel_degree_torchtitan_cannot_borrow() -> None:
    # ep 2 divides dp·cp = 4 (meshplan's rule) but not ep % cp == 0 with cp 4
    r = req("mixtral-8x7b", gbs=64, seq=4096, dp=1, cp=4, ep=2)
    assert "ParallelDims._validate" in refused(r)["plan.ep"]


def test_refuses_too_few_microbatches_for_torch_1f1b() -> None:
    rule = refused(req(pp=8, dp=1, gbs=4))["training.global_batch_size"]
    assert "Schedule1F1B.__init__" in rule


def test_refuses_heterogeneous_offload_and_split_vocab() -> None:
    cluster = {"pools": [H100, {**H100, "name": "a100", "gpu": "A100-SXM-80GB"}]}
    het = {**req(pp=2, dp=4), "cluster": cluster}
    het["plan"] = {"pp": 2, "dp": 4, "stages": [{"pool": "h100", "layers": 16},
                                                {"pool": "a100", "layers": 16}]}
    assert "plan.stages" in refused(het)
    assert "plan.activation_offload" in refused(req(pp=2, dp=4, activation_offload=0.5))
    assert "plan.vocab_placement" in refused(req(pp=2, dp=4, vocab_placement="split"))


def test_the_rule_checker_catches_a_broken_config() -> None:
    """The oracle is not vacuous: a config edited to break a torchtitan rule fails it."""
    r = PLANS["llama3_70b_interleaved"]
    cfg = render("torchtitan", r)
    files = copy.deepcopy(cfg.files)
    name = "meshplan_torchtitan.toml"
    files[name] = files[name].replace("data_parallel_shard_degree = 2",
                                      "data_parallel_shard_degree = 3")
    content = cfg.content.replace("data_parallel_shard_degree 2", "data_parallel_shard_degree 3")
    broken = cfg.model_copy(update={"files": files, "content": content})
    assert any("_validate" in p for p in check_torchtitan(broken, r))


def test_zero0_without_data_parallelism_is_not_ddp() -> None:
    # dp 1: no data-parallel wrapper at all, so the DDP rule does not apply
    r = req(tp=2, pp=4, dp=1, zero_stage=0, sequence_parallel=True, gbs=16)
    cfg = render("torchtitan", r)
    par = toml_of(cfg)["parallelism"]
    assert (par["data_parallel_replicate_degree"], par["data_parallel_shard_degree"]) == (1, 1)
    assert check_torchtitan(cfg, r) == []
