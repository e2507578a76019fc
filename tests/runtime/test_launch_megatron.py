"""Megatron-LM emitter: every emitted argument list passes Megatron-LM's own rules
(re-implemented in framework_rules.check_megatron, each citing its file and function) and
builds the plan's layer split; what Megatron-LM cannot run is refused with the field and rule."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.launch import LaunchError, render
from tests.runtime.framework_rules import check_megatron, megatron_args, parse_script
from tests.runtime.plans import PLANS

H100 = {"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8, "nodes": 8}


def req(model: str | dict[str, Any] = "llama3-8b", gbs: int = 64, seq: int = 4096,
        precision: str = "bf16", **plan: Any) -> dict[str, Any]:
    spec = {"preset": model} if isinstance(model, str) else model
    return {"model": spec,
            "training": {"global_batch_size": gbs, "seq_len": seq, "precision": precision},
            "cluster": {"pools": [H100]}, "plan": plan}


def args_of(request: dict[str, Any]) -> dict[str, Any]:
    cfg = render("megatron", request)
    assert check_megatron(cfg, request) == []
    return megatron_args(parse_script(cfg.content).program)


def refused(request: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(LaunchError) as info:
        render("megatron", request)
    return {p.field: p.rule for p in info.value.problems}


@pytest.mark.parametrize("name", [n for n in PLANS if n != "llama3_8b_zero3"])
def test_representative_plans_pass_megatron_rules(name: str) -> None:
    cfg = render("megatron", PLANS[name])
    assert check_megatron(cfg, PLANS[name]) == []


def test_uneven_end_ranks_with_interleaving() -> None:
    a = args_of(PLANS["llama3_70b_interleaved"])
    assert (a["--decoder-first-pipeline-num-layers"], a["--decoder-last-pipeline-num-layers"],
            a["--num-virtual-stages-per-pipeline-rank"]) == ("18", "18", "2")
    assert "--num-layers-per-virtual-pipeline-stage" not in a  # arguments.py: not with uneven


def test_even_interleaving_uses_layers_per_virtual_stage() -> None:
    a = args_of(req("llama3-70b", gbs=64, tp=8, pp=4, dp=2, schedule="Interleaved1F1B",
                    virtual_stages=4, sequence_parallel=True))
    assert a["--num-layers-per-virtual-pipeline-stage"] == "5"


def test_only_the_last_stage_uneven() -> None:
    a = args_of(req(pp=4, dp=2, layers_per_stage=[9, 9, 9, 5]))
    assert a["--decoder-last-pipeline-num-layers"] == "5"
    assert "--decoder-first-pipeline-num-layers" not in a


def test_moe_and_mla_flags_of_deepseek_v3() -> None:
    a = args_of(req("deepseek-v3", gbs=64, tp=8, dp=8, ep=8, sequence_parallel=True,
                    zero_stage=1))
    assert a["--moe-layer-freq"] == "([0]*3+[1]*58)"
    assert a["--moe-shared-expert-intermediate-size"] == "2048"
    assert (a["--q-lora-rank"], a["--kv-lora-rank"], a["--qk-head-dim"],
            a["--qk-pos-emb-head-dim"], a["--v-head-dim"]) == ("1536", "512", "128", "64", "128")
    assert a["--multi-latent-attention"] and a["--moe-router-enable-expert-bias"]


def test_gpt_style_model_flags() -> None:
    a = args_of(req("megatron-gpt-1.7b", seq=2048, gbs=64, tp=2, dp=4))
    assert a["--position-embedding-type"] == "learned_absolute"
    assert a["--normalization"] == "LayerNorm"
    assert "--disable-bias-linear" not in a and "--swiglu" not in a
    assert "--untie-embeddings-and-output-weights" not in a
    assert a["--attention-dropout"] == "0.1"


def test_precision_and_recompute_flags() -> None:
    a = args_of(req(dp=8, precision="fp8", recompute="full"))
    assert a["--fp8-format"] == "hybrid" and a["--bf16"]
    assert (a["--recompute-method"], a["--recompute-num-layers"]) == ("uniform", "1")
    a = args_of(req(dp=8, precision="fp16", zero_stage=0))
    assert a["--fp16"] and "--bf16" not in a and "--use-distributed-optimizer" not in a
    assert "--overlap-param-gather" not in a  # arguments.py: needs the distributed optimizer


def test_rope_model_raises_max_position_embeddings_to_seq_len() -> None:
    cfg = render("megatron", req(dp=8, seq=16384, gbs=64))
    assert megatron_args(parse_script(cfg.content).program)["--max-position-embeddings"] == \
        "16384"
    assert any("max_position_embeddings" in n for n in cfg.notes)


# ---- refusals


def test_refuses_uneven_middle_stages() -> None:
    rule = refused(req("llama3-70b", tp=8, pp=4, dp=2, sequence_parallel=True,
                       layers_per_stage=[20, 18, 22, 20]))["plan.layers_per_stage"]
    assert rule == ("Megatron-LM can make only the first and last pipeline stages uneven "
                    "(arguments.py: --decoder-first-pipeline-num-layers / "
                    "--decoder-last-pipeline-num-layers); this plan's pipeline stages have "
                    "[20, 18, 22, 20] layers")


def test_refuses_unequal_virtual_stages_of_a_rank() -> None:
    rule = refused(req(pp=2, dp=4, schedule="Interleaved1F1B", virtual_stages=2,
                       layers_per_stage=[7, 9, 9, 7]))["plan.layers_per_stage"]
    assert "get_num_layers_to_build" in rule


@pytest.mark.parametrize("schedule,vp", [("InterleavedZeroBubble", 2), ("ZBVZeroBubble", 2),
                                         ("DualPipeV", 2), ("InterleavedZeroBubble", 1)])
def test_refuses_schedules_megatron_lacks(schedule: str, vp: int) -> None:
    rule = refused(req(pp=4, dp=2, schedule=schedule, virtual_stages=vp))["plan.schedule"]
    assert f"it has no {schedule}" in rule


def test_refuses_interleaving_with_microbatches_not_divisible_by_pp() -> None:
    rule = refused(req(pp=4, dp=2, gbs=12, schedule="Interleaved1F1B",
                       virtual_stages=2))["training.global_batch_size"]
    assert "forward_backward_pipelining_with_interleaving" in rule


def test_refuses_zero3_and_explains_zero2() -> None:
    assert "Megatron-FSDP" in refused(PLANS["llama3_8b_zero3"])["plan.zero_stage"]
    cfg = render("megatron", req(dp=8, zero_stage=2))
    assert any("ZeRO-2" in n for n in cfg.notes)


def test_refuses_kv_heads_not_divisible_by_tp() -> None:
    # meshplan accepts tp 16 over 8 KV heads (replicated); Megatron-LM does not
    rule = refused(req(tp=16, dp=1, sequence_parallel=True))["plan.tp"]
    assert "num_query_groups (8)" in rule and "TransformerConfig.__post_init__" in rule


def test_refuses_moe_with_tp_and_no_sequence_parallel() -> None:
    rule = refused(req("mixtral-8x7b", tp=2, dp=4, ep=4))["plan.sequence_parallel"]
    assert "MoE" in rule


def test_refuses_tp_comm_overlap_without_sequence_parallel() -> None:
    assert "--tp-comm-overlap needs --sequence-parallel" in refused(
        req(tp=2, dp=4, tp_comm_overlap=True))["plan.tp_comm_overlap"]


def test_refuses_learned_positions_shorter_than_seq_len() -> None:
    assert "max_position_embeddings" in refused(
        req("megatron-gpt-1.7b", seq=4096, dp=8))["training.seq_len"]


def test_refuses_an_activation_megatron_lacks() -> None:
    model = {"name": "geglu-model", "num_hidden_layers": 8, "hidden_size": 1024,
             "num_attention_heads": 8, "intermediate_size": 4096, "vocab_size": 32000,
             "hidden_act": "geglu"}
    assert "model.hidden_act" in refused(req(model, dp=8))


def test_the_rule_checker_catches_a_broken_config() -> None:
    """The oracle is not vacuous: an argument list edited to break a rule fails it."""
    r = PLANS["llama3_70b_interleaved"]
    cfg = render("megatron", r)
    broken = cfg.model_copy(update={"content": cfg.content.replace(
        "--decoder-first-pipeline-num-layers 18", "--decoder-first-pipeline-num-layers 17")})
    assert any("get_num_layers_to_build" in p for p in check_megatron(broken, r))
    broken = cfg.model_copy(update={"content": cfg.content.replace(
        "  --use-distributed-optimizer \\\n", "")})
    assert any("--overlap-param-gather" in p for p in check_megatron(broken, r))


def test_refuses_sequence_parallel_over_a_sequence_tp_does_not_divide() -> None:
    # seq 4100 / cp 2 = 2050 tokens per rank, not divisible by tp 4
    rule = refused(req(tp=4, cp=2, dp=1, seq=4100, sequence_parallel=True))["training.seq_len"]
    assert "_split_along_first_dim" in rule


def _hf(name: str) -> dict[str, Any]:
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "costmodel" / "hf_configs" / f"{name}.json"
    return {"hf_config": json.loads(path.read_text())}


def test_block_features_megatron_does_not_render_are_refused_by_name() -> None:
    """A Hugging Face import's block features that the emitter has no flag for are refused
    with the field, not launched as a different model: Gemma-2's four norms and its
    sliding-window layers at a sequence longer than the window, OLMo-2's full-width q/k
    norm, gpt-oss's attention sinks."""
    gemma = refused(req(_hf("gemma-2-9b"), seq=8192, tp=8, dp=8))
    assert "two norms" in gemma["model.norms_per_layer"]
    assert "sliding_attention" in gemma["model.layer_types"]
    assert "whole projection width" in refused(req(_hf("olmo-2-7b"), tp=8, dp=8))["model.qk_norm"]
    assert "model.attention_sinks" in refused(req(_hf("gpt-oss-20b"), tp=8, dp=8))


def test_a_window_no_shorter_than_the_sequence_is_full_attention() -> None:
    """Phi-3-mini's 2,047-key window masks nothing at 1,024 tokens (it renders) but does at
    4,096 (refused on model.sliding_window); Qwen3's per-head q/k norm is --qk-layernorm."""
    assert "--num-layers" in args_of(req(_hf("phi-3-mini-4k"), seq=1024, dp=64))
    assert "model.sliding_window" in refused(req(_hf("phi-3-mini-4k"), seq=4096, dp=64))
    assert "--qk-layernorm" in args_of(req(_hf("qwen3-8b"), tp=8, dp=8))


@pytest.mark.parametrize("plan,want", [
    ({"pp": 4, "dp": 2, "schedule": "1F1B", "recompute_num_layers": 3}, ("block", "3")),
    # interleaved: 8 layers per rank, 4 per chunk; N counts per chunk (one TransformerBlock)
    ({"pp": 4, "dp": 2, "schedule": "Interleaved1F1B", "virtual_stages": 2,
      "recompute_num_layers": 2}, ("block", "2")),
    # N = the largest stage's layers is every layer: uniform, one layer per unit
    ({"pp": 4, "dp": 2, "schedule": "1F1B", "recompute_num_layers": 8}, ("uniform", "1")),
    ({"dp": 8, "recompute_num_layers": 5}, ("block", "5")),
])
def test_partial_recompute_is_the_block_method(plan: dict[str, Any],
                                               want: tuple[str, str]) -> None:
    """Checks: recompute_num_layers N is --recompute-method block --recompute-num-layers N
    (core/recompute.py checkpointed_forward: layer_idx < N of each chunk), and the arguments
    pass Megatron's rules and the plan check (framework_rules.check_megatron)."""
    a = args_of(req(recompute="full", **plan))
    assert a["--recompute-granularity"] == "full"
    assert (a["--recompute-method"], a["--recompute-num-layers"]) == want
