"""The rules of costmodel/specs/hf.py, each against its transformers 5.25.0 source (named per
test) and, where a count is involved, the count transformers gives for the fixture
(tests/costmodel/hf_configs, checked by test_hf_transformers.py when transformers is
installed; the integers here are that check's results, so these tests run without it).

Sliding windows: a query at 1-based position p keeps keys k with ``q − k < w``
(``masking_utils.sliding_window_overlay``), i.e. ``min(p, w)`` keys; chunked attention
(Llama 4) keeps the keys of its own ``attention_chunk_size`` block, ``((p − 1) mod C) + 1``.
The brute-force counts below enumerate those masks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costmodel import estimate
from costmodel.errors import SpecError
from costmodel.flops import attention_flops_per_token, model_flops_per_token
from costmodel.layer_cost import Shard, block_cost
from costmodel.memory import block_activation_bytes
from costmodel.ops import Device
from costmodel.profile import default_profile
from costmodel.specs.model import ModelSpec
from costmodel.specs.presets import get_preset
from costmodel.specs.request import EstimateRequest, parse

HF = Path(__file__).resolve().parent / "hf_configs"
OLD = Path(__file__).resolve().parents[1] / "fixtures" / "hf_configs"


def _cfg(name: str) -> dict[str, Any]:
    path = HF / f"{name}.json"
    return json.loads((path if path.exists() else OLD / f"{name}.json").read_text())


def _spec(name: str) -> ModelSpec:
    return ModelSpec.from_hf_config(_cfg(name))


def _refused(cfg: Any) -> str:
    with pytest.raises(SpecError) as exc:
        ModelSpec.from_hf_config(cfg)
    return exc.value.field


# ------------------------------------------------------------------ parameter rules
def test_gemma2_9b_gated_mlp_and_four_norms() -> None:
    """Gemma2MLP has gate/up/down (GeGLU, gelu_pytorch_tanh); Gemma2DecoderLayer has input,
    post_attention, pre_feedforward and post_feedforward RMSNorms. Read as an ungated MLP
    with two norms (the old reading) the model came out 23 % small."""
    m = _spec("gemma-2-9b")
    assert m.gated_mlp and m.hidden_act == "gelu_pytorch_tanh" and m.norms_per_layer == 4
    assert m.head_size == 256 and m.tie_word_embeddings
    assert m.num_params() == 9_241_705_984
    old = m.model_copy(update={"mlp_gated": None, "norms_per_layer": 2})
    assert 1 - old.num_params() / m.num_params() == pytest.approx(0.234, abs=0.001)


def test_gemma1_legacy_gelu_is_tanh_and_gated() -> None:
    m = _spec("gemma-7b")  # GemmaConfig turns hidden_act "gelu" into gelu_pytorch_tanh
    assert m.hidden_act == "gelu_pytorch_tanh" and m.gated_mlp and m.norms_per_layer == 2
    assert m.num_params() == 8_537_680_896


def test_llama4_scout_text_config_shared_expert() -> None:
    """Llama4TextMoe = 16 experts of intermediate_size 8192 + router + shared_expert
    (Llama4TextMLP of intermediate_size); every layer MoE (interleave_moe_layer_step 1).
    Without the shared expert the count is 5.6 % low."""
    m = _spec("llama4-scout")
    assert m.notes and "text model" in m.notes[0]
    assert m.num_moe_layers == 48 and m.n_shared_experts == 1 and m.expert_ffn == 8192
    assert m.num_params() == 107_769_861_120
    no_shared = m.model_copy(update={"n_shared_experts": 0})
    assert 1 - no_shared.num_params() / m.num_params() == pytest.approx(0.056, abs=0.001)
    alone = ModelSpec.from_hf_config(_cfg("llama4-scout")["text_config"])
    assert alone.num_params() == m.num_params() and not alone.notes


def test_llama4_maverick_interleaves_moe_layers() -> None:
    """configuration_llama4.py: moe_layers = range(step − 1, L, step): step 2 → odd layers
    MoE (128 experts), even layers dense Llama4TextMLP(intermediate_size_mlp 16384)."""
    m = _spec("llama4-maverick")
    assert m.moe_layers == tuple(range(1, 48, 2))
    assert m.moe_layer_mask[:4] == (False, True, False, True)
    assert m.intermediate_size == 16384 and m.expert_ffn == 8192
    assert m.num_params() == 400_711_848_960


def test_qwen_moe_layer_rule() -> None:
    """Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer: MoE where layer_idx not in
    mlp_only_layers and (layer_idx + 1) % decoder_sparse_step == 0 — with step 2 the odd
    layers, not the even ones of DeepSeek's rule."""
    cfg = {**_cfg("qwen3-30b-a3b"), "decoder_sparse_step": 2, "mlp_only_layers": [3]}
    m = ModelSpec.from_hf_config(cfg)
    expected = tuple(i for i in range(48) if (i + 1) % 2 == 0 and i != 3)
    assert m.moe_layers == expected
    assert m.moe_layer_mask[:5] == (False, True, False, False, False)
    assert _spec("qwen3-30b-a3b").moe_layers is None  # all MoE: the default rule


def test_deepseek_first_dense_layers() -> None:
    m = _spec("deepseek-v2-lite")  # first_k_dense_replace 1, q_lora_rank null
    assert m.moe_layer_mask[:2] == (False, True) and m.num_moe_layers == 26
    assert m.q_lora_rank is None and m.n_shared_experts == 2
    assert m.num_params() == 15_706_484_224


def test_qk_norms_sinks_biases() -> None:
    q3, olmo, oss = _spec("qwen3-8b"), _spec("olmo-2-7b"), _spec("gpt-oss-20b")
    no = {"qk_norm": "none"}
    # Qwen3Attention: q_norm, k_norm = RMSNorm(head_dim)
    assert q3.attention_params() - q3.model_copy(update=no).attention_params() == 2 * 128
    # Olmo2Attention: RMSNorm(32·128) + RMSNorm(32·128)
    assert olmo.attention_params() - olmo.model_copy(update=no).attention_params() == 8192
    # GptOssAttention: q, k, v, o biases and one sink per head; experts and router biased
    assert oss.attention_sinks and oss.attention_bias and oss.mlp_bias and oss.router_bias
    assert oss.num_params() == 20_914_757_184
    assert any("quantization_config" in n for n in oss.notes)


def test_tied_embeddings() -> None:
    tied, untied = _spec("qwen2.5-0.5b"), _spec("qwen2.5-72b")
    assert tied.tie_word_embeddings and not untied.tie_word_embeddings
    assert tied.num_params() == 494_032_768


# ------------------------------------------------------------------ attention patterns
def test_layer_types_per_family() -> None:
    g2, g3, oss, l4 = (_spec(n) for n in ("gemma-2-9b", "gemma-3-1b", "gpt-oss-20b",
                                          "llama4-scout"))
    # Gemma2Config / GptOssConfig: sliding where (i + 1) % 2, i.e. even layers
    assert [g2.layer_type(i) for i in range(3)] == [
        "sliding_attention", "full_attention", "sliding_attention"]
    assert oss.layer_types == ("sliding_attention", "full_attention") * 12
    # Gemma3TextConfig: sliding_window_pattern 6 → five local layers, then one global
    assert [g3.layer_type(i) for i in range(6)] == ["sliding_attention"] * 5 + ["full_attention"]
    assert g3.sliding_window == 512
    # Llama4TextConfig: chunked (RoPE) layers, every 4th global NoPE layer
    assert [l4.layer_type(i) for i in range(4)] == ["chunked_attention"] * 3 + [
        "full_attention"]
    assert l4.attention_chunk_size == 8192
    # MistralAttention / Phi3: the window in every layer
    assert _spec("mistral-7b").layer_type(31) == "sliding_attention"
    assert _spec("phi-3-mini-4k").sliding_window == 2047
    # Qwen2/3: sliding_window only with use_sliding_window (false in the published files)
    assert _spec("qwen2.5-72b").sliding_window is None
    assert _spec("qwen2-7b").layer_types is None


@settings(max_examples=60, deadline=None)
@given(s=st.integers(1, 300), w=st.integers(1, 300))
def test_attended_keys_equal_the_masks(s: int, w: int) -> None:
    base = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                intermediate_size=128, vocab_size=10)
    q = np.arange(s)[:, None]
    k = np.arange(s)[None, :]
    causal = k <= q
    slide = ModelSpec(**base, sliding_window=w)
    chunk = ModelSpec(**base, attention_chunk_size=w,
                      layer_types=("chunked_attention", "full_attention"))
    assert slide.attended_keys(0, s) == int((causal & (q - k < w)).sum())
    assert chunk.attended_keys(0, s) == int((causal & (q // w == k // w)).sum())
    assert chunk.attended_keys(1, s) == int(causal.sum())


def test_sliding_window_in_model_flops() -> None:
    """Mistral-7B at 32k: every layer attends min(p, 4096) keys; the score term shrinks by
    that fraction, the projections and MLP not at all. Gemma-2: half the layers."""
    s = 32768
    m = _spec("mistral-7b")
    full = m.model_copy(update={"sliding_window": None})
    frac = (4096 * 4097 // 2 + (s - 4096) * 4096) / (s * (s + 1) // 2)
    assert m.attention_fraction(s) == pytest.approx(frac)
    a = m.num_attention_heads
    scores = 2.0 * s * a * (m.q_width / a + m.v_width / a)
    saved = 3.0 * m.num_hidden_layers * scores * (1 - frac)
    assert model_flops_per_token(full, s) - model_flops_per_token(m, s) == pytest.approx(saved)
    g2 = _spec("gemma-2-9b")
    g2_frac = g2.attention_fraction(8192)
    assert g2_frac == pytest.approx((1 + (4096 * 4097 // 2 + 4096 * 4096) / (8192 * 8193 / 2)) / 2)
    assert attention_flops_per_token(g2, 4096) == attention_flops_per_token(
        g2.model_copy(update={"layer_types": None, "sliding_window": None}), 4096)


def _shard(flash: bool) -> Shard:
    return Shard.of(32768, 8, b=1.0, tp=1.0, cp=1.0, ep=1.0, sp=False, rc=0, flash=flash,
                    tp_overlap=False)


def _device() -> Device:
    req: EstimateRequest = parse(EstimateRequest, {
        "model": {"preset": "llama3-8b"}, "training": {"global_batch_size": 8, "seq_len": 4096},
        "cluster": {"pools": [{"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                               "nodes": 1}]}, "plan": {"tp": 1, "pp": 1, "dp": 8}})
    return Device.from_pool(req.cluster.pool("h100"), "bf16", default_profile())


def test_sliding_window_in_block_time_and_not_in_memory() -> None:
    """Flash kernels skip the masked blocks (executed FLOPs and time fall); the unfused path
    computes every score; activations are those of a full layer (memory.py docstring)."""
    m = _spec("mistral-7b")
    full = m.model_copy(update={"sliding_window": None})
    dev = _device()
    win, ref = block_cost(m, _shard(True), dev), block_cost(full, _shard(True), dev)
    assert float(win.flops_fwd) < float(ref.flops_fwd) and float(win.fwd) < float(ref.fwd)
    unf_w, unf = block_cost(m, _shard(False), dev), block_cost(full, _shard(False), dev)
    assert float(unf_w.flops_fwd) == float(unf.flops_fwd)
    for flash in (True, False):
        assert float(block_activation_bytes(m, _shard(flash))) == float(
            block_activation_bytes(full, _shard(flash)))


def test_models_without_windows_cost_as_before() -> None:
    m = get_preset("llama3-8b")
    assert m.attention_fraction(8192) == 1.0
    assert _spec("llama3-8b") == m.model_copy(update={"name": _spec("llama3-8b").name})


# ------------------------------------------------------------------ dumps, notes
def test_new_fields_stay_out_of_old_dumps() -> None:
    for name in ("llama3-8b", "llama3-70b", "mixtral-8x7b", "gpt2", "qwen2-7b"):
        dump = _spec(name).model_dump(mode="json")
        for key in ("mlp_gated", "norms_per_layer", "qk_norm", "attention_sinks", "moe_layers",
                    "sliding_window", "layer_types", "attention_chunk_size", "notes"):
            assert key not in dump, (name, key)


@pytest.mark.parametrize("name", ["gemma-2-9b", "gemma-3-12b", "llama4-maverick",
                                  "gpt-oss-20b", "olmo-2-7b", "mistral-7b"])
def test_new_fields_round_trip(name: str) -> None:
    m = _spec(name)
    assert ModelSpec.model_validate(m.model_dump(mode="json")) == m
    assert ModelSpec.model_validate_json(m.model_dump_json()) == m


def test_deepseek_v3_says_its_mtp_layer_is_left_out() -> None:
    m = _spec("deepseek-v3")
    assert m.notes == ("num_nextn_predict_layers=1: the multi-token-prediction layers are not "
                       "modelled (transformers does not build them either)",
                       "quantization_config ignored: weights are costed in the training "
                       "precision")
    assert set(m.model_dump(exclude={"notes"})) == set(get_preset("deepseek-v3").model_dump())


def test_wrapper_notes_are_estimate_warnings() -> None:
    body = {"model": {"hf_config": _cfg("gemma-3-12b")},
            "training": {"global_batch_size": 8, "seq_len": 4096},
            "cluster": {"pools": [{"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                                   "nodes": 1}]},
            "plan": {"tp": 1, "pp": 1, "dp": 8}}
    est = estimate(body)
    assert any("counted the text model" in w and "siglip" in w for w in est.warnings)


# ------------------------------------------------------------------ refusals (HTTP 422)
def test_refusals_name_the_field() -> None:
    assert _refused({"model_type": "mamba", "hidden_size": 768}) == "model.hf_config.model_type"
    cfg = {**_cfg("gemma-2-9b"), "layer_types": ["linear_attention"] * 42}
    assert _refused(cfg) == "model.hf_config.layer_types"
    assert _refused({**_cfg("deepseek-v2-lite"), "moe_layer_freq": 2}) == (
        "model.hf_config.moe_layer_freq")
    wrapped = _cfg("gemma-3-12b")
    wrapped["text_config"] = {**wrapped["text_config"], "use_bidirectional_attention": True}
    assert _refused(wrapped) == "model.hf_config.text_config.use_bidirectional_attention"
    assert _refused({**_cfg("gemma-3-12b"), "text_config": [1]}) == "model.hf_config.text_config"
    assert _refused({**_cfg("gemma-2-9b"), "layer_types": ["full_attention"] * 3}) == (
        "model.hf_config.layer_types")
    mixed = {**_cfg("mixtral-8x7b"), "model_type": "some_moe", "decoder_sparse_step": 2}
    assert _refused(mixed) == "model.hf_config.decoder_sparse_step"


def test_top_level_shape_is_never_defaulted() -> None:
    cfg = _cfg("gemma-2-9b")
    del cfg["hidden_size"]
    assert _refused(cfg) == "model.hf_config.hidden_size"
    # inside text_config the text config class's defaults apply (Gemma-3: vocab_size), said
    m = _spec("gemma-3-12b")
    assert m.vocab_size == 262208 and any("vocab_size" in n for n in m.notes)
