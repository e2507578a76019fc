"""Import of Hugging Face ``config.json`` files (ModelSpec.from_hf_config) and the three model
input forms of the contract (ARCHITECTURE.md: {"preset"} | {"hf_config"} | fields).

Expected values are read from the fixtures in tests/fixtures/hf_configs (provenance in
SOURCES.md there) and agree with the papers named per case: Llama 3 (Dubey et al. 2024,
Table 3), Mistral 7B (Jiang et al. 2023, Table 1), Mixtral (Jiang et al. 2024, Table 1),
Qwen2 (Yang et al. 2024, Table 1), DeepSeek-V3 (arXiv:2412.19437, §4.2), GPT-2 (HF
openai-community/gpt2 config: n_layer, n_embd, n_head, n_positions; n_inner null = 4·n_embd).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from costmodel.errors import SpecError
from costmodel.specs.model import ModelSpec
from costmodel.specs.presets import get_preset
from costmodel.specs.request import EstimateRequest, parse

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hf_configs"


def _cfg(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


_LLAMA3_8B_FIELDS = {
    # Dubey et al. 2024, Table 3 (8B), and the HF config.json of meta-llama/Meta-Llama-3-8B
    "name": "llama3-8b", "num_hidden_layers": 32, "hidden_size": 4096,
    "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
    "vocab_size": 128256, "hidden_act": "silu", "tie_word_embeddings": False,
    "max_position_embeddings": 8192,
}
_REQUEST: dict[str, Any] = {
    "training": {"global_batch_size": 64, "seq_len": 8192},
    "cluster": {"pools": [{"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                           "nodes": 1}]},
    "plan": {"tp": 1, "pp": 1, "dp": 8},
}


def _parse(body: dict[str, Any]) -> EstimateRequest:
    req: EstimateRequest = parse(EstimateRequest, body)
    return req


# layers, hidden, heads, kv heads, ffn, vocab, tied, gated
DENSE_SHAPES: dict[str, tuple[int, int, int, int, int, int, bool, bool]] = {
    "gpt2": (12, 768, 12, 12, 3072, 50257, True, False),
    "llama3-8b": (32, 4096, 32, 8, 14336, 128256, False, True),
    "llama3-70b": (80, 8192, 64, 8, 28672, 128256, False, True),
    "mistral-7b": (32, 4096, 32, 8, 14336, 32000, False, True),
    "qwen2-7b": (28, 3584, 28, 4, 18944, 152064, False, True),
    "mixtral-8x7b": (32, 4096, 32, 8, 14336, 32000, False, True),
    "deepseek-v3": (61, 7168, 128, 128, 18432, 129280, False, True),
}


def test_every_fixture_is_covered() -> None:
    assert {p.stem for p in FIXTURES.glob("*.json")} == set(DENSE_SHAPES)


@pytest.mark.parametrize("name", sorted(DENSE_SHAPES))
def test_fixture_shape(name: str) -> None:
    m = ModelSpec.from_hf_config(_cfg(name))
    layers, hidden, heads, kv, ffn, vocab, tied, gated = DENSE_SHAPES[name]
    assert m.num_hidden_layers == layers
    assert m.hidden_size == hidden
    assert m.num_attention_heads == heads
    assert m.kv_heads == kv
    assert m.intermediate_size == ffn
    assert m.vocab_size == vocab
    assert m.tie_word_embeddings is tied
    assert m.gated_mlp is gated


@pytest.mark.parametrize("name", ["gpt2", "llama3-8b", "llama3-70b", "mistral-7b", "qwen2-7b"])
def test_dense_fixtures_are_dense(name: str) -> None:
    m = ModelSpec.from_hf_config(_cfg(name))
    assert not m.is_moe
    assert m.num_moe_layers == 0
    assert m.num_active_params() == m.num_params()


def test_gpt2_specifics() -> None:
    """GPT-2 (HF GPT2Model): learned positions (n_positions 1024), LayerNorm, biases on all
    linear layers, gelu_new (not gated), attn_pdrop = resid_pdrop = 0.1, head_dim 64."""
    m = ModelSpec.from_hf_config(_cfg("gpt2"))
    assert m.position_embedding == "learned"
    assert m.max_position_embeddings == 1024
    assert m.norm == "layernorm"
    assert m.attention_bias and m.mlp_bias
    assert m.hidden_act == "gelu_new"
    assert m.attention_dropout == 0.1 and m.hidden_dropout == 0.1
    assert m.head_size == 64


def test_llama_specifics() -> None:
    """Llama 3: RoPE, RMSNorm, no biases, no dropout, head_dim 8192/64 = 128."""
    m = ModelSpec.from_hf_config(_cfg("llama3-70b"))
    assert m.position_embedding == "rope"
    assert m.norm == "rmsnorm"
    assert not m.attention_bias and not m.mlp_bias
    assert m.attention_dropout == 0.0 and m.hidden_dropout == 0.0
    assert m.head_size == 128
    assert m.max_position_embeddings == 8192


def test_qwen2_has_qkv_bias_but_no_output_bias() -> None:
    """HF Qwen2Attention: q_proj, k_proj, v_proj with bias=True, o_proj bias=False. Qwen2-7B:
    head_dim 3584/28 = 128; q+k+v bias = 3584 + 2·4·128 = 4608 per layer. The bias is
    hard-wired in transformers' modeling_qwen2.py (5.25.0), so a config's attention_bias
    does not remove it; the same shapes read as Llama have none."""
    m = ModelSpec.from_hf_config(_cfg("qwen2-7b"))
    assert m.attention_bias is True
    assert m.attention_out_bias is False
    assert ModelSpec.from_hf_config({**_cfg("qwen2-7b"), "attention_bias": False}) == m
    no_bias = ModelSpec.from_hf_config({**_cfg("qwen2-7b"), "model_type": "llama"})
    assert m.attention_params() - no_bias.attention_params() == 3584 + 2 * 4 * 128


def test_mixtral_moe_fields() -> None:
    """Mixtral-8x7B config: num_local_experts 8, num_experts_per_tok 2, and its
    intermediate_size 14336 is the size of one expert (Jiang et al. 2024, Table 1); every
    layer is MoE."""
    m = ModelSpec.from_hf_config(_cfg("mixtral-8x7b"))
    assert m.is_moe
    assert m.num_local_experts == 8
    assert m.num_experts_per_tok == 2
    assert m.expert_ffn == 14336
    assert m.n_shared_experts == 0
    assert m.num_moe_layers == 32


def test_deepseek_v3_moe_and_mla_fields() -> None:
    """DeepSeek-V3 config: n_routed_experts 256 (-> num_local_experts), 8 per token,
    n_shared_experts 1, moe_intermediate_size 2048, first_k_dense_replace 3 (so 58 MoE layers
    of 61), moe_layer_freq 1, MLA q_lora_rank 1536, kv_lora_rank 512, qk_nope 128,
    qk_rope 64, v_head_dim 128."""
    m = ModelSpec.from_hf_config(_cfg("deepseek-v3"))
    assert m.num_local_experts == 256
    assert m.num_experts_per_tok == 8
    assert m.n_shared_experts == 1
    assert m.expert_ffn == 2048
    assert m.first_k_dense_replace == 3
    assert m.moe_layer_freq == 1
    assert m.num_moe_layers == 58 and m.num_dense_layers == 3
    assert m.moe_layer_mask[:4] == (False, False, False, True)
    assert m.uses_mla
    assert (m.q_lora_rank, m.kv_lora_rank) == (1536, 512)
    assert (m.qk_nope_head_dim, m.qk_rope_head_dim, m.v_head_dim) == (128, 64, 128)
    assert m.q_width == 128 * (128 + 64)
    assert m.v_width == 128 * 128


def test_llama3_8b_fixture_equals_preset() -> None:
    """The llama3-8b preset (Dubey et al. 2024 Table 3) and the HF config describe the same
    network: 8,030,261,248 parameters."""
    hf = ModelSpec.from_hf_config(_cfg("llama3-8b"))
    preset = get_preset("llama3-8b")
    assert hf.num_params() == preset.num_params() == 8_030_261_248
    assert hf.model_dump(exclude={"name"}) == preset.model_dump(exclude={"name"})


@pytest.mark.parametrize("name", ["llama3-70b", "mixtral-8x7b", "deepseek-v3", "mistral-7b"])
def test_fixtures_equal_presets_in_counts(name: str) -> None:
    hf = ModelSpec.from_hf_config(_cfg(name))
    preset = get_preset(name)
    assert hf.num_params() == preset.num_params()
    assert hf.num_active_params() == preset.num_active_params()


def test_missing_hidden_size_names_the_field() -> None:
    cfg = _cfg("llama3-8b")
    del cfg["hidden_size"]
    with pytest.raises(SpecError) as exc:
        ModelSpec.from_hf_config(cfg)
    assert exc.value.field == "model.hf_config.hidden_size"
    assert "missing" in exc.value.rule


def test_missing_fields_are_reported_together() -> None:
    cfg = _cfg("llama3-8b")
    del cfg["hidden_size"]
    del cfg["vocab_size"]
    with pytest.raises(SpecError) as exc:
        ModelSpec.from_hf_config(cfg)
    assert [p.field for p in exc.value.problems] == [
        "model.hf_config.hidden_size", "model.hf_config.vocab_size"]


def test_gpt2_missing_n_embd_names_hidden_size() -> None:
    """GPT-2 names its width n_embd; without it the ffn (4·n_embd) is also unknown."""
    cfg = _cfg("gpt2")
    del cfg["n_embd"]
    with pytest.raises(SpecError) as exc:
        ModelSpec.from_hf_config(cfg)
    fields = [p.field for p in exc.value.problems]
    assert "model.hf_config.hidden_size" in fields


def test_hf_config_must_be_an_object() -> None:
    with pytest.raises(SpecError) as exc:
        ModelSpec.from_hf_config([1, 2])  # type: ignore[arg-type]
    assert exc.value.field == "model.hf_config"


def test_missing_hidden_size_through_the_request_names_the_field() -> None:
    cfg = _cfg("llama3-8b")
    del cfg["hidden_size"]
    body = {**_REQUEST, "model": {"hf_config": cfg}}
    with pytest.raises(SpecError) as exc:
        _parse(body)
    assert exc.value.field == "model.hf_config.hidden_size"


def test_three_model_forms_resolve_to_the_same_spec() -> None:
    """ARCHITECTURE.md: model is one of {"preset": ...} | {"hf_config": {...}} | fields."""
    by_preset = _parse({**_REQUEST, "model": {"preset": "llama3-8b"}}).model
    by_hf = _parse({**_REQUEST, "model": {"hf_config": _cfg("llama3-8b"),
                                          "name": "llama3-8b"}}).model
    by_fields = _parse({**_REQUEST, "model": dict(_LLAMA3_8B_FIELDS)}).model
    assert by_preset == by_hf == by_fields
    assert by_preset.num_params() == by_hf.num_params() == by_fields.num_params()
    assert by_fields.num_params() == 8_030_261_248


def test_preset_name_is_case_insensitive_and_exclusive() -> None:
    assert _parse({**_REQUEST, "model": {"preset": "Llama3-8B"}}).model == get_preset("llama3-8b")
    with pytest.raises(SpecError) as exc:
        _parse({**_REQUEST, "model": {"preset": "llama3-8b", "hidden_size": 1}})
    assert exc.value.field == "model"
    assert "no other fields" in exc.value.rule
