"""Memory per pipeline stage: weights, gradients, optimizer states, activations, logits,
communication buffers, CUDA context and allocator reserve.

Activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
Transformer Models", §4, Eq. 1–5), written per tensor so that GQA, gated MLPs, flash
attention, dropout-free models and MoE are covered. For a GPT block with ffn = 4h, MHA and
dropout it reduces exactly to the paper's per-layer bytes:

* no parallelism: ``s·b·h·(34 + 5·a·s/h)``
* tensor parallel t: ``s·b·h·(10 + 24/t + 5·a·s/(h·t))``
* + sequence parallel: ``s·b·h/t·(34 + 5·a·s/h)``; + selective recompute: ``34·s·b·h/t``
* full recompute: ``2·s·b·h`` (``/t`` with sequence parallel): only the block input is kept.

The sequence-parallel terms are Megatron-Core's, which saves a column-parallel linear's
sequence shard and re-gathers it in the backward. A stack that keeps the all-gathered input
instead (``memory.sp_saves_gathered_input``: torchtitan's DTensor plan) stashes the QKV and
fc1 inputs whole, ``4·s·b·h`` bytes rather than ``4·s·b·h/t`` (2·s·b·h under an FP8 recipe
that all-gathers the FP8 cast).

Weights, gradients and optimizer states follow Megatron-LM's
``theoretical_memory_usage.compute_weight_and_optimizer_memory``: 18 bytes per parameter
(bf16 weight, fp32 main gradient, fp32 master copy and two Adam moments), or
``6 + 12/d`` with the distributed optimizer (ZeRO-1) over the data-parallel × context-parallel
group of size d; ZeRO-2 also shards the gradient (``2 + 16/d``) and ZeRO-3/FSDP everything
(``18/d``) plus the gathered parameters of the blocks in flight (Rajbhandari et al. 2020, §5).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from costmodel.layer_cost import ELEM, Shard, kv_stash_width, op_sac_linears
from costmodel.profile import CalibrationProfile
from costmodel.specs.model import ModelSpec
from costmodel.stacks.stack import StackProfile, get_stack

GIB = float(2**30)
OPTIMIZER_STATE_BYTES = {"adamw": 12.0, "adam": 12.0, "sgd": 8.0}
"""fp32 master copy + moments: Adam 4+4+4, SGD with momentum 4+4 (Megatron bytes/param)."""


def block_activation_bytes(model: ModelSpec, s: Shard, moe: bool = False) -> np.ndarray:
    """Bytes one block stashes for its backward, one micro-batch, one rank (no recompute
    except what ``s.rc`` says). See the module docstring for the reference formulas.

    A sliding-window or chunked layer stashes as much as a full one: q, k and v of every
    token (each is a key of some query), flash attention's per-query LSE, and on the unfused
    path the whole masked s×s probability matrix (HF eager attention and Megatron's unfused
    softmax materialise it before masking), so ``sliding_window`` changes time, not
    activation memory."""
    h = float(model.hidden_size)
    T = s.tokens
    r = np.where(s.sp, 1.0 / s.tp, 1.0)
    drop = 1.0 if model.hidden_dropout > 0 else 0.0
    # q: a linear layer's saved input in units of 2 bytes; an FP8 recipe that keeps the FP8
    # copy for the weight gradient (Transformer Engine) saves 1 byte per element, torchao the
    # 16-bit input (costmodel/data/stacks/*.json fp8.recipes.*.stash_bytes)
    q = s.stash_linear / ELEM
    # replicated (or sequence-sharded) tensors: what the 2 norms keep (fused: their 16-bit
    # inputs; eager: the fp32 copy as well), 2 masks, and the QKV and fc1 inputs: sharded with
    # sequence parallelism where the stack re-gathers them in the backward (Megatron-Core),
    # whole where it keeps the gathered tensor (torchtitan's DTensor plan)
    linear_in = (np.where(s.tp > 1, s.stash_gathered / ELEM, q * r) if s.sp_gathered
                 else q * r)
    repl = ((2.0 * s.ew("norm_stash_bytes") + 2.0 * drop) * r + 4.0 * linear_in) * T * h
    kvw = model.kv_heads * model.head_size
    # q, k, v for the (16-bit) attention backward (k and v at the query-head width where the
    # stack copies grouped heads out first); the attention output = the projection's input;
    # an eager rotary embedding's own saved fp32 operand
    attn_sharded = T * (2.0 * model.q_width + 2.0 * kv_stash_width(model, s)
                        + 2.0 * q * model.v_width) / s.tp
    if model.position_embedding == "rope":
        attn_sharded = attn_sharded + (s.ew("rope_stash_bytes") * T
                                       * (model.q_width + kvw) / s.tp)
    gate = 2.0 if model.gated_mlp else 1.0
    if moe:
        assert model.num_experts_per_tok is not None
        k = float(model.num_experts_per_tok)
        fe = model.expert_ffn / s.tp
        mlp = 2.0 * q * T * k * h + 2.0 * T * k * fe * (gate + q)
        shared = model.n_shared_experts * model.expert_ffn + (
            model.shared_expert_intermediate_size or 0)
        mlp = mlp + 2.0 * T * shared / s.tp * (gate + q)
    else:
        # the activation's input(s) and the fc2 input (a linear input); an eager gated
        # activation also keeps act(gate) for the product's backward
        extra = s.ew("act_stash_gated") if model.gated_mlp else 0.0
        mlp = T * model.intermediate_size / s.tp * (2.0 * (gate + q) + extra)
    heads = model.num_attention_heads / s.tp
    scores = s.b * heads * (s.seq / s.cp) * s.seq
    attn_drop = 1.0 if model.attention_dropout > 0 else 0.0
    score_bytes = np.where(s.flash, 4.0 * s.b * heads * s.seq / s.cp,  # flash: fp32 LSE only
                           scores * (2.0 + 3.0 * attn_drop))
    keep_scores = np.where(s.rc == 1, 0.0, score_bytes)
    full = repl + attn_sharded + mlp + keep_scores
    checkpoint = 2.0 * T * h * r
    if s.op_sac and not moe:
        full = np.where(s.rc == 1, op_sac_bytes(model, s, score_bytes), full)
    return np.where(s.rc == 2, checkpoint, full)


def op_sac_bytes(model: ModelSpec, s: Shard, score_bytes: Any) -> np.ndarray:
    """What a dense block keeps under torchtitan's per-op selective recompute: the block's
    input (what the checkpoint wrapper saves), the outputs of the linear layers it saves
    (:func:`costmodel.layer_cost.op_sac_linears`), the attention output with its softmax
    statistics (SDPA is saved; the unfused path's scores with it) and, with sequence
    parallelism, the two reduce-scatter outputs (also on its save list)."""
    h = float(model.hidden_size)
    T = s.tokens
    r = np.where(s.sp, 1.0 / s.tp, 1.0)
    saved, _ = op_sac_linears(model, s.tp)
    kept = sum((ELEM * T * n for n, _ in saved), np.zeros_like(T, dtype=float))
    sdpa = ELEM * T * model.v_width / s.tp + score_bytes
    scatters = np.where(s.sp & (s.tp > 1), 2.0 * ELEM * T * h / s.tp, 0.0)
    return np.asarray(ELEM * T * h * r + kept + sdpa + scatters)


def block_working_bytes(model: ModelSpec, s: Shard, moe: bool = False) -> np.ndarray:
    """Transient peak while one block runs its backward: with full recompute the block's whole
    activation set is rebuilt for one micro-batch (Korthikanti §5); without, the gradient
    buffers of the widest tensors (about two FFN-wide tensors)."""
    s_full = dataclasses.replace(s, rc=np.zeros_like(s.rc))
    rebuilt = block_activation_bytes(model, s_full, moe)
    ffn = (model.expert_ffn * (model.num_experts_per_tok or 1) if moe
           else model.intermediate_size)
    grads = 2.0 * s.tokens * ffn / s.tp * ELEM
    if s.op_sac and not moe:
        # torchtitan's per-op policy rebuilds what it did not keep, one block at a time
        grads = np.where(s.rc == 1, np.maximum(grads, rebuilt - block_activation_bytes(
            model, s, moe)), grads)
    return np.where(s.rc == 2, rebuilt, grads)


def logits_bytes(model: ModelSpec, s: Shard) -> np.ndarray:
    """Last stage, one micro-batch: the LM head's logits and the loss's own tensors at the
    start of the backward, the stack's bytes per logit (``recompute.loss_bytes_per_logit``:
    Megatron's vocab-parallel cross-entropy keeps bf16 logits and an fp32 copy, 6 bytes;
    torchtitan's fp32 log-softmax and its gradients, 12, or 16 under its vocab-parallel loss,
    or 4 compiled: ``elementwise.compiled.loss_bytes_per_logit``),
    plus what the final norm and the LM head save for their backward (Korthikanti et al. 2022
    §4.3: the last layer norm's input and the output layer's input, 2sbh each, divided by t
    under sequence parallelism). A stack whose column-parallel layers keep their all-gathered
    input (``memory.sp_saves_gathered_input``: torchtitan's ColwiseParallel head) keeps the
    head's input whole."""
    T, h = s.tokens, model.hidden_size
    norm_in = ELEM * T * h * np.where(s.sp, 1.0 / s.tp, 1.0)
    head_in = ELEM * T * h * np.where(s.sp & (not s.sp_gathered), 1.0 / s.tp, 1.0)
    return np.asarray(s.loss_bytes * T * model.vocab_size / s.tp + norm_in + head_in)


def embedding_activation_bytes(model: ModelSpec, s: Shard) -> np.ndarray:
    """First stage, per micro-batch in flight: embedding output (+ dropout mask)."""
    r = np.where(s.sp, 1.0 / s.tp, 1.0)
    drop = 1.0 if model.hidden_dropout > 0 else 0.0
    return (2.0 + drop) * s.tokens * model.hidden_size * r


@dataclass
class StateBytes:
    weights: np.ndarray
    grads: np.ndarray
    optimizer: np.ndarray


@dataclass
class PerParam:
    """Bytes of one state kind as ``dense · params_dense + expert · params_expert + fixed``."""

    dense: np.ndarray
    expert: np.ndarray
    fixed: np.ndarray

    def of(self, params_dense: np.ndarray, params_expert: np.ndarray) -> np.ndarray:
        return params_dense * self.dense + params_expert * self.expert + self.fixed


@dataclass
class StateCoefficients:
    """:func:`state_bytes` per parameter: the ZeRO sharding and dtypes of one set of
    candidates, applied to any parameter counts of theirs (a rank's, a stage's)."""

    weights: PerParam
    grads: PerParam
    optimizer: PerParam

    def bytes(self, params_dense: np.ndarray, params_expert: np.ndarray) -> StateBytes:
        return StateBytes(weights=self.weights.of(params_dense, params_expert),
                          grads=self.grads.of(params_dense, params_expert),
                          optimizer=self.optimizer.of(params_dense, params_expert))

    def summed(self) -> PerParam:
        """Weights + gradients + optimizer states per parameter (for totals only)."""
        w, g, o = self.weights, self.grads, self.optimizer
        return PerParam(dense=w.dense + g.dense + o.dense, expert=w.expert + g.expert + o.expert,
                        fixed=w.fixed + g.fixed + o.fixed)


def _pick(when: bool, a: float, b: float) -> np.ndarray:
    """:func:`numpy.where` of one element, in floats."""
    return np.asarray(a if when else b)


def state_coefficients(zero: np.ndarray, d_dense: np.ndarray, d_expert: np.ndarray,
                       optimizer: str, precision: str, gathered_params: np.ndarray,
                       grad_bytes: float = 4.0, stage_unsharded: Any = False
                       ) -> StateCoefficients:
    """The bytes per parameter of :func:`state_bytes` (see there)."""
    opt = OPTIMIZER_STATE_BYTES[optimizer]
    w_bytes = 2.0 + (1.0 if precision == "fp8" else 0.0)
    if precision == "fp32":
        # plain fp32 training: the fp32 weights are the master copy (no separate 4 B copy)
        w_bytes, opt = 4.0, opt - 4.0
    args: tuple[Any, ...] = (zero, d_dense, d_expert, gathered_params, stage_unsharded)
    # one plan's rank: the same rule in floats (numpy's per-call cost on 0-d arrays was most
    # of an estimate's memory report); candidate arrays: elementwise
    scalar = all(np.ndim(x) == 0 for x in args)
    zero_, dd, de, gathered, whole = (float(x) for x in args) if scalar else args
    pick: Any = _pick if scalar else np.where
    z1, z2, z3 = zero_ >= 1, zero_ >= 2, zero_ >= 3
    # ZeRO-3 under a pipeline on a stack that keeps the stage gathered (torchtitan: no
    # reshard after forward, gradients accumulated unsharded until the last micro-batch);
    # otherwise ZeRO-3 gathers one unit at a time
    if scalar:
        kept, unit = z3 and whole > 0, z3 and not whole > 0
    else:
        kept = z3 & np.asarray(whole, dtype=bool)
        unit = z3 & ~kept

    def sharded(when: Any, b: float, fixed: Any = 0.0, unsharded: float = 0.0) -> PerParam:
        extra = pick(kept, unsharded, 0.0)
        return PerParam(dense=pick(when, b / dd, b) + extra,
                        expert=pick(when, b / de, b) + extra, fixed=pick(unit, fixed, 0.0))

    # ZeRO-3: the unit in hand also has its unsharded gradient, in the parameter dtype until
    # the reduce-scatter (FSDP2 casts to the reduce dtype inside it; DeepSpeed reduces fp16);
    # a stage kept gathered holds a full 16-bit copy and a full gradient in the reduce dtype
    return StateCoefficients(weights=sharded(z3, w_bytes, gathered * w_bytes, w_bytes),
                             grads=sharded(z2, grad_bytes, gathered / 2.0 * 2.0, grad_bytes),
                             optimizer=sharded(z1, opt))


def state_bytes(params_dense: np.ndarray, params_expert: np.ndarray, zero: np.ndarray,
                d_dense: np.ndarray, d_expert: np.ndarray, optimizer: str, precision: str,
                gathered_params: np.ndarray, grad_bytes: float = 4.0,
                stage_unsharded: Any = False) -> StateBytes:
    """Weights, gradients and optimizer states of one rank (see the module docstring).

    ``params_*`` are this rank's parameters after TP/PP/EP sharding; ``d_*`` the sizes of the
    groups ZeRO shards over; ``gathered_params`` the parameters ZeRO-3 holds unsharded at once
    (the unit being computed and the one prefetched). fp8 training keeps bf16 weights plus an fp8
    copy (Transformer Engine), one more byte per parameter; fp32 training keeps 4-byte weights
    that are their own master copy (optimizer states: the moments only). ``grad_bytes`` is the
    gradient buffer's bytes per parameter (``training.grad_buffer_bytes``: 4 for fp32 main
    gradients, 2 where they are kept in bf16). ZeRO-1 shards the optimizer states, ZeRO-2 also
    the gradients, ZeRO-3 also the weights (:func:`state_coefficients`). ``stage_unsharded``
    (ZeRO-3 in a pipeline on a stack whose ``memory.zero3_pipeline_unsharded`` is set:
    torchtitan) keeps the rank's whole stage gathered in 16 bits and its gradient unsharded
    at ``grad_bytes`` for the step, on top of the shards.
    """
    return state_coefficients(zero, d_dense, d_expert, optimizer, precision, gathered_params,
                              grad_bytes, stage_unsharded).bytes(params_dense, params_expert)


@dataclass
class StackStateRules:
    """How a stack holds gradients and parameters beyond the textbook accounting, for one
    request (scalars) or per candidate (arrays): what :func:`stack_state_rules` decides."""

    held_grad_bytes: Any
    """Bytes per parameter of the optimizer's gradient held through forward and backward
    (``grad_bytes`` of :func:`state_bytes`)."""
    step_grad_bytes: Any
    """Bytes per parameter of gradients that exist only inside the optimizer step."""
    stage_unsharded: Any
    """ZeRO-3 keeps the rank's whole stage gathered (``stage_unsharded`` of
    :func:`state_bytes`)."""


def stack_state_rules(precision: str, grad_buffer_bytes: float, stack: StackProfile,
                      zero: Any, pp: Any) -> StackStateRules:
    """The stack's state rules at ZeRO stage ``zero`` and pipeline degree ``pp`` (scalars or
    per-candidate arrays).

    * ``training.grad_buffer_bytes`` is held, except without ZeRO on a stack that builds the
      fp32 gradients of fp16 training in the step (``memory.fp16_grads_at_step``:
      DeepSpeed's FP16_Optimizer casts the 16-bit .grad there), where nothing is held and 8
      bytes exist only during the step (the per-parameter fp32 copies and the flat buffer
      they are concatenated into);
    * with a pipeline, a stack whose ``memory.zero3_pipeline_unsharded`` is set (torchtitan)
      keeps the ZeRO-3 stage gathered."""
    scalar = np.ndim(zero) == 0 and np.ndim(pp) == 0
    held: Any = grad_buffer_bytes
    step: Any = 0.0
    if precision == "fp16" and stack.memory.fp16_grads_at_step:
        none = np.asarray(zero) == 0
        held, step = np.where(none, 0.0, grad_buffer_bytes), np.where(none, 8.0, 0.0)
    whole = (np.asarray(pp) > 1) & stack.memory.zero3_pipeline_unsharded
    if scalar:
        return StackStateRules(float(held), float(step), bool(whole))
    return StackStateRules(held, step, whole)


def zero3_gathered_params(model: ModelSpec, unit: str, tp: np.ndarray) -> np.ndarray:
    """Parameters ZeRO-3 holds unsharded at once on one rank: the unit being computed plus
    the one prefetched (FSDP2's default prefetch of one block, Zhao et al. 2023 §3.3;
    DeepSpeed gathers per submodule, the largest being one MLP matrix)."""
    if unit == "module":
        widest = max(model.intermediate_size, model.expert_ffn) * (
            2 if model.gated_mlp else 1)
        return np.asarray(2.0 * model.hidden_size * widest) / tp
    blocks = [model.layer_params(model.moe_layer_mask.index(k))[0]
              for k in (False, True) if k in model.moe_layer_mask]
    return np.asarray(2.0 * max(blocks)) / tp


def overhead_bytes(profile: CalibrationProfile, n_groups: np.ndarray) -> np.ndarray:
    """CUDA context and NCCL buffers of one rank (the allocator reserve is a capacity cut)."""
    m = profile.eff.memory
    return (m.cuda_context_gib + m.nccl_buffers_gib_per_group * n_groups) * GIB


def usable_bytes(capacity: float, profile: CalibrationProfile,
                 stack: StackProfile | None = None) -> float:
    """Device memory available to tensors after the allocator's fragmentation reserve: the
    calibration profile's measured fraction where it has one, else the stack's documented one
    (``costmodel/data/stacks/<framework>.json`` ``memory``; null stack = Megatron-Core)."""
    frac = profile.eff.memory.allocator_reserve_fraction
    if frac is None:
        frac = (stack or get_stack(None)).memory.allocator_reserve_fraction
    return capacity * (1.0 - frac)


@dataclass(frozen=True)
class MemoryBand:
    """The model's demonstrated peak-memory error (``costmodel/data/memory_band.json``): the
    true peak lies in [predicted / (1 + over), predicted / (1 − under)]."""

    under: float
    over: float
    provenance: str


@cache
def memory_band() -> MemoryBand:
    raw = json.loads(resources.files("costmodel").joinpath("data/memory_band.json").read_text())
    return MemoryBand(float(raw["under"]), float(raw["over"]), str(raw["provenance"]))


def memory_verdict(peak: float, usable: float, band: MemoryBand | None = None
                   ) -> tuple[str, float]:
    """(``fits`` | ``tight`` | ``does_not_fit``, margin = usable − peak) for one rank.

    ``fits`` when the peak fits even if the model under-predicts by its band's ``under``;
    ``does_not_fit`` when it does not fit even if the model over-predicts by ``over``;
    ``tight`` between (the run may or may not fit: measure it or leave room)."""
    code = int(fit_codes(np.asarray(peak), np.asarray(usable), band))
    return FIT_VERDICTS[code], usable - peak


FIT_VERDICTS = ("fits", "tight", "does_not_fit")


def fit_codes(peak: np.ndarray, usable: np.ndarray | float, band: MemoryBand | None = None
              ) -> np.ndarray:
    """:func:`memory_verdict` for arrays of candidates: 0 fits, 1 tight, 2 does not fit (the
    bulk evaluator's and the estimate's one rule)."""
    b = band or memory_band()
    return np.where(peak / (1.0 - b.under) <= usable, 0,
                    np.where(peak / (1.0 + b.over) > usable, 2, 1))
