"""Per-layer and per-stage time of one micro-batch on one rank: forward, input-gradient and
weight-gradient work, recompute, tensor/context/expert-parallel communication.

Every quantity is a numpy array broadcast over candidate plans (``b`` micro-batch size, ``tp``,
``cp``, ``ep``, ``sp`` sequence parallel, ``rc`` recompute code, ``flash``), so the single-plan
estimate and the bulk search share these formulas.

The operation inventory of a block follows Megatron-LM's ``TransformerLayer``
(``megatron/core/transformer/transformer_layer.py``): norm → QKV GEMM → core attention → output
projection → bias-dropout-add → norm → MLP up (gate+up when gated) → activation → MLP down →
bias-dropout-add. Tensor parallelism shards heads and the FFN (Shoeybi et al. 2019, §3): each
block does two all-reduces forward and two backward, or with sequence parallelism
(Korthikanti et al. 2022, §4.2.2) two all-gathers and two reduce-scatters of the same volume.
Backward of a linear layer is one input-gradient and one weight-gradient GEMM of the forward's
FLOPs (Qi et al. 2023, §2); memory-bound backward kernels read the saved input and the output
gradient and write the input gradient: twice the forward's traffic.

An eager framework issues each kernel from the host; a block can run no faster than its kernel
count times the profile's host dispatch time, so small models are host-bound (what vTrain's
measured traces show for 1k-hidden GPTs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from costmodel.ops import Device, collective_time, flash_attention_time, gemm_time, mem_time
from costmodel.specs.model import ModelSpec
from costmodel.stacks.stack import (
    ElementwiseCost,
    Execution,
    FP8RecipeCost,
    TPCommGemms,
    get_stack,
)

RECOMPUTE_CODES = {"none": 0, "selective": 1, "full": 2}
ELEM = 2.0
"""Bytes of a bf16/fp16 activation element (fp8 recipes keep activations in bf16), as the
memory formulas count them; times use the device's ``elem_bytes`` (4 for fp32)."""
CE_FWD_BYTES = 38.0  # per logit, see edge_cost
CE_BWD_BYTES = 22.0


@dataclass
class Shard:
    """The candidate-plan arrays that shape a layer's work on one rank."""

    b: np.ndarray
    tp: np.ndarray
    cp: np.ndarray
    ep: np.ndarray
    sp: np.ndarray
    rc: np.ndarray
    flash: np.ndarray
    tp_overlap: np.ndarray
    seq: int
    gpus_per_node: int
    kernel: str = "flash2"
    """The attention kernel (``plan.attention`` resolved for the stack and GPU: see
    :func:`costmodel.stacks.stack.resolve_attention`); ``flash`` says whether it is fused."""
    fp8: FP8RecipeCost | None = None
    """The FP8 recipe's cast and stash costs when the job runs fp8 (linear layers only)."""
    selective: str = "attention_core"
    """What ``rc`` = 1 (selective recompute) keeps and recomputes on the stack
    (:data:`costmodel.stacks.stack.SelectiveRecompute`)."""
    loss_bytes: float | np.ndarray = 6.0
    """Peak bytes per logit of the LM head output and the loss, per candidate where it depends
    on the tensor-parallel degree and compilation (:meth:`costmodel.stacks.stack.StackProfile.
    loss_bytes`)."""
    elementwise: ElementwiseCost | None = None
    """How the stack runs the block's memory-bound operations (``elementwise.kernels`` of its
    file); None = Megatron-Core's fused kernels."""
    elementwise_compiled: ElementwiseCost | None = None
    """How they run where ``compiled`` (the stack's ``elementwise.compiled``)."""
    compiled: np.ndarray | bool = False
    """Per candidate: the blocks run under torch.compile
    (:meth:`costmodel.stacks.stack.StackProfile.compiled`)."""
    cp_exchange: str = "ring"
    """How context parallelism moves keys and values (the stack's
    ``overlap.cp_kv_exchange``: :data:`costmodel.stacks.stack.CPExchange`)."""
    tp_gemms: TPCommGemms | None = None
    """How the stack's tensor-parallel overlap runs the GEMMs that carry the collectives (its
    ``overlap.tp_comm_gemms``): see :func:`_tp_overlap_gemms`; None = behind the pass's GEMMs
    at the profile's ``overlap_compute_cost``."""
    sp_gathered: bool = False
    """With sequence parallelism the column-parallel linear layers keep their all-gathered
    input (the stack's ``memory.sp_saves_gathered_input``: torchtitan's DTensor plan), not the
    sequence shard (Megatron-Core)."""
    tokens: np.ndarray = field(init=False)
    """Tokens of the micro-batch on this rank (b·s/cp)."""
    sp_tokens: np.ndarray = field(init=False)
    """Tokens of the replicated-or-sequence-sharded region (norms, dropout, residual)."""

    def __post_init__(self) -> None:
        self.tokens = self.b * self.seq / self.cp
        self.sp_tokens = np.where(self.sp, self.tokens / self.tp, self.tokens)
        if self.elementwise is None:
            self.elementwise = get_stack(None).elementwise.kernels
        self._mixed = self.elementwise_compiled is not None and bool(np.any(self.compiled))
        self._ew: dict[str, float | np.ndarray] = {}

    def ew(self, name: str) -> float | np.ndarray:
        """One coefficient of :class:`~costmodel.stacks.stack.ElementwiseCost`: the stack's
        default (a float), or per candidate the compiled one where the blocks are compiled
        (worked out once per shard)."""
        got = self._ew.get(name)
        if got is None:
            eager = float(getattr(self.elementwise, name))
            got = eager if not self._mixed else np.where(
                self.compiled, float(getattr(self.elementwise_compiled, name)), eager)
            self._ew[name] = got
        return got

    @classmethod
    def of(cls, seq: int, gpus_per_node: int, kernel: str = "flash2",
           fp8: FP8RecipeCost | None = None, selective: str = "attention_core",
           loss_bytes: float | np.ndarray = 6.0, elementwise: ElementwiseCost | None = None,
           elementwise_compiled: ElementwiseCost | None = None,
           compiled: np.ndarray | bool = False, sp_gathered: bool = False,
           cp_exchange: str = "ring", tp_gemms: TPCommGemms | None = None,
           **kw: object) -> Shard:
        arrs = {k: np.asarray(v) for k, v in kw.items()}
        return cls(seq=seq, gpus_per_node=gpus_per_node, kernel=kernel, fp8=fp8,
                   selective=selective, loss_bytes=loss_bytes, elementwise=elementwise,
                   elementwise_compiled=elementwise_compiled,
                   compiled=np.asarray(compiled, dtype=bool), sp_gathered=sp_gathered,
                   cp_exchange=cp_exchange, tp_gemms=tp_gemms, **arrs)

    @classmethod
    def for_stack(cls, seq: int, gpus_per_node: int, ex: Execution,
                  torch_compile: bool | None = None, **kw: object) -> Shard:
        """A shard with the attention kernel, FP8 recipe, recompute semantics, elementwise
        kernels and saved tensor-parallel inputs of the stack the job runs on (``ex``:
        :func:`costmodel.stacks.stack.execution`; ``torch_compile``: ``plan.torch_compile``)."""
        rc, ew = ex.stack.recompute, ex.stack.elementwise
        compiled = ex.stack.compiled(kw.get("tp_overlap", False), kw.get("tp", 1.0),
                                     torch_compile)
        return cls.of(seq, gpus_per_node, kernel=ex.kernel, fp8=ex.fp8, selective=rc.selective,
                      loss_bytes=ex.stack.loss_bytes(kw.get("tp", 1.0), compiled),
                      elementwise=ew.kernels,
                      elementwise_compiled=ew.compiled, compiled=compiled,
                      sp_gathered=ex.stack.memory.sp_saves_gathered_input,
                      cp_exchange=ex.stack.overlap.cp_kv_exchange,
                      tp_gemms=ex.stack.overlap.tp_comm_gemms, **kw)

    @property
    def op_sac(self) -> bool:
        """Selective recompute is torchtitan's per-op policy (``op_every_second_mm``)."""
        return self.selective == "op_every_second_mm"

    @property
    def stash_linear(self) -> float:
        """Bytes per element stashed of a linear layer's input (the recipe's under fp8)."""
        return ELEM if self.fp8 is None else self.fp8.stash_bytes

    @property
    def stash_gathered(self) -> float:
        """Bytes per element stashed of a column-parallel linear layer's all-gathered input
        where the stack keeps it whole (:attr:`sp_gathered`): what the all-gather moved where
        the recipe casts before it, else what it keeps of any linear input."""
        return self.gather_bytes(self.stash_linear)

    def gather_bytes(self, elem_bytes: float) -> float:
        """Bytes per element of the tensor-parallel all-gathers of the linear layers' inputs
        and output gradients: the FP8 recipe's where it casts before them."""
        if self.fp8 is not None and self.fp8.tp_gather_bytes is not None:
            return self.fp8.tp_gather_bytes
        return elem_bytes


@dataclass
class BlockCost:
    """Times (s) of one transformer block, one micro-batch, one rank. Arrays over candidates."""

    fwd: np.ndarray
    """Forward incl. exposed TP/CP/EP communication."""
    bwd_input: np.ndarray
    """Input-gradient backward incl. its exposed communication and recompute."""
    bwd_weight: np.ndarray
    recompute: np.ndarray
    comm_fwd: np.ndarray
    comm_bwd: np.ndarray
    tp_comm: np.ndarray
    cp_comm: np.ndarray
    ep_comm: np.ndarray
    flops_fwd: np.ndarray
    """Executed forward FLOPs (hardware count; causal-skipped attention counted as run)."""
    flops_recompute: np.ndarray
    bwd_input_split: np.ndarray | None = None
    """Input-gradient backward when the schedule runs the backward as two passes (zero-bubble
    schedules); None = ``bwd_input`` (the split costs nothing extra in the model)."""
    bwd_weight_split: np.ndarray | None = None
    """The weight-gradient pass of a split backward; None = ``bwd_weight``."""


def _gemms(m: np.ndarray, shapes: list[tuple[np.ndarray | float, np.ndarray | float]],
           dev: Device) -> tuple[np.ndarray, np.ndarray]:
    """Total time and FLOPs of linear-layer GEMMs (m × k)·(k × n) for each (n, k) (at the fp8
    ceiling when the job runs fp8: :func:`costmodel.ops.gemm_time`)."""
    t = np.zeros(np.broadcast(m, *[np.asarray(n) for n, _ in shapes]).shape)
    fl = np.zeros_like(t)
    for n, k in shapes:
        t = t + gemm_time(m, n, k, dev, linear=True)
        fl = fl + 2.0 * m * n * k
    return t, fl


def _fp8_casts(fp8: FP8RecipeCost | None, inputs: list[np.ndarray], grads: list[np.ndarray],
               dev: Device) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(forward time, backward time, forward kernels, backward kernels) of an FP8 recipe's
    cast / amax / transpose kernels: memory-bound passes of the recipe's bytes per element over
    each FP8 GEMM's input (forward) and output gradient (backward) (shared/reference/kernels.md,
    "Precision per operation"; the bytes per recipe and stack in costmodel/data/stacks/)."""
    if fp8 is None:
        z = np.zeros_like(np.asarray(inputs[0], dtype=float))
        return z, z, z, z
    tf = sum(mem_time(fp8.cast_fwd_bytes * x, dev) for x in inputs)
    tb = sum(mem_time(fp8.cast_bwd_bytes * g, dev) for g in grads)
    kf = np.asarray(fp8.kernels_fwd * len(inputs), dtype=float)
    kb = np.asarray(fp8.kernels_bwd * len(grads), dtype=float)
    return np.asarray(tf), np.asarray(tb), kf, kb


def _attention(model: ModelSpec, s: Shard, dev: Device, moe: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Core attention of one block: (fwd, bwd, flops_fwd, kernels_fwd, kernels_bwd).

    Flash (Dao 2023): one kernel forward, two backward (pre-processing + main), causal blocks
    skipped, and with a sliding window (FlashAttention-2 ``window_size``) or chunked mask the
    blocks outside it too: the work is scaled by :meth:`ModelSpec.attention_fraction`, the
    mean over this kind of block's layers (a stage gets the model's mix of local and global
    layers). Unfused (Megatron-LM before flash attention): batched QKᵀ and AV GEMMs over all
    s×s scores, fused scale-mask-softmax, and dropout on the probabilities when
    ``attention_dropout`` > 0; softmax backward reads y and dy and writes dx (6 B/score),
    dropout backward reads dy and the mask and writes dx (5 B/score).
    """
    heads = model.num_attention_heads / s.tp
    sq, skv = model_seq_q(s), float(s.seq)
    d_qk = model.q_width / model.num_attention_heads
    d_v = model.v_width / model.num_attention_heads
    full_flops = 2.0 * s.b * heads * sq * skv * (d_qk + d_v)
    # the unfused path computes every score and masks afterwards (HF eager, Megatron's
    # unfused softmax): only fused kernels skip what a window leaves out
    local = model.attention_fraction(s.seq, moe)
    # flash: causal mask halves the work (load-balanced context parallelism keeps it halved);
    # the kernel's efficiency at the per-rank query length and the mean head dim
    if s.kernel == "unfused":
        f_fwd = f_bwd = np.zeros_like(np.asarray(full_flops, dtype=float))
    else:
        f_fwd, f_bwd = flash_attention_time(0.5 * full_flops * local, dev, s.kernel,
                                            0.5 * (d_qk + d_v), sq)
    batch_rows = s.b * heads * sq
    t_qk = gemm_time(batch_rows, skv, d_qk, dev)
    t_av = gemm_time(batch_rows, d_v, skv, dev)
    scores = s.b * heads * sq * skv
    drop = model.attention_dropout > 0
    u_fwd = t_qk + t_av + mem_time(4.0 * scores, dev) + (mem_time(5.0 * scores, dev) if drop else 0)
    u_bwd = (2 * t_qk + 2 * t_av + mem_time(6.0 * scores, dev)
             + (mem_time(5.0 * scores, dev) if drop else 0))
    fwd = np.where(s.flash, f_fwd, u_fwd)
    bwd = np.where(s.flash, f_bwd, u_bwd)
    flops = np.where(s.flash, 0.5 * full_flops * local, full_flops)
    k_fwd = np.where(s.flash, 1.0, 3.0 + drop)
    k_bwd = np.where(s.flash, 2.0, 5.0 + drop)
    return fwd, bwd, flops, k_fwd, k_bwd


def _cp_exchange(model: ModelSpec, s: Shard, dev: Device, a_fwd: np.ndarray, a_bwd: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Exposed time of context parallelism's key/value exchange in one block's forward and
    backward, the attention of a rank's ``cp`` key/value blocks taking ``a/cp`` each
    (load-balanced causal chunks).

    ``ring`` (Megatron-Core / Transformer Engine p2p, ring attention: Liu et al. 2023): cp − 1
    steps, each sending the rank's current block to the next rank while the block in hand is
    attended; the backward sends blocks and their gradients (16-bit) per step. ``all_gather``
    (PyTorch's context parallelism, torch 2.13 ``_templated_ring_attention`` with
    ``_AllGatherRotater``, its default rotate method): one all-gather of every block, issued
    before the first block's attention and waited after it; the backward gathers again the
    same way and passes the key/value gradients ring-wise (``_templated_ring_attention_backward``'s
    ``dkv_rotater``, a ``permute_tensor`` per block) in fp32 (``_cp_options.convert_to_f32``),
    the last of them waited after the loop with nothing left to hide it."""
    kv_bytes = 2.0 * s.tokens * model.kv_heads * model.head_size / s.tp * dev.elem_bytes
    cp_node = np.clip(np.floor(s.gpus_per_node / s.tp), 1, s.cp)
    pair_node = np.where(cp_node >= s.cp, 2.0, 1.0)
    pair = np.full_like(s.cp, 2.0)
    if s.cp_exchange == "all_gather":
        gather = collective_time("all_gather", s.cp, kv_bytes * s.cp, cp_node, dev)
        grads = collective_time("send_recv", pair, kv_bytes * 4.0 / dev.elem_bytes, pair_node,
                                dev)
        fwd = np.maximum(0.0, gather - a_fwd / s.cp)
        bwd = (np.maximum(0.0, gather - a_bwd / s.cp)
               + (s.cp - 1) * np.maximum(0.0, grads - a_bwd / s.cp) + grads)
    else:
        step = collective_time("send_recv", pair, kv_bytes, pair_node, dev)
        fwd = np.maximum(0.0, (s.cp - 1) * (step - a_fwd / s.cp))
        bwd = np.maximum(0.0, (s.cp - 1) * (2 * step - a_bwd / s.cp))
    many = s.cp > 1
    return np.where(many, fwd, 0.0), np.where(many, bwd, 0.0)


def _kv_repeat(model: ModelSpec, s: Shard, elem_bytes: float) -> tuple[np.ndarray, np.ndarray]:
    """(forward bytes, kernels) of copying grouped keys and values out to one head per query
    head before attention (a stack with ``elementwise.kv_repeat``: torchtitan's
    ``repeat_kv``, an expand + reshape that materialises the copy): read the key/value width,
    write the query-head width, for keys and values; 0 without GQA or on stacks whose
    attention takes grouped heads."""
    on = _repeats_kv(model, s)
    if on is False:
        return np.zeros(()), np.zeros(())
    kvw = model.kv_heads * model.head_size
    full = model.num_attention_heads * model.head_size
    nbytes = 2.0 * s.tokens * (kvw + full) / s.tp * elem_bytes
    return np.where(on, nbytes, 0.0), np.where(on, 2.0, 0.0)


def kv_stash_width(model: ModelSpec, s: Shard) -> np.ndarray:
    """Width of the keys plus values attention keeps for its backward, per token before
    tensor parallelism: the grouped heads, or one per query head where the stack copies them
    out first (:func:`_kv_repeat`)."""
    kvw = 2.0 * model.kv_heads * model.head_size
    full = 2.0 * model.num_attention_heads * model.head_size
    on = _repeats_kv(model, s)
    if isinstance(on, bool):
        return np.asarray(full if on else kvw)
    return np.where(on, full, kvw)


def _repeats_kv(model: ModelSpec, s: Shard) -> bool | np.ndarray:
    """The stack copies grouped keys and values out per query head (per candidate where
    some are compiled)."""
    gqa = model.num_attention_heads > model.kv_heads
    r = s.ew("kv_repeat")
    if isinstance(r, float):
        return bool(r) and gqa
    return r.astype(bool) & gqa


def model_seq_q(s: Shard) -> float | np.ndarray:
    return s.seq / s.cp


Shape = tuple[np.ndarray | float, np.ndarray | float]


def _attn_proj_shapes(model: ModelSpec, tp: np.ndarray) -> tuple[list[Shape], list[Shape]]:
    """(input projections, output projection) GEMM (n, k) shapes on one TP rank."""
    h = float(model.hidden_size)
    if model.uses_mla:
        assert model.kv_lora_rank is not None and model.qk_rope_head_dim is not None
        a = model.num_attention_heads
        kv_up = a * (model.q_width / a - model.qk_rope_head_dim + model.v_width / a)
        ins: list[Shape] = []
        if model.q_lora_rank:
            ins += [(float(model.q_lora_rank), h), (model.q_width / tp, float(model.q_lora_rank))]
        else:
            ins += [(model.q_width / tp, h)]
        ins += [(float(model.kv_lora_rank + model.qk_rope_head_dim), h),
                (kv_up / tp, float(model.kv_lora_rank))]
        return ins, [(h, model.v_width / tp)]
    qkv = (model.q_width + 2 * model.kv_heads * model.head_size) / tp
    return [(qkv, h)], [(h, model.v_width / tp)]


def linear_sequence(model: ModelSpec, tp: np.ndarray) -> list[Shape]:
    """A block's linear layers in forward order on one TP rank, one GEMM (n, k) per
    ``nn.Linear`` as torchtitan's models define them: wq, wk, wv, wo, then w1, w3, w2 for a
    gated MLP (w1, w2 otherwise); MLA's projections in their own order. The order is what
    torchtitan's per-op selective recompute counts (:func:`op_sac_linears`)."""
    h = float(model.hidden_size)
    if model.uses_mla:
        ins, outs = _attn_proj_shapes(model, tp)
    else:
        kv = model.kv_heads * model.head_size / tp
        ins, outs = [(model.q_width / tp, h), (kv, h), (kv, h)], [(h, model.v_width / tp)]
    f = model.intermediate_size / tp
    ffn: list[Shape] = [(f, h), (f, h), (h, f)] if model.gated_mlp else [(f, h), (h, f)]
    return ins + outs + ffn


def op_sac_linears(model: ModelSpec, tp: np.ndarray) -> tuple[list[Shape], list[Shape]]:
    """(saved, recomputed) linear layers of a dense block under torchtitan's per-op selective
    recompute: every mm output is saved except every second one (the 2nd, 4th, … of the
    block: pytorch/torchtitan@9dec370a torchtitan/parallelisms/parallelize_llama.py
    _custom_policy, ``mm_count % 2 == 0`` → recompute; costmodel/data/stacks/torchtitan.json)."""
    seq = linear_sequence(model, tp)
    return seq[0::2], seq[1::2]


def _tp_overlap_gemms(T: np.ndarray, s: Shard, g: TPCommGemms, col: list[list[Shape]],
                      row: list[list[Shape]], h: float, E: float, dev: Device
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(forward, input-gradient, weight-gradient) time that a stack's TP overlap adds to one
    block over the same GEMMs run whole, as the stack runs them (``g``: its
    ``overlap.tp_comm_gemms``, with the sources in costmodel/data/stacks/*.json).

    ``col`` are the column-parallel layers' GEMM groups (QKV, the MLP's input projection: an
    all-gather feeds each forward, a reduce-scatter follows each input gradient), ``row`` the
    row-parallel ones (attention and MLP output: a reduce-scatter follows each forward, an
    all-gather of the output gradient feeds each input gradient); a group's input-gradient
    GEMM has the forward's m·n·k. A GEMM split into ``splits`` row chunks with ``streams`` of
    them in flight runs at the rate of ``streams·T/splits`` rows (capped at T), ``T / rows``
    times (PyTorch's symmetric-memory fused ops, torch 2.13 ``torch/distributed/
    _symmetric_memory/__init__.py``; Transformer Engine's ``CommOverlapBase::split_overlap_rs``
    and ``CommOverlapP2PBase`` ring exchange). A GEMM beside a collective that holds
    ``comm_sms`` SMs runs on the rest, at ``sms / (sms - comm_sms)`` of its time (TE's
    ``set_sm_margin``: compute-bound GEMMs scale with SMs). PyTorch's reduce-scatter also sums
    the tp partials in a separate kernel, and its all-gather first copies the local shard
    into the symmetric buffer: two of each per pass."""
    tp = np.asarray(s.tp, dtype=float)
    margin = dev.sms / max(dev.sms - g.comm_sms, 1.0)
    groups = {"col": col, "row": row}
    whole = {k: np.asarray(sum((_gemms(T, x, dev)[0] for x in v), np.zeros(())))
             for k, v in groups.items()}
    chunked: dict[tuple[str, int | str], np.ndarray] = {}

    def split(side: str, splits: int | str, scale: float = 1.0) -> np.ndarray:
        # a side's GEMMs in row chunks, each (side, splits) evaluated once: the forward and
        # the input gradients of a group have the same m·n·k
        if (side, splits) not in chunked:
            n = tp if splits == "tp" else float(splits)
            rows = np.minimum(g.streams * T / n, T)
            chunked[side, splits] = np.asarray(sum(
                (T / rows * _gemms(rows, x, dev)[0] for x in groups[side]), np.zeros(())))
        return np.maximum(scale * chunked[side, splits] - whole[side], 0.0)

    fwd = split("col", g.gather_splits) + split("row", g.scatter_splits, margin)
    bwd_in = split("row", g.gather_splits)
    if g.backward == "dgrad":
        bwd_in = bwd_in + split("col", g.scatter_splits)
        bwd_w = np.zeros_like(fwd)
    else:  # bulk collectives beside the column-parallel input- and weight-gradient GEMMs
        bulk = (margin - 1.0) * whole["col"]
        bwd_in, bwd_w = bwd_in + bulk, bulk + np.zeros_like(fwd)
    shard = T / tp * h
    mem = np.zeros_like(fwd)
    if g.local_copy:
        mem = mem + 2.0 * mem_time(2.0 * shard * s.gather_bytes(E), dev)
    if g.partial_reduction:
        mem = mem + 2.0 * mem_time(T * h * E + shard * E, dev)
    return fwd + mem, bwd_in + mem, bwd_w


def block_cost(model: ModelSpec, s: Shard, dev: Device, moe: bool = False) -> BlockCost:
    """Cost of one transformer block (dense, or MoE when ``moe``)."""
    h = float(model.hidden_size)
    T, Tsp = s.tokens, s.sp_tokens
    gated = 2.0 if model.gated_mlp else 1.0
    dropout = model.hidden_dropout > 0
    E = dev.elem_bytes

    # ---- attention projections and core
    ins, outs = _attn_proj_shapes(model, s.tp)
    t_proj, fl_proj = _gemms(T, ins + outs, dev)
    n_proj = len(ins) + len(outs)
    a_fwd, a_bwd, fl_attn, ka_fwd, ka_bwd = _attention(model, s, dev, moe)

    # ---- FFN
    if moe:
        t_ffn, fl_ffn, n_ffn, ep_fwd = _moe_ffn(model, s, dev)
    else:
        f = model.intermediate_size / s.tp
        t_ffn, fl_ffn = _gemms(T, [(gated * f, h), (h, f)], dev)
        n_ffn, ep_fwd = np.asarray(2.0), np.zeros_like(T)
    ffn_width = (model.expert_ffn * model.num_experts_per_tok if moe and model.num_experts_per_tok
                 else model.intermediate_size) / s.tp

    # ---- memory-bound kernels (forward bytes): 2 norms, 2 bias-dropout-adds, activation,
    # rope and the GQA key/value expansion, as the stack runs them (its ``elementwise``
    # bytes per 16-bit element, scaled to the job's element size)
    wide = E / ELEM
    norm_b = s.ew("norm_bytes") * wide * Tsp * h
    bda_b = 2 * (3.0 * E + (1.0 if dropout else 0.0)) * Tsp * h
    act_coef, act_k = ((s.ew("act_bytes_gated"), s.ew("act_kernels_gated")) if model.gated_mlp
                       else (s.ew("act_bytes_plain"), s.ew("act_kernels_plain")))
    act_b = act_coef * wide * T * ffn_width
    rope = model.position_embedding == "rope"
    rope_b = (s.ew("rope_bytes") * wide * T * (model.q_width + model.kv_heads * model.head_size)
              / s.tp if rope else 0.0 * T)
    rope_k = s.ew("rope_kernels") if rope else 0.0
    kv_b, kv_k = _kv_repeat(model, s, E)
    norm_k = s.ew("norm_kernels")
    n_mem = 2.0 * norm_k + 2.0 + act_k + rope_k + kv_k
    t_mem_fwd = (2 * mem_time(norm_b, dev, norm_k) + mem_time(bda_b / 2, dev) * 2
                 + mem_time(act_b, dev, act_k) + mem_time(rope_b, dev, rope_k)
                 + mem_time(kv_b, dev, kv_k))
    t_mem_bwd = 2.0 * t_mem_fwd

    # ---- FP8 casts of the linear layers' inputs (forward) and output gradients (backward)
    k_tok = float(model.num_experts_per_tok or 1) if moe else 1.0
    qkv_out = sum((np.asarray(n, dtype=float) for n, _ in ins), np.zeros(()))
    cast_f, cast_b, kc_f, kc_b = _fp8_casts(
        s.fp8, [T * h, T * model.v_width / s.tp, T * k_tok * h, T * ffn_width],
        [T * qkv_out, T * h, T * gated * ffn_width, T * k_tok * h], dev)

    # ---- tensor-parallel collectives: 2 fwd + 2 bwd all-reduces (or AG+RS pairs with SP)
    act_bytes = T * h * E
    tp_node = np.minimum(s.tp, s.gpus_per_node)
    ar = collective_time("all_reduce", s.tp, act_bytes, tp_node, dev)
    agrs = (collective_time("all_gather", s.tp, T * h * s.gather_bytes(E), tp_node, dev)
            + collective_time("reduce_scatter", s.tp, act_bytes, tp_node, dev))
    tp_one = np.where(s.sp, agrs, ar)
    tp_fwd = 2.0 * tp_one
    tp_bwd = 2.0 * tp_one
    n_tp = np.where(s.tp > 1, np.where(s.sp, 4.0, 2.0), 0.0)

    # ---- context parallel: the exchange of key/value blocks, as the stack runs it
    cp_fwd, cp_bwd = _cp_exchange(model, s, dev, a_fwd, a_bwd)

    # ---- totals with the host-dispatch floor
    gemm_fwd = t_proj + t_ffn
    k_fwd = n_proj + n_ffn + ka_fwd + n_mem + n_tp + kc_f
    k_bwd_in = n_proj + n_ffn + ka_bwd + 2 * n_mem + n_tp + kc_b
    k_bwd_w = n_proj + n_ffn
    gpu_fwd = gemm_fwd + a_fwd + t_mem_fwd + cast_f
    comm_f = tp_fwd + cp_fwd + ep_fwd
    comm_b = tp_bwd + cp_bwd + ep_fwd
    # TP overlap: the collective hides behind the GEMMs it is fused with. Where the stack says
    # how it runs them (overlap.tp_comm_gemms) they pay for the chunking and the SMs the
    # collective holds, and a stack that fuses only all-gathers and reduce-scatters
    # (PyTorch's micro-pipelined TP) needs sequence parallelism and hides each backward
    # collective behind its input-gradient GEMM alone (an MoE block: its attention
    # projections' GEMMs only, the experts' are left whole). Everywhere a fraction of the hidden
    # part is still paid for the transfers' share of HBM and SMs (Calculon's processor_usage,
    # calculon-ai/calculon systems/*.json).
    tg = s.tp_gemms
    overl = s.tp_overlap & (s.tp > 1)
    if tg is not None and tg.needs_sequence_parallel:
        overl = overl & s.sp
    extra_f = extra_b = extra_w = np.zeros(())
    if tg is not None and np.any(overl):
        ffn_col: list[list[Shape]] = [] if moe else [[(gated * f, h)]]
        ffn_row: list[list[Shape]] = [] if moe else [[(h, f)]]
        ef, eb, ew = _tp_overlap_gemms(T, s, tg, [ins, *ffn_col], [outs, *ffn_row], h, E, dev)
        extra_f, extra_b, extra_w = (np.where(overl, x, 0.0) for x in (ef, eb, ew))
    u = dev.profile.eff.collectives["intra_node"].overlap_compute_cost
    hide_b = gemm_fwd if tg is not None and tg.backward == "dgrad" else 2 * gemm_fwd
    exposed_f = np.where(overl, np.maximum(0.0, tp_fwd - gemm_fwd)
                         + u * np.minimum(tp_fwd, gemm_fwd), tp_fwd) + cp_fwd + ep_fwd
    exposed_b = np.where(overl, np.maximum(0.0, tp_bwd - hide_b)
                         + u * np.minimum(tp_bwd, hide_b), tp_bwd) + cp_bwd + ep_fwd
    fwd = np.maximum(gpu_fwd + extra_f + exposed_f, k_fwd * dev.host_dispatch)
    bwd_in_gpu = gemm_fwd + a_bwd + t_mem_bwd + cast_b + extra_b
    bwd_in = np.maximum(bwd_in_gpu + exposed_b, k_bwd_in * dev.host_dispatch)
    bwd_w = np.maximum(gemm_fwd + extra_w, k_bwd_w * dev.host_dispatch)

    # ---- a measured block of exactly this shape replaces the modelled compute (its measured
    # forward/backward contain the kernels, launches and TP collectives of that run); the
    # backward splits into input and weight gradient in the model's own ratio
    measured = _measured_block(model, s, dev, moe)
    split_in = split_w = None
    if measured is not None:
        m_f, m_b, m_split = measured
        share_w = bwd_w / np.maximum(bwd_in + bwd_w, 1e-30)
        fwd = np.full_like(np.asarray(fwd, dtype=float), m_f)
        bwd_in = np.full_like(np.asarray(bwd_in, dtype=float), m_b) * (1 - share_w)
        bwd_w = np.full_like(np.asarray(bwd_w, dtype=float), m_b) * share_w
        if m_split is not None:
            # a measured split backward (two autograd passes) replaces the even split: what a
            # zero-bubble schedule's I and W actions take
            split_in = np.full_like(bwd_in, m_split[0])
            split_w = np.full_like(bwd_w, m_split[1])

    # ---- recompute (Korthikanti et al. 2022 §5): full re-runs the block forward in backward;
    # selective re-runs core attention only, or on torchtitan (per-op policy) every second
    # linear layer and every memory-bound kernel, keeping attention (a dense block; MoE
    # blocks keep the core-attention rule)
    flops_fwd = fl_proj + fl_ffn + fl_attn
    if s.op_sac and not moe:
        _, again = op_sac_linears(model, s.tp)
        t_again, fl_sel = _gemms(T, again, dev)
        sel = np.maximum(t_again + t_mem_fwd + cast_f,
                         (len(again) + n_mem + kc_f) * dev.host_dispatch)
    else:
        sel = np.maximum(a_fwd, ka_fwd * dev.host_dispatch)
        fl_sel = fl_attn
    recompute = np.where(s.rc == 2, fwd, np.where(s.rc == 1, sel, 0.0))
    flops_rc = np.where(s.rc == 2, flops_fwd, np.where(s.rc == 1, fl_sel, 0.0))
    return BlockCost(
        fwd=fwd, bwd_input=bwd_in + recompute, bwd_weight=bwd_w, recompute=recompute,
        comm_fwd=comm_f, comm_bwd=comm_b, tp_comm=tp_fwd + tp_bwd, cp_comm=cp_fwd + cp_bwd,
        ep_comm=2 * ep_fwd, flops_fwd=flops_fwd, flops_recompute=flops_rc,
        bwd_input_split=None if split_in is None else split_in + recompute,
        bwd_weight_split=split_w,
    )


def _measured_block(model: ModelSpec, s: Shard, dev: Device, moe: bool
                    ) -> tuple[float, float, tuple[float, float] | None] | None:
    """The profile's measured (fwd, bwd, split (input, weight) backward or None) of this dense
    block shape, for a single plan."""
    if moe or not dev.measured or not dev.profile.measurements.layers or s.b.size != 1:
        return None
    if not (np.all(s.cp == 1) and not np.any(s.sp)):
        return None
    key = (model.hidden_size, model.intermediate_size, model.num_attention_heads,
           model.kv_heads, s.seq, int(s.b), int(s.tp), dev.precision)
    whole = dev.profile.layer_time(key)
    if whole is None:
        return None
    return whole[0], whole[1], dev.profile.layer_split_time(key)


def _moe_ffn(model: ModelSpec, s: Shard, dev: Device
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Routed + shared experts of one MoE block: (time, flops, gemm count, all-to-all time).

    Tokens are assumed balanced across experts (the auxiliary-loss / bias balancing of
    Mixtral and DeepSeek-V3): each EP rank computes T·k token-expert pairs over E/ep local
    experts, as grouped GEMMs of T·k·ep/E rows each; expert weights are TP-sharded like the
    dense MLP (Megatron-Core's default expert_tensor_parallel_size = tp). Dispatch and combine
    are all-to-alls of T·k·h elements over the EP group (Megatron-Core
    ``MoEAlltoAllTokenDispatcher``).
    """
    assert model.num_local_experts is not None and model.num_experts_per_tok is not None
    h = float(model.hidden_size)
    T = s.tokens
    k, E = float(model.num_experts_per_tok), float(model.num_local_experts)
    gated = 2.0 if model.gated_mlp else 1.0
    fe = model.expert_ffn / s.tp
    local = E / s.ep
    rows = T * k * s.ep / E
    t_exp = local * (gemm_time(rows, gated * fe, h, dev, linear=True)
                     + gemm_time(rows, h, fe, dev, linear=True))
    fl = 2.0 * T * k * (gated * fe * h + h * fe)
    t_router = gemm_time(T, E, h, dev)
    fl = fl + 2.0 * T * E * h
    shared_f = (model.n_shared_experts * model.expert_ffn
                + (model.shared_expert_intermediate_size or 0))
    if shared_f:
        t_sh, fl_sh = _gemms(T, [(gated * shared_f / s.tp, h), (h, shared_f / s.tp)], dev)
        t_exp, fl = t_exp + t_sh, fl + fl_sh
    a2a_bytes = T * k * h * dev.elem_bytes
    ep_node = np.clip(np.floor(s.gpus_per_node / s.tp), 1, s.ep)
    a2a = 2.0 * collective_time("all_to_all", s.ep, a2a_bytes, ep_node, dev)
    n_kernels = 2.0 * local + 1.0  # two GEMMs per local expert + the router
    return np.asarray(t_exp + t_router), np.asarray(fl), np.asarray(n_kernels), a2a


@dataclass
class EdgeCost:
    """Work of the vocabulary layers on one rank, one micro-batch."""

    embed_fwd: np.ndarray
    embed_bwd: np.ndarray
    head_fwd: np.ndarray
    head_bwd_input: np.ndarray
    head_bwd_weight: np.ndarray
    flops_head: np.ndarray


def edge_cost(model: ModelSpec, s: Shard, dev: Device) -> EdgeCost:
    """Embedding (first stage) and final norm + LM head + cross-entropy (last stage).

    The embedding is vocabulary-parallel over TP (Megatron ``VocabParallelEmbedding``): each
    rank looks up its V/tp rows and the partial outputs are summed over the TP group, an
    all-reduce of T·h elements (a reduce-scatter with sequence parallelism:
    ``reduce_from_tensor_model_parallel_region`` / ``reduce_scatter_to_sequence_parallel_region``;
    its backward needs no communication). The LM head is vocabulary-parallel too: a
    (T × h)·(h × V/tp) GEMM. The loss follows Megatron-Core's ``compute_language_model_loss``
    (``logits.float()``) and ``tensor_parallel/cross_entropy.py::VocabParallelCrossEntropy``,
    whose passes over the T·V/tp logits cost, in bytes per logit: forward = cast bf16→fp32
    (2 + 4), max (4), subtract (4 + 4), exp (4 + 4), sum (4), divide to softmax (4 + 4) = 38;
    backward = softmax − one-hot and scale by the loss gradient (4 + 4 + 4 + 4), cast of the
    gradient to bf16 (4 + 2) = 22.
    """
    h = float(model.hidden_size)
    T, Tsp = s.tokens, s.sp_tokens
    V = model.vocab_size / s.tp
    E = dev.elem_bytes
    emb_fwd = mem_time(2.0 * Tsp * h * E, dev) + (
        mem_time(2.0 * Tsp * h * E, dev) if model.position_embedding == "learned" else 0.0)
    tp_node = np.minimum(s.tp, s.gpus_per_node)
    emb_fwd = emb_fwd + np.where(
        s.sp, collective_time("reduce_scatter", s.tp, T * h * E, tp_node, dev),
        collective_time("all_reduce", s.tp, T * h * E, tp_node, dev))
    # dense fp32 gradient of the (sharded) table + scatter-add of the token rows
    emb_bwd = mem_time(V * h * 4.0, dev) + mem_time(2.0 * T * h * E, dev)
    head = gemm_time(T, V, h, dev)
    logits = T * V
    ce_fwd = 6 * dev.kernel_latency + logits * CE_FWD_BYTES / dev.hbm
    ce_bwd = 3 * dev.kernel_latency + logits * CE_BWD_BYTES / dev.hbm
    norm = mem_time(2.0 * Tsp * h * E, dev)
    ce_comm = 3.0 * collective_time("all_reduce", s.tp, T * 4.0, tp_node, dev)
    k_head_f, k_head_b = 10.0, 6.0
    head_fwd = np.maximum(head + ce_fwd + norm + ce_comm, k_head_f * dev.host_dispatch)
    head_bwd_in = np.maximum(head + ce_bwd + 2 * norm, k_head_b * dev.host_dispatch)
    emb_fwd = np.maximum(emb_fwd, 3.0 * dev.host_dispatch)
    emb_bwd = np.maximum(emb_bwd, 3.0 * dev.host_dispatch)
    return EdgeCost(embed_fwd=emb_fwd, embed_bwd=emb_bwd, head_fwd=head_fwd,
                    head_bwd_input=head_bwd_in, head_bwd_weight=head,
                    flops_head=2.0 * T * V * h)
