"""Memory formulas of costmodel.memory against their sources.

* Activations per transformer block: Korthikanti et al. 2022, "Reducing Activation
  Recomputation in Large Transformer Models" (arXiv:2205.05198), §4 (Eq. 1–5) and Table 2,
  for a GPT block (f = 4h, MHA, dropout, 16-bit activations):
    no parallelism            s·b·h·(34 + 5·a·s/h)
    tensor parallel t          s·b·h·(10 + 24/t + 5·a·s/(h·t))
    + sequence parallel        s·b·h/t·(34 + 5·a·s/h)
    + selective recompute      34·s·b·h/t
    full recompute             2·s·b·h   (Table 2; /t with sequence parallelism)
* Weights + gradients + optimizer: Megatron-LM
  ``megatron/training/theoretical_memory_usage.py::compute_weight_and_optimizer_memory``:
  18 bytes per parameter, or 6 + 12/d with the distributed optimizer (ZeRO-1);
  Rajbhandari et al. 2020 (ZeRO, §5): ZeRO-2 also shards the gradients (2 + 16/d), ZeRO-3
  everything (18/d) plus the parameters gathered for the blocks in flight.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from costmodel.layer_cost import Shard
from costmodel.memory import (
    GIB,
    block_activation_bytes,
    logits_bytes,
    state_bytes,
    usable_bytes,
)
from costmodel.profile import default_profile
from costmodel.specs.model import ModelSpec
from costmodel.stacks.stack import get_stack


def gpt_block(h: int, a: int, dropout: float = 0.1) -> ModelSpec:
    """The block of Korthikanti et al. §4: f = 4h, MHA, GeLU, dropout on attention
    probabilities and after attention and MLP (p = 0.1 in Megatron's GPT)."""
    return ModelSpec(num_hidden_layers=1, hidden_size=h, num_attention_heads=a,
                     intermediate_size=4 * h, vocab_size=51200, hidden_act="gelu",
                     attention_dropout=dropout, hidden_dropout=dropout, norm="layernorm",
                     attention_bias=True, mlp_bias=True, max_position_embeddings=2048,
                     position_embedding="learned")


def shard(s: int, b: int, tp: int = 1, sp: bool = False, rc: int = 0,
          flash: bool = False) -> Shard:
    return Shard.of(s, 8, b=float(b), tp=float(tp), cp=1.0, ep=1.0, sp=sp, rc=rc,
                    flash=flash, tp_overlap=False)


def act(h: int, a: int, s: int, b: int, **kw: object) -> float:
    return float(block_activation_bytes(gpt_block(h, a), shard(s, b, **kw)))  # type: ignore[arg-type]


# (s, b, h, a, t): GPT-3 175B and MT-NLG 530B shapes of Korthikanti Table 3, and small ones
SHAPES = [
    (2048, 1, 12288, 96, 8),
    (2048, 1, 20480, 128, 8),
    (2048, 4, 4096, 32, 2),
    (1024, 2, 1024, 16, 4),
    (512, 8, 768, 12, 4),
]


@pytest.mark.parametrize(("s", "b", "h", "a", "t"), SHAPES)
def test_no_parallelism(s: int, b: int, h: int, a: int, t: int) -> None:
    """Korthikanti Eq. 1: s·b·h·(34 + 5·a·s/h)."""
    assert act(h, a, s, b) == pytest.approx(s * b * h * (34 + 5 * a * s / h), rel=1e-12)


@pytest.mark.parametrize(("s", "b", "h", "a", "t"), SHAPES)
def test_tensor_parallel(s: int, b: int, h: int, a: int, t: int) -> None:
    """Korthikanti Eq. 2: s·b·h·(10 + 24/t + 5·a·s/(h·t))."""
    expected = s * b * h * (10 + 24 / t + 5 * a * s / (h * t))
    assert act(h, a, s, b, tp=t) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("s", "b", "h", "a", "t"), SHAPES)
def test_tensor_and_sequence_parallel(s: int, b: int, h: int, a: int, t: int) -> None:
    """Korthikanti Eq. 4: s·b·h/t·(34 + 5·a·s/h)."""
    expected = s * b * h / t * (34 + 5 * a * s / h)
    assert act(h, a, s, b, tp=t, sp=True) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(("s", "b", "h", "a", "t"), SHAPES)
def test_sequence_parallel_with_selective_recompute(s: int, b: int, h: int, a: int,
                                                    t: int) -> None:
    """Korthikanti Eq. 5: 34·s·b·h/t."""
    assert act(h, a, s, b, tp=t, sp=True, rc=1) == pytest.approx(34 * s * b * h / t, rel=1e-12)


@pytest.mark.parametrize(("s", "b", "h", "a", "t"), SHAPES)
def test_full_recompute(s: int, b: int, h: int, a: int, t: int) -> None:
    """Korthikanti Table 2: full recompute keeps only the block input, 2·s·b·h bytes; with
    sequence parallelism that input is sharded, 2·s·b·h/t; tensor parallelism alone does
    not shard it."""
    assert act(h, a, s, b, rc=2) == pytest.approx(2 * s * b * h, rel=1e-12)
    assert act(h, a, s, b, tp=t, rc=2) == pytest.approx(2 * s * b * h, rel=1e-12)
    assert act(h, a, s, b, tp=t, sp=True, rc=2) == pytest.approx(2 * s * b * h / t, rel=1e-12)


@pytest.mark.parametrize(("s", "b", "h", "a", "t"), SHAPES)
def test_tp_without_sp_selective(s: int, b: int, h: int, a: int, t: int) -> None:
    """Korthikanti Table 2, "tensor parallel, selective recompute": s·b·h·(10 + 24/t)."""
    assert act(h, a, s, b, tp=t, rc=1) == pytest.approx(s * b * h * (10 + 24 / t), rel=1e-12)


@settings(max_examples=80, deadline=None)
@given(s=st.integers(1, 16384), b=st.integers(1, 16), a=st.integers(1, 64),
       d=st.integers(1, 256), t=st.sampled_from([1, 2, 4, 8]))
def test_korthikanti_any_shape(s: int, b: int, a: int, d: int, t: int) -> None:
    h = a * d
    assert act(h, a, s, b, tp=t) == pytest.approx(
        s * b * h * (10 + 24 / t + 5 * a * s / (h * t)), rel=1e-12)
    assert act(h, a, s, b, tp=t, sp=True) == pytest.approx(
        s * b * h / t * (34 + 5 * a * s / h), rel=1e-12)


@pytest.mark.parametrize(("s", "b", "h", "a", "t"), SHAPES)
def test_flash_attention_drops_the_quadratic_terms(s: int, b: int, h: int, a: int,
                                                   t: int) -> None:
    """FlashAttention (Dao et al. 2022, Alg. 1–2; Dao 2023) stores no s×s score, softmax or
    dropout-mask tensors, only the fp32 log-sum-exp per query row and head (4·b·a·s bytes),
    regenerating the dropout mask from the RNG state. What remains is linear in s:
    34·s·b·h/t (SP) + 4·b·a·s/t."""
    flash = act(h, a, s, b, tp=t, sp=True, flash=True)
    assert flash == pytest.approx(34 * s * b * h / t + 4 * b * a * s / t, rel=1e-12)
    doubled = act(h, a, 2 * s, b, tp=t, sp=True, flash=True)
    assert doubled == pytest.approx(2 * flash, rel=1e-12)  # no s² term left
    # the quadratic term 5·a·s²·b/t is exactly what unfused attention adds over selective
    unfused = act(h, a, s, b, tp=t, sp=True)
    assert unfused - act(h, a, s, b, tp=t, sp=True, rc=1) == pytest.approx(
        5 * a * s * s * b / t, rel=1e-12)


def test_no_dropout_saves_the_masks() -> None:
    """Without dropout there are no masks: 2 one-byte masks of s·b·h (after attention and
    after the MLP, Korthikanti §4.1) and the s²·b·a attention dropout mask (1 byte) plus its
    output (2 bytes) disappear: 34 → 32 and 5 → 2 in Eq. 1."""
    h, a, s, b = 1024, 16, 1024, 2
    m = gpt_block(h, a, dropout=0.0)
    got = float(block_activation_bytes(m, shard(s, b)))
    assert got == pytest.approx(s * b * h * (32 + 2 * a * s / h), rel=1e-12)


def test_logits_bytes() -> None:
    """Last stage: bf16 logits (2 B) + fp32 copy for the vocab-parallel cross entropy (4 B)
    per logit, sharded over tp (Megatron-Core compute_language_model_loss: logits.float()),
    plus the final layer norm's and the output layer's inputs, 2sbh each, divided by t under
    sequence parallelism only (Korthikanti et al. 2022 §4.3)."""
    m = gpt_block(1024, 16)
    T, h, v = 2048 * 2, 1024, 51200
    assert float(logits_bytes(m, shard(2048, 2, tp=4))) == pytest.approx(
        6 * T * v / 4 + 2 * (2 * T * h))
    assert float(logits_bytes(m, shard(2048, 2, tp=4, sp=True))) == pytest.approx(
        6 * T * v / 4 + 2 * (2 * T * h / 4))


# ---------------------------------------------------------------- weights, grads, optimizer
def _per_param(zero: int, d: float, gathered: float = 0.0, optimizer: str = "adamw",
               precision: str = "bf16") -> float:
    P = 1e9
    sb = state_bytes(np.asarray(P), np.asarray(0.0), np.asarray(zero), np.asarray(d),
                     np.asarray(d), optimizer, precision, np.asarray(gathered))
    return float(sb.weights + sb.grads + sb.optimizer) / P


@pytest.mark.parametrize("d", [1, 2, 8, 64, 512])
def test_zero0_is_18_bytes_per_param(d: int) -> None:
    """Megatron theoretical_memory_usage: 18 B/param without the distributed optimizer
    (2 bf16 weight + 4 fp32 main grad + 4 master + 4 + 4 Adam moments), whatever d."""
    assert _per_param(0, d) == pytest.approx(18.0)


@pytest.mark.parametrize("d", [1, 2, 8, 64, 512])
def test_zero1_is_6_plus_12_over_d(d: int) -> None:
    """Megatron theoretical_memory_usage with --use-distributed-optimizer: 6 + 12/d."""
    assert _per_param(1, d) == pytest.approx(6 + 12 / d)


@pytest.mark.parametrize("d", [1, 2, 8, 64, 512])
def test_zero2_is_2_plus_16_over_d(d: int) -> None:
    """ZeRO-2 (Rajbhandari et al. 2020 §5.1): gradients sharded too: 2 + (4 + 12)/d."""
    assert _per_param(2, d) == pytest.approx(2 + 16 / d)


@pytest.mark.parametrize("d", [1, 2, 8, 64, 512])
def test_zero3_is_18_over_d_plus_gathered(d: int) -> None:
    """ZeRO-3 / FSDP: all 18 bytes sharded, 18/d, plus what is held unsharded. ``gathered``
    counts the unit being computed and the one prefetched (FSDP2 prefetches one block, Zhao et
    al. 2023 §3.3; costmodel.memory.zero3_gathered_params returns 2 × unit): both hold their
    bf16 weights (2 B each), and the unit in hand also its unsharded gradient in the
    parameter dtype until the reduce-scatter (2 B for half of ``gathered``): 3 B per gathered
    parameter in all."""
    assert _per_param(3, d) == pytest.approx(18 / d)
    P, G = 1e9, 5e7
    assert _per_param(3, d, gathered=G) == pytest.approx(18 / d + (2 * G + 2 * G / 2) / P)


def test_zero3_gathered_unit_is_two_blocks() -> None:
    """Llama-3-8B block = 218,112,000 parameters (2·4096² + 2·4096·1024 + 3·4096·14336 +
    2·4096, Dubey et al. 2024 Table 3); FSDP2 holds the block in hand and one prefetched, per
    tp rank. DeepSpeed's unit is one submodule (costmodel.memory.zero3_gathered_params takes
    the widest: h × 2·ffn for a gated MLP's gate+up), again in hand + prefetched."""
    from costmodel.memory import zero3_gathered_params
    from costmodel.specs.presets import get_preset
    m = get_preset("llama3-8b")
    assert float(zero3_gathered_params(m, "block", np.asarray(2.0))) == pytest.approx(
        2 * 218_112_000 / 2)
    assert float(zero3_gathered_params(m, "module", np.asarray(1.0))) == pytest.approx(
        2 * 4096 * 2 * 14336)


def test_zero_stages_order() -> None:
    """For d > 1 every stage saves memory over the previous one."""
    vals = [_per_param(z, 8) for z in range(4)]
    assert vals == sorted(vals, reverse=True)
    assert len(set(vals)) == 4


def test_expert_params_shard_over_their_own_group() -> None:
    """MoE (Megatron-Core expert data parallel): expert parameters are sharded by ZeRO over
    the expert-data-parallel group (dp·cp/ep), dense ones over dp·cp."""
    sb = state_bytes(np.asarray(1e9), np.asarray(2e9), np.asarray(1), np.asarray(8.0),
                     np.asarray(2.0), "adamw", "bf16", np.asarray(0.0))
    assert float(sb.optimizer) == pytest.approx(12 * 1e9 / 8 + 12 * 2e9 / 2)
    assert float(sb.weights) == pytest.approx(2 * 3e9)
    assert float(sb.grads) == pytest.approx(4 * 3e9)


def test_sgd_and_fp8_bytes() -> None:
    """SGD with momentum keeps fp32 master + momentum (8 B, Megatron); fp8 (Transformer
    Engine) keeps an fp8 copy of each weight beside the bf16 one (+1 B)."""
    assert _per_param(0, 1, optimizer="sgd") == pytest.approx(2 + 4 + 8)
    assert _per_param(0, 1, precision="fp8") == pytest.approx(19.0)


def test_usable_memory_subtracts_the_allocator_reserve() -> None:
    """The default profile measures no reserve: the stack's documented one applies (Megatron's
    2% with expandable segments, DeepSpeed's 5%); a profile that measured one wins."""
    prof = default_profile()
    assert prof.eff.memory.allocator_reserve_fraction is None
    for name in ("megatron", "deepspeed"):
        frac = get_stack(name).memory.allocator_reserve_fraction
        assert 0 <= frac < 1
        assert usable_bytes(80 * GIB, prof, get_stack(name)) == pytest.approx(
            80 * GIB * (1 - frac))
    assert get_stack("deepspeed").memory.allocator_reserve_fraction > get_stack(
        "megatron").memory.allocator_reserve_fraction
    measured = prof.model_copy(deep=True)
    measured.eff.memory.allocator_reserve_fraction = 0.1
    assert usable_bytes(80 * GIB, measured, get_stack("megatron")) == pytest.approx(72 * GIB)
