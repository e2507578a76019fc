"""Bulk evaluation of many candidate plans of one pool at once (the search's hot path).

Candidates are numpy arrays (one entry per plan). The per-block, vocabulary-layer,
collective, memory and data-parallel formulas are the very functions the single-plan
:func:`costmodel.estimate` uses; only the pipeline differs: instead of simulating each
schedule, closed forms give the makespan from the busiest rank's per-micro-batch time ``t``,
the sum over ranks ``Σ`` and one chunk's forward / input-gradient / weight-gradient times:

* GPipe, 1F1B (Narayanan et al. 2021 §2.2): ``(m − 1)·t + Σ``
* Interleaved1F1B with v chunks (ibid. §2.2.2): ``m·t + (Σ − t)/v``
* InterleavedZeroBubble (ZB-H1 for v = 1; Qi et al. 2023 §3): ``m·t + (p − 1)·(F + I − W)``
  per chunk, floored at the start-up wait ``(p − 1)·max(F, I, W)``
* ZBVZeroBubble, DualPipeV (ibid. §4; DeepSeek-V3 §3.2.1): ``m·t + (p − 1)·max(F, F + I − 2W)``

plus send/recv: ``2(p − 1)·L`` to fill and drain and ``2(p − 1)/p·L`` for every further
micro-batch of the 1F1B family (the round trip that paces rank 0; see the simulator tests).
These equal the simulator for uniform stages (tested) and bound it closely otherwise; the
search re-evaluates its finalists with the exact simulator.

Chimera and BitPipe (two model replicas per pipeline, :mod:`costmodel.pipeline.bidirectional`)
are not evaluated in bulk: their orders have no closed form here (direct concatenation of
basic units leaves schedule-dependent intermediate bubbles) and their memory holds two stage
copies per rank. :data:`SCHEDULES` leaves them out, so the search's enumeration
(``solver.space.SCHEDULE_VARIANTS``) never offers them; :func:`costmodel.estimate` evaluates
them one plan at a time.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from costmodel.data_parallel import (
    dp_comm,
    dp_groups,
    grad_comm_bytes,
    optimizer_time,
    zero3_exposure_floor,
    zero3_per_microbatch,
    zero3_traffic_floor,
)
from costmodel.flops import model_flops_per_token
from costmodel.layer_cost import ELEM, BlockCost, EdgeCost, Shard, block_cost, edge_cost
from costmodel.memory import (
    GIB,
    block_activation_bytes,
    block_working_bytes,
    embedding_activation_bytes,
    fit_codes,
    logits_bytes,
    overhead_bytes,
    stack_state_rules,
    state_coefficients,
    usable_bytes,
    zero3_gathered_params,
)
from costmodel.ops import Device, collective_time
from costmodel.profile import CalibrationProfile, default_profile
from costmodel.specs import degrees
from costmodel.specs.cluster import GPUPool
from costmodel.specs.model import ModelSpec
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.training import TrainingSpec
from costmodel.stacks.stack import execution

SCHEDULES = ("GPipe", "1F1B", "Interleaved1F1B", "InterleavedZeroBubble", "ZBVZeroBubble",
             "DualPipeV")
SCHEDULE_CODES = {name: i for i, name in enumerate(SCHEDULES)}
RECOMPUTES = ("none", "selective", "full")


@dataclass
class Candidates:
    """Plans as parallel arrays (all of one pool)."""

    tp: np.ndarray
    pp: np.ndarray
    dp: np.ndarray
    cp: np.ndarray
    ep: np.ndarray
    mbs: np.ndarray
    v: np.ndarray
    schedule: np.ndarray
    """Index into :data:`SCHEDULES`."""
    recompute: np.ndarray
    """Index into :data:`RECOMPUTES`."""
    sp: np.ndarray
    zero: np.ndarray
    rc_layers: np.ndarray | None = None
    """``plan.recompute_num_layers`` (partial recompute: the first N layers of each chunk
    recomputed, with recompute 'full'); 0 = null (every layer). None = all 0."""

    def __post_init__(self) -> None:
        n = len(self.tp)
        if self.rc_layers is None:
            self.rc_layers = np.zeros(n, dtype=np.int64)
        for f in fields(self):
            arr = np.asarray(getattr(self, f.name))
            if arr.shape != (n,):
                raise ValueError(f"candidate array {f.name} has shape {arr.shape}, want ({n},)")
            setattr(self, f.name, arr)

    def __len__(self) -> int:
        return len(self.tp)

    @classmethod
    def concat(cls, parts: list[Candidates]) -> Candidates:
        """The candidates of ``parts``, one after the other."""
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                      for f in fields(cls)})

    def take(self, idx: slice | np.ndarray) -> Candidates:
        """The candidates at ``idx`` (a slice or an index array)."""
        return Candidates(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @property
    def gpus(self) -> np.ndarray:
        return self.tp * self.pp * self.dp * self.cp

    @property
    def nbytes(self) -> int:
        return sum(int(getattr(self, f.name).nbytes) for f in fields(self))

    @classmethod
    def grid(cls, **axes: list[Any]) -> Candidates:
        """Cartesian product of per-field value lists (missing fields take plan defaults).
        ``schedule`` and ``recompute`` accept names."""
        defaults: dict[str, list[Any]] = {
            "tp": [1], "pp": [1], "dp": [1], "cp": [1], "ep": [1], "mbs": [1], "v": [1],
            "schedule": ["1F1B"], "recompute": ["none"], "sp": [False], "zero": [1],
            "rc_layers": [0]}
        defaults.update(axes)
        names = list(defaults)
        combos = list(itertools.product(*(defaults[k] for k in names)))
        cols = {k: [c[i] for c in combos] for i, k in enumerate(names)}
        cols["schedule"] = [SCHEDULE_CODES[s] if isinstance(s, str) else s
                            for s in cols["schedule"]]
        cols["recompute"] = [RECOMPUTES.index(r) if isinstance(r, str) else r
                             for r in cols["recompute"]]
        return cls(**{k: np.array(v) for k, v in cols.items()})

    @classmethod
    def from_plans(cls, plans: list[ParallelPlan]) -> Candidates:
        return cls(
            tp=np.array([p.tp for p in plans]), pp=np.array([p.pp for p in plans]),
            dp=np.array([p.dp for p in plans]), cp=np.array([p.cp for p in plans]),
            ep=np.array([p.ep for p in plans]),
            mbs=np.array([p.micro_batch_size for p in plans]),
            v=np.array([p.virtual_stages for p in plans]),
            schedule=np.array([SCHEDULE_CODES[p.schedule] for p in plans]),
            recompute=np.array([RECOMPUTES.index(p.recompute) for p in plans]),
            sp=np.array([p.sequence_parallel for p in plans]),
            zero=np.array([p.zero_stage for p in plans]),
            rc_layers=np.array([p.recompute_num_layers or 0 for p in plans], dtype=np.int64),
        )

    def plan(self, i: int, pool: str | None = None, **extra: Any) -> ParallelPlan:
        assert self.rc_layers is not None
        k = int(self.rc_layers[i])
        return ParallelPlan(
            pool=pool, tp=int(self.tp[i]), pp=int(self.pp[i]), dp=int(self.dp[i]),
            cp=int(self.cp[i]), ep=int(self.ep[i]), micro_batch_size=int(self.mbs[i]),
            schedule=SCHEDULES[int(self.schedule[i])],
            virtual_stages=int(self.v[i]),
            recompute=RECOMPUTES[int(self.recompute[i])],
            sequence_parallel=bool(self.sp[i]), zero_stage=int(self.zero[i]),
            recompute_num_layers=k or None, **extra)


@dataclass
class BulkResult:
    valid: np.ndarray
    """Plans that satisfy every divisibility and schedule rule (others have inf step time)."""
    step_time_s: np.ndarray
    tokens_per_s: np.ndarray
    mfu: np.ndarray
    peak_bytes: np.ndarray
    fits: np.ndarray
    cost_per_hour: np.ndarray
    cost_per_million_tokens: np.ndarray
    pipeline_s: np.ndarray
    dp_exposed_s: np.ndarray
    lower_bound_s: np.ndarray
    """A step time no layer partition, schedule or overlap of this plan's degrees can beat:
    the average rank's work m·Σ/pp (the busiest rank does at least that), plus the optimizer
    step on the average rank's parameters and the last gradient bucket's reduction, which no
    overlap hides. Valid for the simulated estimate too (same per-layer costs)."""
    lower_bound_even_s: np.ndarray
    """A tighter bound for this plan with the default (even) layer split, for any schedule
    order: the last rank cannot start before micro-batch 0 has crossed every earlier stage
    (the pipeline fill), and then does all its own work; the busiest rank's work; the same
    serial part as :attr:`lower_bound_s`; and, whichever is larger, the critical chain of one
    micro-batch (its forward through all blocks, then its input gradient back) or, with
    ZeRO-3, the rank's gather and reduce-scatter traffic."""
    usable_bytes: float

    @property
    def peak_gib(self) -> np.ndarray:
        return self.peak_bytes / GIB

    @property
    def nbytes(self) -> int:
        return sum(int(getattr(self, f.name).nbytes) for f in fields(self)
                   if isinstance(getattr(self, f.name), np.ndarray))

    @classmethod
    def concat(cls, parts: list[BulkResult]) -> BulkResult:
        """The results of consecutive chunks of one pool's candidates, as one."""
        arrays = {f.name: np.concatenate([getattr(p, f.name) for p in parts])
                  for f in fields(cls) if f.name != "usable_bytes"}
        return cls(**arrays, usable_bytes=parts[0].usable_bytes)

    def with_rows(self, idx: np.ndarray, rows: BulkResult) -> BulkResult:
        """These results with those of candidates ``idx`` replaced by ``rows`` (their
        evaluation on their own: :func:`evaluate_bulk`'s ``fitting_only``)."""
        out = {}
        for f in fields(self):
            if f.name == "usable_bytes":
                continue
            a = getattr(self, f.name).copy()
            a[idx] = getattr(rows, f.name)
            out[f.name] = a
        return BulkResult(**out, usable_bytes=self.usable_bytes)

    def repriced(self, c: Candidates, pool: GPUPool) -> BulkResult:
        """These results for a pool of the same hardware at ``pool``'s price (step times and
        memory do not depend on the price)."""
        price, cost_m = _prices(pool, c.gpus, self.tokens_per_s)
        return replace(self, cost_per_hour=price, cost_per_million_tokens=cost_m)


def _prices(pool: GPUPool, gpus: np.ndarray, tps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """$ per hour of ``gpus`` GPUs of ``pool`` and $ per million tokens at ``tps`` tokens/s."""
    price = pool.price_per_gpu_hour * gpus
    with np.errstate(divide="ignore", invalid="ignore"):
        cost_m = np.where(tps > 0, price / 3600.0 / np.maximum(tps, 1e-30) * 1e6, np.inf)
    return price, cost_m


def valid_mask(model: ModelSpec, training: TrainingSpec, pool: GPUPool, c: Candidates
               ) -> np.ndarray:
    """The rules of :func:`costmodel.specs.request.check_plan`, vectorized."""
    L = model.num_hidden_layers
    tp, pp, dp, cp, ep, v = c.tp, c.pp, c.dp, c.cp, c.ep, c.v
    ok = degrees.holds(degrees.tensor_parallel(model, tp)
                       + degrees.expert_parallel(model, dp, cp, ep)
                       + degrees.batch(training.global_batch_size, dp, c.mbs)
                       + degrees.context_parallel(training.seq_len, cp))
    # sequence parallelism at tp 1 is accepted and has no effect (check_plan: lenient_plan)
    ok &= pp * v <= L
    per = dp * c.mbs
    ok &= tp * pp * dp * cp <= pool.num_gpus
    m = training.global_batch_size // np.maximum(per, 1)
    s = c.schedule
    single = (s == SCHEDULE_CODES["GPipe"]) | (s == SCHEDULE_CODES["1F1B"])
    ok &= ~single | (v == 1)
    # one pipeline rank: only the trivial schedule (multi-stage ones add nothing there)
    ok &= (pp > 1) | ((s == SCHEDULE_CODES["1F1B"]) & (v == 1))
    # the even split must leave every chunk a layer (costmodel.specs.request.check_plan)
    ok &= (L // np.maximum(pp, 1)) >= v
    ok &= (s != SCHEDULE_CODES["1F1B"]) | (m >= pp)
    ok &= (s != SCHEDULE_CODES["Interleaved1F1B"]) | (v >= 2)
    vsched = (s == SCHEDULE_CODES["ZBVZeroBubble"]) | (s == SCHEDULE_CODES["DualPipeV"])
    ok &= ~vsched | (v == 2)
    ok &= (s != SCHEDULE_CODES["DualPipeV"]) | (m >= 2 * pp)
    inter = ((s == SCHEDULE_CODES["Interleaved1F1B"])
             | (s == SCHEDULE_CODES["InterleavedZeroBubble"]))
    rounds = np.maximum(1, m // np.maximum(pp, 1))
    ok &= ~inter | (m % rounds == 0)
    # partial recompute (check_plan's _check_recompute_layers): with full recompute only, and
    # at most the largest chunk of the even split (the middle ranks' ceil(L/pp) layers over v)
    k = np.asarray(c.rc_layers)
    ok &= (k == 0) | ((c.recompute == RECOMPUTES.index("full")) & (k <= largest_chunk(L, pp, v)))
    if training.precision not in pool.gpu_type.peak_tflops:
        ok &= False
    return np.asarray(ok, dtype=bool)


def largest_chunk(num_layers: int, pp: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Layers of the largest chunk of the even split: ⌈⌈L/pp⌉/v⌉ (the middle ranks' layers of
    :func:`costmodel.specs.request.rank_layer_split` over their v chunks, earlier chunks
    first), the most ``plan.recompute_num_layers`` may be (check_plan)."""
    per_rank = -(-num_layers // np.maximum(np.asarray(pp), 1))
    return np.asarray(-(-per_rank // np.maximum(np.asarray(v), 1)))


def recomputed_layers(layers: np.ndarray, v: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Layers a pipeline rank with ``layers`` layers over ``v`` chunks recomputes under partial
    recompute of the first ``k`` layers per chunk (0 = every layer): the rank's layers split
    as :func:`costmodel.specs.request.stage_layers` splits them (``layers mod v`` chunks of
    ⌊layers/v⌋ + 1, the rest of ⌊layers/v⌋), each chunk recomputing min(k, its layers)
    (:meth:`costmodel.specs.plan.ParallelPlan.recomputed_layers`, Megatron's 'block'
    method)."""
    q = np.floor(layers / v)
    e = layers - q * v
    part = e * np.minimum(k, q + 1) + (v - e) * np.minimum(k, q)
    return np.where(k > 0, part, layers)


class _Rows:
    """The candidates where ``mask`` holds, for terms that only those need (ZeRO-3's
    per-micro-batch traffic, ZeRO 0-2's per-step reduction): their inputs taken at those rows
    (:meth:`of`) and the result put back with 0 elsewhere (:meth:`scatter`). The formulas are
    elementwise, so the values are those of ``np.where(mask, f(all rows), 0)`` without
    computing the other rows (a quarter to three quarters of a pool's candidates each)."""

    def __init__(self, mask: np.ndarray) -> None:
        self.shape = mask.shape
        self.idx = np.flatnonzero(mask)
        self.any = len(self.idx) > 0

    def of(self, x: Any) -> Any:
        """``x`` at the rows (a scalar as it is)."""
        return np.broadcast_to(x, self.shape)[self.idx] if np.ndim(x) else x

    def scatter(self, values: np.ndarray) -> np.ndarray:
        out = np.zeros(self.shape)
        out[self.idx] = values
        return out


DISTINCT_TABLE_MAX = 1 << 22
"""Largest code space :func:`_distinct_rows` indexes with a lookup table (32 MiB of int64)."""


def _distinct_rows(cols: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of non-negative integer columns, in lexicographic order, as floats
    (one column per row of the result), and each input row's index among them.

    Rows are coded in mixed radix (each column's max + 1), which keeps the lexicographic
    order; where the code space is small (the search's degrees and sizes) a lookup table
    gives the distinct codes and the inverse in linear time, else :func:`numpy.unique`."""
    radix = [int(col.max()) + 1 if len(col) else 1 for col in cols]
    code = np.zeros(len(cols[0]), dtype=np.int64)
    for col, r in zip(cols, radix, strict=True):
        code = code * r + col
    space = int(np.prod(radix, dtype=object))
    if space <= DISTINCT_TABLE_MAX:
        present = np.zeros(space, dtype=bool)
        present[code] = True
        codes = np.flatnonzero(present)
        lut = np.empty(space, dtype=np.int64)
        lut[codes] = np.arange(len(codes))
        inv = lut[code]
    else:
        codes, inv = np.unique(code, return_inverse=True)
        inv = inv.reshape(-1)
    out = np.empty((len(cols), len(codes)))
    rest = codes.copy()
    for j in range(len(cols) - 1, -1, -1):  # decode, last column first
        out[j] = rest % radix[j]
        rest //= radix[j]
    return out, inv


def evaluate_bulk(model: ModelSpec, training: TrainingSpec, pool: GPUPool, c: Candidates,
                  profile: CalibrationProfile | None = None, attention: str = "flash",
                  overlap: bool = True, tp_overlap: bool = False,
                  rules_checked: bool = False, fitting_only: bool = False) -> BulkResult:
    """Step time, throughput, MFU, cost and peak memory of every candidate (see the module
    docstring for the pipeline closed forms), every one with ``attention`` (resolved for the
    request's stack and the pool's GPU) and the stack's FP8 recipe. ``rules_checked``: the
    caller kept only candidates :func:`valid_mask` accepts (the search's budget does), so
    the mask is not computed again.

    ``fitting_only``: the times of the candidates that do not fit are not computed, as a
    search drops those for their memory alone (about 70 % of a large pool's valid ones):
    memory of all first, then everything of those that fit, whose values are the same as in
    a full evaluation (each formula is elementwise); the others keep their memory, validity
    and price, with an infinite step time and bounds and no throughput."""
    def run(cands: Candidates, checked: bool, memory_only: bool) -> BulkResult:
        return _evaluate(model, training, pool, cands, profile, attention, overlap, tp_overlap,
                         checked, memory_only)

    if not fitting_only:
        return run(c, rules_checked, False)
    mem = run(c, rules_checked, True)
    idx = np.flatnonzero(mem.fits)
    if len(idx) == len(c):
        return run(c, True, False)
    return mem.with_rows(idx, run(c.take(idx), True, False))


def _evaluate(model: ModelSpec, training: TrainingSpec, pool: GPUPool, c: Candidates,
              profile: CalibrationProfile | None, attention: str, overlap: bool,
              tp_overlap: bool, rules_checked: bool, memory_only: bool) -> BulkResult:
    """:func:`evaluate_bulk` of ``c``, in phases: the layout of each plan (layers and
    parameters per rank), its memory, and (unless ``memory_only``) its step time and
    bounds."""
    prof = profile or default_profile()
    valid = (np.ones(len(c), dtype=bool) if rules_checked
             else valid_mask(model, training, pool, c))
    precision = training.precision if training.precision in pool.gpu_type.peak_tflops else "bf16"
    dev = Device.from_pool(pool, precision, prof)
    ex = execution(training.model_copy(update={"precision": precision}), attention,
                   pool.gpu_type)
    flash = ex.kernel != "unfused"
    grad_ov, gather_ov, tp_ov = ex.overlaps(overlap, overlap, tp_overlap, np.asarray(c.pp))
    tp_overlap = bool(tp_ov)
    f64 = {k: np.asarray(getattr(c, k), dtype=float) for k in ("tp", "pp", "dp", "cp", "ep",
                                                               "mbs", "v", "zero")}
    tp, pp, dp, cp, ep, v = (f64[k] for k in ("tp", "pp", "dp", "cp", "ep", "v"))
    zero = f64["zero"]
    # Per-layer physics depends only on (mbs, tp, cp, ep, sp, recompute): evaluate each
    # distinct combination once and gather (the same formulas, far fewer array elements).
    cols = [np.asarray(x, dtype=np.int64) for x in (c.mbs, c.tp, c.cp, c.ep, c.sp, c.recompute)]
    uniq, inv = _distinct_rows(cols)
    ush = Shard.for_stack(training.seq_len, pool.gpus_per_node, ex,
                   b=uniq[0], tp=uniq[1], cp=uniq[2],
                   ep=uniq[3], sp=uniq[4].astype(bool), rc=uniq[5].astype(np.int64), flash=flash,
                   tp_overlap=tp_overlap)
    # ---- layout: each plan's blocks, layers and parameters per rank
    L = float(model.num_hidden_layers)
    n_moe = float(model.num_moe_layers)
    n_dense = L - n_moe
    blocks: list[tuple[float, BlockCost, bool]] = []
    if n_dense:
        blocks.append((n_dense / L, block_cost(model, ush, dev, moe=False), False))
    if n_moe:
        blocks.append((n_moe / L, block_cost(model, ush, dev, moe=True), True))
    ushape = uniq[0].shape

    def per_layer(attr: str) -> np.ndarray:
        total = sum(w * np.broadcast_to(getattr(b, attr), ushape) for w, b, _ in blocks)
        return np.asarray(total)[inv]

    # partial recompute (plan.recompute_num_layers = k > 0): a rank recomputes only the first
    # k layers of each chunk; every other layer skips the recompute forward (the block cost's
    # ``recompute`` share of bwd_input) and keeps the stash of recompute 'none' (kept_blocks)
    k_rc = np.asarray(c.rc_layers, dtype=float)
    partial = k_rc > 0
    any_partial = bool(np.any(partial))
    ush_kept = ush
    if any_partial:
        ush_kept = Shard.for_stack(training.seq_len, pool.gpus_per_node, ex,
                            b=uniq[0], tp=uniq[1], cp=uniq[2], ep=uniq[3],
                            sp=uniq[4].astype(bool), rc=np.zeros_like(uniq[5], dtype=np.int64),
                            flash=flash, tp_overlap=tp_overlap)

    def unrecomputed(layers: np.ndarray) -> np.ndarray:
        """Layers of a rank with ``layers`` layers that partial recompute leaves alone."""
        if not any_partial:
            return np.asarray(0.0)
        return layers - recomputed_layers(layers, v, k_rc)
    m = training.global_batch_size / np.maximum(dp * f64["mbs"], 1.0)
    sched = c.schedule
    vshape = (sched == SCHEDULE_CODES["ZBVZeroBubble"]) | (sched == SCHEDULE_CODES["DualPipeV"])

    # layers per rank of the even split (costmodel.specs.request.rank_layer_split): the
    # remainder goes to the middle ranks first, the end ranks last
    base = np.floor(L / pp)
    extra = L - base * pp
    mid_layers = base + (extra > 0)
    first_layers = np.where(pp <= 2, base + (extra > 0), base + (extra >= pp - 1))
    last_layers = np.where(pp == 1, L, base)
    single = pp == 1
    rank_layers = np.where(single, L, np.maximum(np.maximum(first_layers, last_layers),
                                                 np.where(pp >= 3, mid_layers, 0.0)))

    # parameters per layer and per rank
    lp_dense, lp_moe_shared, lp_routed = (float(x) for x in model.block_param_split())
    # routed experts shard over ep as well and reduce over dp·cp/ep ranks: kept apart
    per_layer_dense = (n_dense * lp_dense + n_moe * lp_moe_shared) / L / tp
    per_layer_expert = n_moe * lp_routed / L / (tp * ep)
    per_layer_params = per_layer_dense + per_layer_expert
    expert_share = per_layer_expert / np.maximum(per_layer_params, 1e-30)
    emb_params = model.embedding_params() / tp
    out_params = model.output_params() / tp + np.where(
        (pp > 1) & model.tie_word_embeddings, model.vocab_size * model.hidden_size / tp, 0.0)
    first_params = first_layers * per_layer_params + emb_params + np.where(
        vshape | single, out_params, 0.0)
    last_params = last_layers * per_layer_params + out_params
    rank_params = np.where(single, L * per_layer_params + emb_params + out_params,
                           np.maximum(np.maximum(first_params, np.where(vshape, 0.0, last_params)),
                                      mid_layers * per_layer_params))
    p1 = pp - 1.0
    gpipe = sched == SCHEDULE_CODES["GPipe"]

    # ---- memory: the first rank (most in-flight micro-batches), the second (the most blocks with
    # nearly as many in flight) and the last (logits)
    act_layer = np.asarray(sum(w * block_activation_bytes(model, ush, moe)
                               for w, _, moe in blocks))[inv]
    working = np.max(np.stack([np.broadcast_to(block_working_bytes(model, ush, moe), ushape)
                               for _, _, moe in blocks]), axis=0)[inv]
    # partial recompute: the layers left alone stash what recompute 'none' stashes, and their
    # backward's transient peak (gradient buffers) counts where a rank has any of them
    act_kept = act_layer
    working_kept = working
    if any_partial:
        act_kept = np.asarray(sum(w * block_activation_bytes(model, ush_kept, moe)
                                  for w, _, moe in blocks))[inv]
        working_kept = np.max(np.stack([
            np.broadcast_to(block_working_bytes(model, ush_kept, moe), ushape)
            for _, _, moe in blocks]), axis=0)[inv]

    def acts(layers: np.ndarray) -> np.ndarray:
        """Stash of one micro-batch on a rank's ``layers`` blocks."""
        return layers * act_layer + unrecomputed(layers) * (act_kept - act_layer)

    def work(layers: np.ndarray) -> np.ndarray:
        """The rank's transient backward peak of one block."""
        return np.where(unrecomputed(layers) > 0, np.maximum(working, working_kept), working)
    inter_sched = ((sched == SCHEDULE_CODES["Interleaved1F1B"])
                   | (sched == SCHEDULE_CODES["InterleavedZeroBubble"]))
    # in-flight micro-batches in whole-rank units (torch's warm-up counts, in chunks / v)
    warm = np.where(sched == SCHEDULE_CODES["Interleaved1F1B"], 2.0, 1.0)
    infl_first = np.select(
        [gpipe, sched == SCHEDULE_CODES["1F1B"], inter_sched,
         sched == SCHEDULE_CODES["ZBVZeroBubble"]],
        [m, np.minimum(pp, m),
         np.minimum(m * v, (v - 1) * pp + warm * p1 + 1) / v, pp],
        default=pp + 0.5)  # DualPipeV: 2p + 1 half-size chunks on rank 0 (simulator)
    # zero-bubble schedules keep activations until the delayed W: about as many on every rank
    infl_last = np.select(
        [gpipe, sched == SCHEDULE_CODES["1F1B"], sched == SCHEDULE_CODES["Interleaved1F1B"]],
        [m, np.ones_like(m), np.minimum(m * v, (v - 1) * pp + 1) / v],
        default=infl_first)
    # the second rank: one warm-up micro-batch fewer than the first, but no vocabulary
    # layers, so with an embedding-aware split (fewer blocks on the end stages) it can hold
    # more (Llama-3-405B on pp 64: 2 blocks × 63 in flight against 1 × 64)
    infl_second = np.select(
        [gpipe, sched == SCHEDULE_CODES["1F1B"], inter_sched],
        [m, np.minimum(pp - 1, m),
         np.minimum(m * v, (v - 1) * pp + warm * (p1 - 1) + 1) / v],
        default=infl_first)
    infl_first = np.where(single, 1.0, infl_first)
    emb_act = np.broadcast_to(embedding_activation_bytes(model, ush), ushape)[inv]
    logit_b = np.broadcast_to(logits_bytes(model, ush), ushape)[inv]
    all_layers = np.full_like(pp, L)
    act_first = (acts(first_layers) + emb_act) * infl_first + work(first_layers) + np.where(
        vshape | single, logit_b, 0.0)
    act_first = np.where(single, acts(all_layers) + emb_act + work(all_layers) + logit_b,
                         act_first)
    act_last = acts(last_layers) * infl_last + work(last_layers) + logit_b
    # ... and with a V-shape schedule every rank but the first holds two chunks of blocks and
    # no vocabulary layers, with about the first rank's in-flight count: on pp 2 that is the
    # last rank, with the even split's last-rank layers
    second_layers = np.where(pp >= 3, mid_layers, last_layers)
    act_second = acts(second_layers) * infl_second + work(second_layers)
    # the activation formulas count bf16 elements; fp32 keeps twice the bytes
    act_first = act_first * (dev.elem_bytes / ELEM)
    act_last = act_last * (dev.elem_bytes / ELEM)
    act_second = act_second * (dev.elem_bytes / ELEM)
    n_groups = (1.0 + (tp > 1) + (pp > 1) + (dp > 1) + (cp > 1) + (ep > 1))
    over = overhead_bytes(prof, n_groups)
    gathered = np.where(zero >= 3, zero3_gathered_params(model, "block", tp), 0.0)
    d_dense = dp * cp
    d_exp = np.maximum(1.0, dp * cp / ep)

    # weights + gradients + optimizer states + the stack's extras, per parameter once: a
    # rank's bytes are params · (dense rate + extra) + its expert params · (expert − dense
    # rate) + the ZeRO-3 gathered unit
    rules = stack_state_rules(training.precision, training.grad_buffer_bytes, ex.stack,
                              zero, pp)
    per = state_coefficients(zero, d_dense, d_exp, training.optimizer, training.precision,
                             gathered, rules.held_grad_bytes, rules.stage_unsharded).summed()
    per_param = per.dense + ex.stack.memory.extra_bytes_per_param
    per_expert = per_layer_expert * (per.expert - per.dense)

    def states(params: np.ndarray, layers: np.ndarray) -> np.ndarray:
        return params * per_param + layers * per_expert + per.fixed

    def peak_of(params: np.ndarray, layers: np.ndarray, act: np.ndarray) -> np.ndarray:
        """A rank's peak: forward/backward with its activations, or the optimizer step with
        the gradients it makes."""
        return states(params, layers) + np.maximum(act, params * rules.step_grad_bytes)

    first_p = np.where(single, rank_params, first_params)
    peak_first = peak_of(first_p, np.where(single, L, first_layers), act_first)
    peak_last = np.where(single | vshape, 0.0, peak_of(last_params, last_layers, act_last))
    peak_second = np.where(single | (~vshape & (pp < 3)), 0.0,
                           peak_of(second_layers * per_layer_params, second_layers, act_second))
    peak = np.maximum(np.maximum(peak_first, peak_last), peak_second) + over
    usable = usable_bytes(dev.memory_bytes, prof, ex.stack)
    fits = fit_codes(peak, usable) < 2  # fits or tight: memory_verdict's rule
    gpus = tp * pp * dp * cp
    if memory_only:
        none = np.full(len(c), np.inf)
        price, cost_m = _prices(pool, gpus, np.zeros(len(c)))
        return BulkResult(valid=valid, step_time_s=none, tokens_per_s=np.zeros(len(c)),
                          mfu=np.zeros(len(c)), peak_bytes=peak, fits=fits & valid,
                          cost_per_hour=price, cost_per_million_tokens=cost_m,
                          pipeline_s=none, dp_exposed_s=np.zeros(len(c)),
                          lower_bound_s=none, lower_bound_even_s=none, usable_bytes=usable)

    # ---- step time and bounds
    sh = Shard.for_stack(training.seq_len, pool.gpus_per_node, ex,
                  b=f64["mbs"], tp=tp, cp=cp, ep=ep,
                  sp=c.sp.astype(bool), rc=c.recompute, flash=flash, tp_overlap=tp_overlap)
    lf, li, lw = per_layer("fwd"), per_layer("bwd_input"), per_layer("bwd_weight")
    rc_t = np.where(partial, per_layer("recompute"), 0.0)
    uedge = edge_cost(model, ush, dev)
    edge = EdgeCost(**{k: np.broadcast_to(v, ushape)[inv] for k, v in vars(uedge).items()})
    per_layer_t = lf + li + lw
    emb = edge.embed_fwd + edge.embed_bwd
    head = edge.head_fwd + edge.head_bwd_input + edge.head_bwd_weight
    # the blocks' time of a rank with n layers: n·(f + i + w), less the recompute of the
    # layers partial recompute leaves alone
    def blocks_t(layers: np.ndarray) -> np.ndarray:
        return layers * per_layer_t - unrecomputed(layers) * rc_t

    t_first = blocks_t(first_layers) + emb + np.where(vshape | single, head, 0.0)
    t_last = blocks_t(last_layers) + head
    t_mid = np.where(pp >= 3, blocks_t(mid_layers), 0.0)
    t_all = np.where(single, blocks_t(np.full_like(pp, L)), 0.0)
    t_rank = np.where(single, t_all + emb + head,
                      np.maximum(np.maximum(t_first, np.where(vshape, 0.0, t_last)), t_mid))
    # the busiest rank's input-gradient time per layer (its mean over the rank's layers)
    li_rank = li - unrecomputed(rank_layers) / np.maximum(rank_layers, 1.0) * rc_t
    # sum over ranks of one micro-batch's work (the even split: `extra` ranks of base + 1
    # layers, the others of base, rank_layer_split)
    skipped = np.where(single, unrecomputed(np.full_like(pp, L)),
                       extra * unrecomputed(base + 1) + (pp - extra) * unrecomputed(base))
    sum_ranks = L * per_layer_t - skipped * rc_t + emb + head

    # the busiest rank's time without ZeRO-3 exposure, for the lower bounds: the estimate may
    # hide the gathers behind more compute (the vocabulary layers), exposure is never negative
    t_rank_base = t_rank
    is_z3 = zero >= 3
    z3 = _Rows(is_z3)  # the ZeRO-3 terms are computed on those candidates only
    if z3.any:
        # per chunk, as the estimate does per stage: each chunk's first gather and last
        # reduce-scatter are exposed
        zv, z_layers = z3.of(v), z3.of(rank_layers) / z3.of(v)
        ef, eb, _, _ = zero3_per_microbatch(z3.of(rank_params) / zv, z_layers, z3.of(dp * cp),
                                            z3.of(tp), z_layers * z3.of(lf),
                                            z_layers * (z3.of(li_rank) + z3.of(lw)),
                                            training.grad_dtype, dev)
        t_rank = t_rank + z3.scatter(zv * (ef + eb))

    # pipeline closed forms (module docstring)
    chunk = t_rank / v
    cf = rank_layers / v * lf
    ci = rank_layers / v * li_rank
    cw = rank_layers / v * lw
    one_f_one_b = (m - 1) * t_rank + sum_ranks
    interleaved = m * t_rank + (sum_ranks - t_rank) / v
    zb_bubble = np.maximum(cf + ci - cw, np.maximum(np.maximum(cf, ci), cw))
    zb = m * t_rank + p1 * np.minimum(zb_bubble, chunk)
    zbv = m * t_rank + p1 * np.maximum(cf, cf + ci - 2 * cw)
    pipe = np.select(
        [sched <= SCHEDULE_CODES["1F1B"], sched == SCHEDULE_CODES["Interleaved1F1B"],
         sched == SCHEDULE_CODES["InterleavedZeroBubble"]],
        [one_f_one_b, interleaved, zb], default=zbv)
    pipe = np.where(single, m * t_rank, pipe)

    # send/recv between pipeline ranks (Megatron scatter/gather: T·h/tp bytes)
    stride = tp * cp * dp
    inter = stride >= pool.gpus_per_node
    nbytes = sh.tokens * model.hidden_size * dev.elem_bytes / tp
    p2p = collective_time("send_recv", 2.0, nbytes, np.where(inter, 1.0, 2.0), dev)
    extra_mb = np.maximum(0.0, m - pp)
    pipe = pipe + np.where(single, 0.0, 2 * p1 * p2p + np.where(gpipe, 0.0,
                                                                   2 * p1 / pp * p2p * extra_mb))

    # data parallel, optimizer, tied embeddings
    window_f = t_rank * lf / np.maximum(lf + li_rank + lw, 1e-30)
    window_b = t_rank - window_f
    rank_expert = rank_params * expert_share
    rank_dense = rank_params - rank_expert
    # ZeRO 0-2 reduce once per step (ZeRO-3 per micro-batch, above): on those candidates only,
    # over groups built once for the step's reduction and the two lower bounds below
    z02 = _Rows(zero < 3)
    zero_z, dp_z, cp_z, ep_z, tp_z = (z02.of(x) for x in (zero, dp, cp, ep, tp))
    z02_groups = dp_groups(dp_z, cp_z, ep_z, tp_z, dev)

    def dp_02(dense: np.ndarray, expert: np.ndarray, wf: np.ndarray, wb: np.ndarray,
              grad_overlap: Any, gather_overlap: Any) -> tuple[np.ndarray, np.ndarray]:
        """:func:`dp_comm` (total, exposed) of the ZeRO 0-2 candidates, 0 for ZeRO-3's."""
        tot, exp = dp_comm(z02.of(dense), z02.of(expert), zero_z, dp_z, cp_z, ep_z, tp_z,
                           z02.of(wf), z02.of(wb), z02.of(grad_overlap),
                           z02.of(gather_overlap), training.grad_dtype, dev, z02_groups)
        return z02.scatter(tot), z02.scatter(exp)

    _, dp_exp = dp_02(rank_dense, rank_expert, window_f, window_b, grad_ov, gather_ov)
    opt = optimizer_time(rank_dense, rank_expert, zero, dp, cp, ep, training.optimizer, dev)
    tied = np.where(
        (pp > 1) & model.tie_word_embeddings,
        collective_time("all_reduce", 2.0, model.vocab_size * model.hidden_size / tp
                        * grad_comm_bytes(training.grad_dtype), 1.0, dev), 0.0)
    serial = dp_exp + opt + tied
    step = pipe + serial
    # lower bound for branch and bound (see BulkResult.lower_bound_s)
    avg_expert = L * per_layer_expert / pp
    avg_dense = (L * per_layer_dense + emb_params + model.output_params() / tp) / pp
    inf = np.full_like(avg_dense, np.inf)
    _, last_bucket = dp_02(avg_dense, avg_expert, inf, inf, True, True)
    opt_lb = optimizer_time(avg_dense, avg_expert, zero, dp, cp, ep, training.optimizer, dev)
    serial_lb = opt_lb + np.where(zero >= 3, 0.0, last_bucket)
    # any layer partition: pp·v chunks of at least one layer each recompute, under partial
    # recompute, at least S − 1 + min(k, L − S + 1) layers (min(k, n) is concave in n, so the
    # sum over chunks is least with all but one chunk of a single layer)
    S = pp * v
    fewest_rc = np.where(partial, S - 1 + np.minimum(k_rc, L - S + 1), L)
    sum_any = L * per_layer_t - (L - fewest_rc) * rc_t + emb + head
    lower = m * sum_any / pp + serial_lb
    chunk_layers = np.floor(base / v)
    fill = np.where(single, 0.0, edge.embed_fwd + p1 * chunk_layers * lf)
    t_last_rank = np.where(vshape, blocks_t(last_layers), t_last)
    z3_floor = z3.scatter(z3.of(m) * z3.of(v) * zero3_exposure_floor(
        z3.of(per_layer_params), z3.of(dp * cp), z3.of(tp), training.grad_dtype, dev)
    ) if z3.any else 0.0
    lower_even = np.maximum(m * t_rank_base, fill + m * t_last_rank) + z3_floor + serial_lb
    sched_fused = (gpipe | (sched == SCHEDULE_CODES["1F1B"])
                   | (sched == SCHEDULE_CODES["Interleaved1F1B"]))
    # ... and after the last rank's final action the gradient of that action's micro-batch
    # still crosses the pp − 1 earlier ranks (the drain, the fill's mirror; its stage is
    # ≥ pp − 1 in every schedule, V-shapes included). With a fused backward (GPipe, 1F1B,
    # Interleaved1F1B) the final action is a backward and each stage on the way back does
    # a whole one; zero-bubble schedules may leave weight gradients for last, so there
    # only the last rank's forwards and input gradients precede an input-gradient drain.
    w_last = np.where(vshape, last_layers * lw, last_layers * lw + edge.head_bwd_weight)
    # (a drained chunk's layers are taken without their recompute forward: partial
    # recompute may leave them alone)
    li_plain = li - rc_t
    drain = np.where(sched_fused, m * t_last_rank + p1 * chunk_layers * (li_plain + lw),
                     m * (t_last_rank - w_last) + p1 * chunk_layers * li_plain)
    lower_even = np.maximum(lower_even, np.where(
        single, 0.0, fill + drain + 2 * p1 * p2p) + z3_floor + serial_lb)
    # the critical chain of one micro-batch (any schedule: data dependencies): its forward
    # crosses all L blocks, then its input gradient crosses them back, one after the other;
    # the last micro-batch starts it after the first chunk's other m − 1 forwards, and it
    # crosses the rank boundaries each way (send/recv on each). With few
    # micro-batches on a deep pipeline this, not any rank's work, bounds the step.
    # The chain also crosses the vocabulary layers (embedding, LM head and loss, their input
    # gradients); a fused backward (GPipe, 1F1B, Interleaved1F1B) carries every stage's weight
    # gradient on the way back, a zero-bubble one at least stage 0's after its input gradient.
    # Every boundary between consecutive stages is a send/recv between two ranks (interleaved
    # stages go round the ranks), except the V's turn, whose two stages share the last rank.
    # Partial recompute: the layers it leaves alone skip their recompute forward.
    hops = np.where(vshape, 2 * pp - 2, pp * v - 1)
    chain = (L * (lf + li) - skipped * rc_t + m * edge.embed_fwd + edge.head_fwd
             + edge.head_bwd_input + (m - 1) * chunk_layers * lf + 2 * hops * p2p)
    chain = chain + np.where(
        sched_fused, L * lw + edge.head_bwd_weight + edge.embed_bwd, chunk_layers * lw)
    lower_even = np.maximum(lower_even, np.where(single, 0.0, chain) + serial_lb)
    # ZeRO 0-2's traffic: every rank r ends the step with its gradient reduction (and, ZeRO
    # 1-2, the parameter gather), of which at most its last micro-batch's compute c_r hides
    # (dp_comm: exposed ≥ total − windows); the makespan is at least m·c_r, so step ≥
    # (m − 1)·c_r + total_r; over the ranks, c_r averages at least the blocks' share
    # L·per_layer_t/pp and every rank holds at least `fewest` blocks (collective time grows
    # with the message). Over slow networks this, not compute, bounds the step.
    fewest = np.where(single, L, np.minimum(first_layers, last_layers))
    dp_total_min, _ = dp_02(fewest * per_layer_dense, fewest * per_layer_expert, inf, inf,
                            True, True)
    lower_even = np.maximum(lower_even, (m - 1) * (L * per_layer_t - skipped * rc_t) / pp
                            + dp_total_min)
    # ZeRO-3's traffic: every rank moves its parameters twice and its gradients once per
    # micro-batch (vocabulary layers included), and its forward and backward last at least
    # that; the floor of the first, last and a middle rank of the even split
    if z3.any:
        z3_traffic = zero3_traffic_floor(z3.of(per_layer_params), z3.of(dp * cp), z3.of(tp),
                                         training.grad_dtype, dev)
        z_last, z_mid = z3.of(last_layers), z3.of(mid_layers)
        busiest = np.maximum(z3_traffic(z3.of(first_layers), z3.of(first_params)), np.where(
            z3.of(single), 0.0, z3_traffic(z_last, np.where(
                z3.of(vshape), z_last * z3.of(per_layer_params), z3.of(last_params)))))
        busiest = np.maximum(busiest, np.where(
            z3.of(pp) >= 3, z3_traffic(z_mid, z_mid * z3.of(per_layer_params)), 0.0))
        lower_even = np.maximum(lower_even, z3.scatter(z3.of(m) * busiest) + serial_lb)


    tokens = float(training.tokens_per_step)
    step = np.where(valid, step, np.inf)
    tps = tokens / step
    mflops = model_flops_per_token(model, training.seq_len) * tokens
    mfu = mflops / (step * gpus * dev.peak)
    price, cost_m = _prices(pool, gpus, tps)
    return BulkResult(valid=valid, step_time_s=step, tokens_per_s=tps, mfu=mfu,
                      peak_bytes=peak, fits=fits & valid, cost_per_hour=price,
                      cost_per_million_tokens=cost_m, pipeline_s=pipe, dp_exposed_s=dp_exp,
                      lower_bound_s=np.where(valid, lower, np.inf),
                      lower_bound_even_s=np.where(valid, lower_even, np.inf),
                      usable_bytes=usable)

