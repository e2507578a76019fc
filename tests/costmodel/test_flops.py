"""Model FLOPs (costmodel.flops) against the published closed forms, written out here
independently of the implementation.

* Narayanan et al. 2021 (SC21, arXiv:2104.04473), §5.1 / Appendix: a dense GPT (f = 4h, MHA)
  does ``72·B·s·l·h²·(1 + s/(6h) + V/(12·l·h))`` model FLOPs per iteration (forward +
  backward, no recompute), and ``96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h))`` with full activation
  recomputation (Eq. 3).
* Megatron-LM ``megatron/training/training.py::num_floating_point_operations`` (Megatron-Core
  r0.8, 2024): ``12·B·s·L·h²·((1 + g/a + s/h)·(q/h) + (ffn/h)·topk·glu + V/(2·L·h))`` with
  glu = 3/2 for SwiGLU, q = kv_channels·heads, g = query groups.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costmodel.flops import (
    attention_flops_per_token,
    model_flops_per_token,
    narayanan_flops_per_step,
)
from costmodel.specs.model import ModelSpec
from costmodel.specs.presets import get_preset, preset_names

GPT_PRESETS = sorted(n for n in preset_names() if n.startswith(("megatron", "gpt3")))


def _gpt(L: int, h: int, a: int, V: int, s: int = 2048) -> ModelSpec:
    return ModelSpec(num_hidden_layers=L, hidden_size=h, num_attention_heads=a,
                     intermediate_size=4 * h, vocab_size=V, hidden_act="gelu",
                     tie_word_embeddings=True, max_position_embeddings=s,
                     position_embedding="learned", norm="layernorm", attention_bias=True,
                     mlp_bias=True)


def _narayanan_72(B: int, s: int, L: int, h: int, V: int) -> Fraction:
    return 72 * B * s * L * h * h * (1 + Fraction(s, 6 * h) + Fraction(V, 12 * L * h))


def _narayanan_96(B: int, s: int, L: int, h: int, V: int) -> Fraction:
    return 96 * B * s * L * h * h * (1 + Fraction(s, 6 * h) + Fraction(V, 16 * L * h))


def _megatron_2024(B: int, s: int, L: int, h: int, a: int, g: int, q: int, ffn: int, V: int,
                   topk: int = 1, glu: Fraction = Fraction(3, 2)) -> Fraction:
    attention = (1 + Fraction(g, a) + Fraction(s, h)) * Fraction(q, h)
    mlp = Fraction(ffn, h) * topk * glu
    logit = Fraction(V, 2 * L * h)
    return 12 * B * s * L * h * h * (attention + mlp + logit)


@pytest.mark.parametrize("name", GPT_PRESETS)
@pytest.mark.parametrize("B", [1, 1536])
def test_gpt_presets_match_narayanan_72(name: str, B: int) -> None:
    m = get_preset(name)
    s = 2048
    got = model_flops_per_token(m, s) * B * s
    expected = _narayanan_72(B, s, m.num_hidden_layers, m.hidden_size, m.vocab_size)
    assert got == pytest.approx(float(expected), rel=1e-12)


@settings(max_examples=80, deadline=None)
@given(L=st.integers(1, 128), a=st.integers(1, 64), d=st.integers(1, 256),
       V=st.integers(1, 256_000), s=st.integers(1, 65_536), B=st.integers(1, 4096))
def test_dense_gpt_matches_narayanan_72_for_any_shape(L: int, a: int, d: int, V: int, s: int,
                                                      B: int) -> None:
    """Property: per block 24h² (QKV, output, MLP GEMMs) + 4sh (scores and AV) forward FLOPs
    per token, ×3 for forward + backward, plus 6hV for the logits (Narayanan §5.1)."""
    h = a * d
    m = _gpt(L, h, a, V, s)
    got = model_flops_per_token(m, s) * B * s
    assert got == pytest.approx(float(_narayanan_72(B, s, L, h, V)), rel=1e-12)


def test_llama3_70b_matches_megatron_2024_formula() -> None:
    """Llama-3-70B (Dubey et al. 2024 Table 3): L = 80, h = 8192, a = 64, g = 8 KV heads,
    q = 64·128 = 8192, ffn 28672 SwiGLU, V = 128,256; B = 1024 sequences of s = 8192."""
    m = get_preset("llama3-70b")
    B, s = 1024, 8192
    expected = _megatron_2024(B, s, L=80, h=8192, a=64, g=8, q=64 * 128, ffn=28672, V=128256)
    got = model_flops_per_token(m, s) * B * s
    assert got == pytest.approx(float(expected), rel=1e-12)
    # the same number as a hand-check: ~4.04e18 FLOPs per step
    assert float(expected) == pytest.approx(4.0386e18, rel=1e-4)


@pytest.mark.parametrize("name", ["llama3-8b", "llama3-405b", "mistral-7b"])
def test_gqa_presets_match_megatron_2024_formula(name: str) -> None:
    m = get_preset(name)
    B, s = 8, 4096
    expected = _megatron_2024(B, s, L=m.num_hidden_layers, h=m.hidden_size,
                              a=m.num_attention_heads, g=m.kv_heads,
                              q=m.num_attention_heads * m.head_size, ffn=m.intermediate_size,
                              V=m.vocab_size)
    assert model_flops_per_token(m, s) * B * s == pytest.approx(float(expected), rel=1e-12)


def test_mixtral_matches_megatron_2024_formula_up_to_the_router() -> None:
    """Mixtral-8x7B: topk 2 experts of ffn 14336 (Megatron's num_experts_routed_to = topk).
    Megatron r0.8's formula has no router term; meshplan adds the router GEMM (h × E per
    token: 3·2·h·E·L·B·s FLOPs), which is 2e-5 of the total. Check both."""
    m = get_preset("mixtral-8x7b")
    B, s = 4, 4096
    base = _megatron_2024(B, s, L=32, h=4096, a=32, g=8, q=4096, ffn=14336, V=32000, topk=2)
    router = 3 * 2 * 4096 * 8 * 32 * B * s
    got = model_flops_per_token(m, s) * B * s
    assert got == pytest.approx(float(base + router), rel=1e-12)
    assert got == pytest.approx(float(base), rel=1e-4)


@pytest.mark.parametrize("name", GPT_PRESETS)
def test_narayanan_flops_per_step_is_96_formula(name: str) -> None:
    m = get_preset(name)
    B, s = 512, 2048
    expected = _narayanan_96(B, s, m.num_hidden_layers, m.hidden_size, m.vocab_size)
    assert narayanan_flops_per_step(m, B, s) == pytest.approx(float(expected), rel=1e-12)


def test_full_recompute_flops_exceed_model_flops_by_one_forward() -> None:
    """Narayanan §5.1: full recompute adds one forward pass of the blocks, i.e. 96 vs 72 for
    the transformer part (4/3); the logits are not recomputed (V/(16lh)·96 = V/(12lh)·72)."""
    m = get_preset("megatron-gpt-18b")
    B, s = 1024, 2048
    L, h = m.num_hidden_layers, m.hidden_size
    hw = narayanan_flops_per_step(m, B, s)
    model = model_flops_per_token(m, s) * B * s
    blocks = 72 * B * s * L * h * h * (1 + s / (6 * h))
    assert hw - model == pytest.approx(blocks / 3, rel=1e-12)


def test_causal_halving_halves_only_the_score_flops() -> None:
    """Later Megatron versions halve causal attention; the projections are unchanged. For a
    GPT block the scores are 4sh of the 24h² + 4sh forward FLOPs per token."""
    m = _gpt(2, 1024, 16, 50000)
    s = 4096
    full = attention_flops_per_token(m, s)
    half = attention_flops_per_token(m, s, causal_halving=True)
    assert full - half == pytest.approx(2 * s * 1024)
    assert full == pytest.approx(8 * 1024 * 1024 + 4 * s * 1024)
    total_diff = model_flops_per_token(m, s) - model_flops_per_token(m, s, causal_halving=True)
    assert total_diff == pytest.approx(3 * 2 * 2 * s * 1024)
