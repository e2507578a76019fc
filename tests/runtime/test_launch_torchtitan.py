"""torchtitan emitter: every emitted config passes torchtitan's own rules (re-implemented in
framework_rules.check_torchtitan, each citing its file and function) and runs the plan it was
rendered from, for the current release (0.3, Python configs) and the TOML era (0.2); what
torchtitan cannot run is refused with the field and the rule. test_frameworks_real.py holds
the same configs to the installed torchtitan itself."""

from __future__ import annotations

import copy
import tomllib
from typing import Any

import pytest

from runtime.launch import LaunchConfig, LaunchError, render
from tests.runtime.framework_rules import check_torchtitan, titan_settings
from tests.runtime.plans import PLANS

H100 = {"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8, "nodes": 8}


def req(model: str = "llama3-8b", gbs: int = 64, seq: int = 4096, precision: str = "bf16",
        **plan: Any) -> dict[str, Any]:
    return {"model": {"preset": model},
            "training": {"global_batch_size": gbs, "seq_len": seq, "precision": precision},
            "cluster": {"pools": [H100]}, "plan": plan}


VERSIONS = ("0.3", "0.2")


def toml_of(cfg: LaunchConfig) -> dict[str, Any]:
    return tomllib.loads(cfg.files["meshplan_torchtitan.toml"])


def settings(cfg: LaunchConfig) -> dict[str, dict[str, Any]]:
    """The config's settings by section, from the TOML (0.2) or the command line (0.3)."""
    return titan_settings(cfg)[1]


def refused(request: dict[str, Any], version: str | None = None) -> dict[str, str]:
    with pytest.raises(LaunchError) as info:
        render("torchtitan", request, version=version)
    return {p.field: p.rule for p in info.value.problems}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", [n for n in PLANS if n != "llama3_8b_dp"] + ["llama3_8b_dp"])
def test_representative_plans_pass_torchtitan_rules(name: str, version: str) -> None:
    cfg = render("torchtitan", PLANS[name], version=version)
    assert titan_settings(cfg)[0] == version
    assert check_torchtitan(cfg, PLANS[name]) == []


def test_the_current_release_is_the_default_and_training_framework_version_selects() -> None:
    r = PLANS["llama3_8b_gpipe"]
    assert titan_settings(render("torchtitan", r))[0] == "0.3"
    old = {**r, "training": {**r["training"], "framework": "torchtitan",
                             "framework_version": "0.2"}}
    assert titan_settings(render("torchtitan", old))[0] == "0.2"
    assert titan_settings(render("torchtitan", old, version="0.3.0"))[0] == "0.3"


def test_unknown_release_names_training_framework_version_and_the_supported_ones() -> None:
    rule = refused(PLANS["llama3_8b_dp"], version="0.1")["training.framework_version"]
    assert "0.3" in rule and "0.2" in rule


def test_python_configs_pick_the_registered_config_and_end_with_the_ac_subcommand() -> None:
    cfg = render("torchtitan", PLANS["llama3_8b_gpipe"])
    words = cfg.content.replace("\\\n", " ").split()
    i = words.index("torchtitan.train")
    assert words[i + 1:i + 5] == ["--module", "llama3", "--config", "llama3_8b"]
    last = [w for w in words if w.startswith("activation_checkpoint:")]
    assert last == ["activation_checkpoint:none"]
    assert "--training.disable_cuda_graphs" in words  # pipeline parallelism (trainer.py)
    assert "--job.config_file" not in words and not cfg.files
    assert "--activation_checkpoint.mode" not in words


@pytest.mark.parametrize("version", VERSIONS)
def test_first_and_last_stage_less_layers_reproduce_an_uneven_split(version: str) -> None:
    # generate_llm_fqn_per_model_part(2, 32, 2, 0): 34 effective layers, 17 per stage, the
    # embedding counting 2 -> stages of 15 and 17 layers
    cfg = render("torchtitan", PLANS["llama3_8b_pp2_uneven"], version=version)
    par = settings(cfg)["parallelism"]
    assert par["pipeline_parallel_first_stage_less_layers"] == 2
    assert par["pipeline_parallel_last_stage_less_layers"] == 0
    assert "module_fqns_per_model_part" not in par


@pytest.mark.parametrize(("version", "head"), [("0.3", "lm_head"), ("0.2", "output")])
def test_split_the_generator_cannot_make_lists_each_stages_modules(version: str,
                                                                   head: str) -> None:
    cfg = render("torchtitan", PLANS["llama3_70b_interleaved"], version=version)
    parts = settings(cfg)["parallelism"]["module_fqns_per_model_part"]
    assert [sum(m.startswith("layers.") for m in p) for p in parts] == [9, 11, 11, 9, 9, 11,
                                                                         11, 9]
    assert parts[0][0] == "tok_embeddings" and parts[-1][-2:] == ["norm", head]
    assert check_torchtitan(cfg, PLANS["llama3_70b_interleaved"]) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_layers_per_stage_sets_a_stage_count_other_than_two_per_rank(version: str) -> None:
    # pipeline_llm: ceil((32 + 0 + 0) / 4) = 8 stages = 4 per rank on pp 2
    r = req(pp=2, dp=4, schedule="Interleaved1F1B", virtual_stages=4, gbs=64)
    cfg = render("torchtitan", r, version=version)
    par = settings(cfg)["parallelism"]
    assert par["pipeline_parallel_layers_per_stage"] == 4
    assert check_torchtitan(cfg, r) == []


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("schedule", ["ZBVZeroBubble", "DualPipeV", "InterleavedZeroBubble"])
def test_multi_stage_schedules(schedule: str, version: str) -> None:
    r = req(pp=4, dp=2, schedule=schedule, virtual_stages=2, gbs=64)
    cfg = render("torchtitan", r, version=version)
    assert settings(cfg)["parallelism"]["pipeline_parallel_schedule"] == schedule
    assert check_torchtitan(cfg, r) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_zero_stages_map_to_ddp_and_fsdp(version: str) -> None:
    par = settings(render("torchtitan", PLANS["llama3_8b_dp"], version=version))["parallelism"]
    assert (par["data_parallel_replicate_degree"], par["data_parallel_shard_degree"]) == (8, 1)
    par = settings(render("torchtitan", PLANS["llama3_8b_zero3"],
                          version=version))["parallelism"]
    assert (par["data_parallel_shard_degree"], par["fsdp_reshard_after_forward"]) == (16,
                                                                                     "always")
    cfg = render("torchtitan", req(dp=8, zero_stage=2, gbs=64), version=version)
    assert settings(cfg)["parallelism"]["fsdp_reshard_after_forward"] == "never"
    assert any("ZeRO-2" in n for n in cfg.notes)


def test_expert_parallel_plan_sets_expert_tensor_parallel_to_tp_in_the_toml_era() -> None:
    r = req("mixtral-8x7b", gbs=128, tp=2, dp=4, ep=4, sequence_parallel=True)
    cfg = render("torchtitan", r, version="0.2")
    par = toml_of(cfg)["parallelism"]
    assert (par["expert_parallel_degree"], par["expert_tensor_parallel_degree"]) == (4, 2)
    assert check_torchtitan(cfg, r) == []


def test_expert_parallelism_in_0_3_borrows_fsdp_and_tp_and_disables_cuda_graphs() -> None:
    r = req("mixtral-8x7b", gbs=128, tp=2, dp=4, ep=4, sequence_parallel=True)
    cfg = render("torchtitan", r)
    got = settings(cfg)
    assert got["parallelism"]["expert_parallel_degree"] == 4
    assert "expert_tensor_parallel_degree" not in got["parallelism"]
    assert got["training"]["disable_cuda_graphs"] is True
    assert check_torchtitan(cfg, r) == []


def test_fp8_uses_the_float8_converter_in_the_toml_era() -> None:
    r = req(dp=8, precision="fp8")
    cfg = render("torchtitan", r, version="0.2")
    assert toml_of(cfg)["model"]["converters"] == ["float8"]
    assert check_torchtitan(cfg, r) == []


def test_fp8_in_0_3_is_a_registered_config_or_a_placeholder_with_a_note() -> None:
    mx = render("torchtitan", req(dp=8, precision="fp8",
                                  **{"attention": "flash"}) | {
        "training": {"global_batch_size": 64, "seq_len": 4096, "precision": "fp8",
                     "fp8_recipe": "mxfp8"},
        "cluster": {"pools": [{**H100, "gpu": "B200-SXM-180GB"}]}})
    assert settings(mx)[""]["config"] == "llama3_8b_mxfp8"
    cfg = render("torchtitan", req(dp=8, precision="fp8"))
    assert settings(cfg)[""]["config"].startswith("REPLACE-llama3_8b")
    assert any("converters" in n for n in cfg.notes)


# ---- refusals: each names the field and the rule's source


@pytest.mark.parametrize(("version", "source"), [("0.3", "configs.py"),
                                                  ("0.2", "job_config.py")])
def test_refuses_fp16(version: str, source: str) -> None:
    assert source in refused(req(dp=8, precision="fp16"), version)["training.precision"]


def test_refuses_ddp_with_other_parallelism_in_the_toml_era() -> None:
    rule = refused(req(tp=2, dp=4, zero_stage=0), "0.2")["plan.zero_stage"]
    assert "DDP has not supported > 1D parallelism" in rule and "tp=2" in rule


def test_0_3_replicates_with_other_parallelism() -> None:
    r = req(tp=2, dp=4, zero_stage=0, sequence_parallel=True)
    cfg = render("torchtitan", r)
    assert settings(cfg)["parallelism"]["data_parallel_replicate_degree"] == 4
    assert check_torchtitan(cfg, r) == []


def test_refuses_one_stage_per_rank_with_a_multi_stage_schedule() -> None:
    rule = refused(req(pp=4, dp=2, schedule="InterleavedZeroBubble"))["plan.virtual_stages"]
    assert "pipeline_llm" in rule


def test_refuses_seq_len_not_divisible_by_tp_times_two_cp() -> None:
    rule = refused(req(tp=4, dp=2, seq=4100, sequence_parallel=True), "0.2")["training.seq_len"]
    assert "tp·2·cp = 8" in rule and "seq_len_divisor" in rule
    # 0.3 doubles cp only when cp > 1: tp 4 divides 4100
    render("torchtitan", req(tp=4, dp=2, seq=4100, sequence_parallel=True))
    rule = refused(req(tp=4, dp=2, seq=4098, sequence_parallel=True))["training.seq_len"]
    assert "= 4" in rule and "Trainer.__init__" in rule


@pytest.mark.parametrize("version", VERSIONS)
def test_refuses_expert_parallel_degree_torchtitan_cannot_borrow(version: str) -> None:
    # ep 4 divides dp·cp = 4 (meshplan's rule), but replicated data parallelism (zero_stage
    # 0) leaves dp_shard = 1: nothing for the experts to borrow
    r = req("mixtral-8x7b", gbs=64, seq=4096, dp=4, ep=4, zero_stage=0)
    assert "ParallelDims.build_mesh" in refused(r, version)["plan.ep"]


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
    cfg = render("torchtitan", r, version="0.2")
    files = copy.deepcopy(cfg.files)
    name = "meshplan_torchtitan.toml"
    files[name] = files[name].replace("data_parallel_shard_degree = 2",
                                      "data_parallel_shard_degree = 3")
    content = cfg.content.replace("data_parallel_shard_degree 2", "data_parallel_shard_degree 3")
    broken = cfg.model_copy(update={"files": files, "content": content})
    assert any("_validate" in p for p in check_torchtitan(broken, r))


@pytest.mark.parametrize("version", VERSIONS)
def test_zero0_without_data_parallelism_is_not_ddp(version: str) -> None:
    # dp 1: no data-parallel wrapper at all, so the DDP rule does not apply
    r = req(tp=2, pp=4, dp=1, zero_stage=0, sequence_parallel=True, gbs=16)
    cfg = render("torchtitan", r, version=version)
    par = settings(cfg)["parallelism"]
    assert (par["data_parallel_replicate_degree"], par["data_parallel_shard_degree"]) == (1, 1)
    assert check_torchtitan(cfg, r) == []


@pytest.mark.parametrize("version", VERSIONS)
def test_refuses_partial_recompute(version: str) -> None:
    """Checks: torchtitan cannot recompute only the first N layers of a stage (0.3: FullAC
    wraps every block; 0.2: selective_ac_option N is every N-th block): refused naming
    plan.recompute_num_layers, also for constraints.framework (refusals)."""
    from runtime.launch import refusals

    r = req(dp=8, recompute="full", recompute_num_layers=4)
    rule = refused(r, version)["plan.recompute_num_layers"]
    assert "first 4 layers" in rule
    assert ("FullAC" in rule) if version == "0.3" else ("_layer_sac_count" in rule)
    assert any(p.startswith("plan.recompute_num_layers") for p in refusals("torchtitan", r))
    render("torchtitan", req(dp=8, recompute="full"), version=version)  # plain full is fine


@pytest.mark.parametrize("version", VERSIONS)
def test_compile_is_on_exactly_where_the_estimate_costs_compiled_blocks(version: str) -> None:
    """The estimate costs torchtitan's blocks as compiled only where the stack compiles
    (costmodel.stacks.stack.StackProfile.compiled: async TP); the config enables
    compile.enable there and nowhere else, and says so where it stays off."""
    from costmodel.stacks.stack import get_stack

    stack = get_stack("torchtitan")
    for tp, overlap, asked in ((2, True, None), (2, False, None), (1, True, None),
                               (1, False, True), (2, True, True), (1, False, False)):
        request = req(tp=tp, dp=64 // tp, tp_comm_overlap=overlap, sequence_parallel=tp > 1,
                      torch_compile=asked)
        request["training"]["framework"] = "torchtitan"
        cfg = render("torchtitan", request, version=version)
        on = settings(cfg).get("compile", {}).get("enable", False)
        assert on is bool(stack.compiled(overlap, tp, asked)), (tp, overlap, asked)
        assert on is (asked if asked is not None else (tp > 1 and overlap))
        assert any("torch.compile stays off" in n for n in cfg.notes) is not on


def test_torch_compile_off_with_async_tp_and_on_elsewhere_are_refused_by_name() -> None:
    """Async TP runs only compiled; the other frameworks' configs and the runtime worker have
    no compiled blocks, so plan.torch_compile true is refused there, naming the field."""
    off = req(tp=2, dp=32, tp_comm_overlap=True, sequence_parallel=True, torch_compile=False)
    assert "plan.torch_compile" in refused(off)
    on = req(tp=2, dp=32, sequence_parallel=True, torch_compile=True)
    for fmt in ("megatron", "deepspeed", "runtime", "torchrun"):
        with pytest.raises(LaunchError) as info:
            render(fmt, on)
        assert "plan.torch_compile" in {p.field for p in info.value.problems}, fmt
    render("torchtitan", on)
