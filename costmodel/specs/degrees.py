"""The rules a parallel degree must obey, written once for one plan and for arrays of plans.

Each function returns ``(holds, why)`` pairs: ``holds`` is a bool for scalar degrees or a
boolean array for arrays of them (the search's bulk path), ``why()`` the message for a plan
that breaks it (called only then). :func:`costmodel.specs.request.check_plan` reports every
broken rule, :func:`costmodel.bulk.valid_mask` and the search's enumeration
(:mod:`solver.space`, :mod:`solver.mixed`) keep the candidates for which :func:`holds` is
true. Sources, per rule, in brackets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from costmodel.specs.model import ModelSpec

Rule = tuple[Any, Callable[[], str]]


def tensor_parallel(model: ModelSpec, tp: Any) -> list[Rule]:
    """Heads, KV heads and both FFN widths split evenly over tp [Megatron-LM
    ``ColumnParallelLinear`` / ``divide()``; grouped-query KV heads are replicated when
    tp exceeds them, so the two must divide one another]."""
    a, g, f = model.num_attention_heads, model.kv_heads, model.intermediate_size
    rules: list[Rule] = [
        (a % tp == 0, lambda: f"num_attention_heads={a} must be divisible by tp={tp}"),
        ((g % tp == 0) | (tp % g == 0),
         lambda: f"num_key_value_heads={g} and tp={tp} must divide one another"),
        (f % tp == 0, lambda: f"intermediate_size={f} must be divisible by tp={tp}"),
    ]
    if model.is_moe:
        e = model.expert_ffn
        rules.append((e % tp == 0,
                      lambda: f"moe_intermediate_size={e} must be divisible by tp={tp}"))
    return rules


def context_parallel(seq_len: int, cp: Any) -> list[Rule]:
    """The sequence splits into 2·cp chunks [Megatron-Core load-balanced context parallelism:
    each rank takes one chunk from each end, ``get_batch_on_this_cp_rank``]."""
    return [((cp == 1) | (seq_len % (2 * cp) == 0),
             lambda: f"seq_len={seq_len} must be divisible by 2·cp = {2 * cp}")]


def expert_parallel(model: ModelSpec, dp: Any, cp: Any, ep: Any) -> list[Rule]:
    """Experts split evenly over ep, and ep divides the expert-data-parallel ranks dp·cp
    [Megatron-Core ``parallel_state``: expert parallel groups inside dp·cp]; no ep > 1 for a
    dense model."""
    if not model.is_moe or model.num_local_experts is None:
        return [(ep == 1, lambda: "expert parallelism needs an MoE model")]
    n = model.num_local_experts
    return [(n % ep == 0, lambda: f"num_local_experts={n} must be divisible by ep={ep}"),
            ((dp * cp) % ep == 0, lambda: f"ep={ep} must divide dp·cp = {dp * cp}")]


def batch(global_batch_size: int, dp: Any, micro_batch_size: Any) -> list[Rule]:
    """The global batch is a whole number of micro-batches on every data-parallel rank
    [Megatron-LM ``num_microbatches_calculator``; torchtitan's gradient accumulation]."""
    return [(global_batch_size % (dp * micro_batch_size) == 0,
             lambda: f"global_batch_size={global_batch_size} must be divisible by dp × "
                     f"micro_batch_size = {dp} × {micro_batch_size}")]


def holds(rules: Sequence[Rule]) -> Any:
    """Whether every rule holds (a bool, or a boolean array over plans)."""
    out: Any = True
    for ok, _ in rules:
        out = out & ok
    return bool(out) if np.ndim(out) == 0 else np.asarray(out, dtype=bool)


def activation_offload_layers(model: ModelSpec, pp: int, recompute: str,
                              layers: int | None) -> list[Rule]:
    """Layer-wise CPU activation offload of ``layers`` transformer layers [Megatron-Core
    ``TransformerConfig.__post_init__`` (megatron/core/transformer/transformer_config.py):
    ``cpu_offloading_num_layers`` in [0, num_layers), no pipeline parallelism with CPU
    offloading, not with activation recomputation]."""
    if layers is None:
        return []
    L = model.num_hidden_layers
    return [(layers < L, lambda: f"activation_offload_layers={layers} must be below "
             f"num_hidden_layers={L}"),
            (pp == 1, lambda: f"layer-wise activation offload runs without pipeline "
             f"parallelism (Megatron-Core); this plan has pp={pp}"),
            (recompute == "none", lambda: "layer-wise activation offload does not run with "
             f"activation recomputation (Megatron-Core); this plan has recompute={recompute!r}")]
