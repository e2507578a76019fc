"""Model FLOPs per step: Megatron-LM's convention, used for MFU.

``model_flops_per_token`` reproduces ``num_floating_point_operations`` of Megatron-LM as of
Megatron-Core r0.8 (2024; ``megatron/training/training.py``)::

    12 · L · h² · ((1 + g/a + s/h) · q/h  +  ffn/h · topk · glu  +  shared/h · glu
                   +  V / (2 · L · h))                                  per token

with glu = 3/2 for gated MLPs: three GEMM passes (forward, input gradient, weight gradient) of
2·m·n·k FLOPs, attention scores counted over the full s×s matrix (no causal halving: the
convention of the Megatron-Core H100 tables and of Korthikanti et al. 2022's MFU). Later
Megatron versions halve causal attention; :func:`model_flops_per_token` takes
``causal_halving=True`` for that variant. Recompute FLOPs are not model FLOPs (they count in
HFU). MLA layers use the same structure with their projection sizes (Megatron's MLA branch).
Sliding-window and chunked-attention layers (Mistral, Gemma-2/3, Phi-3, gpt-oss, Llama 4)
count only the query-key pairs their mask keeps (:func:`attention_flops_per_token`).
"""

from __future__ import annotations

from costmodel.specs.model import ModelSpec


def attention_flops_per_token(model: ModelSpec, seq_len: int, causal_halving: bool = False,
                              moe: bool | None = None) -> float:
    """Forward FLOPs of one block's attention (projections + scores) for one token, averaged
    over the layers of one kind (``moe`` True/False; None = all layers).

    Sliding-window and chunked layers score fewer keys: a query at position p attends
    ``min(p, sliding_window)`` keys (transformers' ``sliding_window_causal_mask_function``),
    so the score term is scaled by :meth:`ModelSpec.attention_fraction`, the attended pairs
    relative to full causal attention. Either convention (s keys per query, or s/2 with
    ``causal_halving``) is thereby the causal count times the same constant; a model without
    such layers is unchanged."""
    a = model.num_attention_heads
    proj = 2.0 * model.attention_params_matmul()
    d_qk = model.q_width / a
    d_v = model.v_width / a
    scores = 2.0 * seq_len * a * (d_qk + d_v) * model.attention_fraction(seq_len, moe)
    if causal_halving:
        scores /= 2
    return proj + scores


def mlp_flops_per_token(model: ModelSpec, layer: int) -> float:
    """Forward FLOPs of one block's FFN for one token (routed top-k + shared experts)."""
    h = model.hidden_size
    n_mat = 3 if model.gated_mlp else 2
    if model.moe_layer_mask[layer]:
        assert model.num_experts_per_tok is not None and model.num_local_experts is not None
        routed = model.num_experts_per_tok * n_mat * h * model.expert_ffn
        shared_f = model.n_shared_experts * model.expert_ffn + (
            model.shared_expert_intermediate_size or 0)
        router = h * model.num_local_experts
        return 2.0 * (routed + n_mat * h * shared_f + router)
    return 2.0 * n_mat * h * model.intermediate_size


def model_flops_per_token(model: ModelSpec, seq_len: int, causal_halving: bool = False) -> float:
    """Forward + backward model FLOPs per token (3 × forward), Megatron-LM convention."""
    fwd = 0.0
    n_moe = model.num_moe_layers
    n_dense = model.num_hidden_layers - n_moe
    if n_dense:
        attn = attention_flops_per_token(model, seq_len, causal_halving, moe=False)
        fwd += n_dense * (attn + mlp_flops_per_token(model, model.moe_layer_mask.index(False)))
    if n_moe:
        attn = attention_flops_per_token(model, seq_len, causal_halving, moe=True)
        fwd += n_moe * (attn + mlp_flops_per_token(model, model.moe_layer_mask.index(True)))
    fwd += 2.0 * model.hidden_size * model.vocab_size  # logits
    return 3.0 * fwd


def narayanan_flops_per_step(model: ModelSpec, batch: int, seq_len: int) -> float:
    """Hardware FLOPs with full recompute of Narayanan et al. 2021, Eq. (3)/Appendix:
    ``96·B·s·l·h²·(1 + s/(6h) + V/(16·l·h))`` — for converting that paper's TFLOP/s only."""
    h, L, V = model.hidden_size, model.num_hidden_layers, model.vocab_size
    return 96.0 * batch * seq_len * L * h * h * (1 + seq_len / (6 * h) + V / (16 * L * h))
