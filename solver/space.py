"""The discrete search space of one pool, enumerated as candidate arrays.

Degrees: tp up to the GPUs of one node (powers of two dividing heads, KV heads and FFN);
cp ∈ {1, 2, 4, 8} where the sequence splits into 2·cp chunks; pp among the divisors of the
layer count and the powers of two (Megatron needs L divisible by pp·v unless first/last
stages are uneven; powers of two match node counts); dp among the divisors of the global
batch; ep among the divisors of the expert count that divide dp·cp. Then micro-batch sizes
dividing the per-replica batch, every (schedule, virtual stages) pair the schedules allow,
recompute, sequence parallelism (tp > 1) and ZeRO stages (dp·cp > 1). Rules that the cost
model checks per plan are applied afterwards, vectorized (:func:`costmodel.bulk.valid_mask`).

Full recompute also comes partial (``plan.recompute_num_layers``: the first N layers of each
chunk recomputed, Megatron's ``--recompute-method block``), as Galvatron's search chooses
which layers to recompute (PKU-DAIR/Hetu-Galvatron: one checkpoint flag per layer in its
parallel config, ``checkpoint_flags_enc``): not every N, but
:data:`PARTIAL_RECOMPUTE_FRACTIONS` of the largest chunk of the even split, so each full
recompute candidate gains at most three partial ones.
"""

from __future__ import annotations

import itertools

import numpy as np

from costmodel.bulk import RECOMPUTES, SCHEDULE_CODES, Candidates, largest_chunk
from costmodel.specs import degrees
from costmodel.specs.cluster import GPUPool
from costmodel.specs.model import ModelSpec
from costmodel.specs.training import TrainingSpec
from solver.request import Constraints

SCHEDULE_VARIANTS: tuple[tuple[str, int], ...] = (
    ("GPipe", 1), ("1F1B", 1),
    ("Interleaved1F1B", 2), ("Interleaved1F1B", 3), ("Interleaved1F1B", 4),
    ("Interleaved1F1B", 6), ("Interleaved1F1B", 8),
    ("InterleavedZeroBubble", 1), ("InterleavedZeroBubble", 2),
    ("ZBVZeroBubble", 2), ("DualPipeV", 2),
)
"""(schedule, virtual stages) pairs searched when pp > 1."""

MICRO_BATCHES = (1, 2, 4, 8, 16, 32, 64)
PARTIAL_RECOMPUTE_FRACTIONS = (0.25, 0.5, 0.75)
"""Partial recompute searched: N = round(f · the largest chunk's layers) for each f (distinct
values from 1 to one fewer than the chunk: N = all layers is plain full recompute). A search
space choice (quarters keep the candidates bounded), not a measured constant."""
ZERO_STAGES = (0, 1, 2, 3)


def _divisors(n: int, limit: int | None = None) -> list[int]:
    """Divisors of ``n`` up to ``limit`` (default ``n``), by trial division up to √n: the
    work is O(min(√n, limit)), never O(n) (a ``global_batch_size`` of 1e15 took minutes)."""
    top = n if limit is None else min(n, limit)
    small, large = [], []
    d = 1
    while d * d <= n and d <= top:
        if n % d == 0:
            small.append(d)
            if n // d != d and n // d <= top:
                large.append(n // d)
        d += 1
    if d * d <= n:  # stopped at the limit: the large co-divisors are all above it
        return small
    return small + large[::-1]


def degree_tuples(model: ModelSpec, training: TrainingSpec, pool: GPUPool,
                  cons: Constraints) -> np.ndarray:
    """(tp, pp, cp, dp, ep) rows that fit the pool and the fixed degrees."""
    max_gpus = min(pool.num_gpus, cons.max_gpus or pool.num_gpus)
    fixed = cons.fixed
    L = model.num_hidden_layers
    tps = [t for t in (1, 2, 4, 8, 16, 32)
           if t <= pool.gpus_per_node and degrees.holds(degrees.tensor_parallel(model, t))]
    cps = [c for c in (1, 2, 4, 8)
           if degrees.holds(degrees.context_parallel(training.seq_len, c))]
    pow2 = {1 << k for k in range(12)}
    pps = sorted({p for p in range(1, min(L, cons.max_pp) + 1)
                  if L % p == 0 or p in pow2})
    dps = _divisors(training.global_batch_size, max_gpus)
    eps = _divisors(model.num_local_experts) if model.is_moe and model.num_local_experts else [1]
    rows = []
    for tp, pp, cp, dp, ep in itertools.product(tps, pps, cps, dps, eps):
        if tp * pp * cp * dp > max_gpus or not degrees.holds(
                degrees.expert_parallel(model, dp, cp, ep)):
            continue
        vals = {"tp": tp, "pp": pp, "cp": cp, "dp": dp, "ep": ep}
        if any(k in fixed and fixed[k] != v for k, v in vals.items()):
            continue
        rows.append((tp, pp, cp, dp, ep))
    return np.array(rows, dtype=np.int64).reshape(-1, 5)


def enumerate_pool(model: ModelSpec, training: TrainingSpec, pool: GPUPool,
                   cons: Constraints) -> Candidates:
    """Every candidate plan of ``pool`` (before the per-plan validity and memory checks)."""
    deg = degree_tuples(model, training, pool, cons)
    fixed = cons.fixed
    scheds: list[str] = list(cons.schedules) if cons.schedules else list(SCHEDULE_CODES)
    variants = [(SCHEDULE_CODES[s], v) for s, v in SCHEDULE_VARIANTS if s in scheds
                and ("virtual_stages" not in fixed or fixed["virtual_stages"] == v)]
    # a plan without pipelining has no schedule to restrict: pp = 1 is always "1F1B"
    trivial = (SCHEDULE_CODES["1F1B"], 1)
    if trivial not in variants and fixed.get("virtual_stages", 1) == 1:
        variants.append(trivial)
    mbs = [b for b in MICRO_BATCHES if b <= cons.max_micro_batch_size
           and ("micro_batch_size" not in fixed or fixed["micro_batch_size"] == b)]
    allowed_rc: list[str] = list(cons.recompute) if cons.recompute else list(RECOMPUTES)
    rcs = [RECOMPUTES.index(r) for r in allowed_rc]
    zeros = [z for z in ZERO_STAGES if "zero_stage" not in fixed or fixed["zero_stage"] == z]
    if len(deg) == 0 or not variants or not mbs or not zeros:
        return Candidates.grid(tp=[], pp=[], dp=[], cp=[], ep=[], mbs=[], v=[], schedule=[],
                               recompute=[], sp=[], zero=[])
    # outer product of degree rows × the other axes, then the cheap structural masks
    var = np.array(variants, dtype=np.int64)
    axes = [np.arange(len(deg)), np.array(mbs), np.arange(len(var)), np.array(rcs),
            np.array([False, True]), np.array(zeros)]
    grids = np.meshgrid(*axes, indexing="ij")
    d_i, b, v_i, rc, sp, zero = (x.ravel() for x in grids)
    tp, pp, cp, dp, ep = (deg[d_i, k] for k in range(5))
    sched, v = var[v_i, 0], var[v_i, 1]
    gbs = training.global_batch_size
    keep = (gbs % (dp * b) == 0)
    keep &= (pp > 1) | ((sched == SCHEDULE_CODES["1F1B"]) & (v == 1))
    if "1F1B" not in scheds:  # 1F1B was added for pp = 1 only
        keep &= (pp == 1) | (sched != SCHEDULE_CODES["1F1B"])
    keep &= ~sp | (tp > 1)
    keep &= (tp > 1) | ~sp
    keep &= (dp * cp > 1) | (zero == 0)
    cols = {"tp": tp[keep], "pp": pp[keep], "dp": dp[keep], "cp": cp[keep], "ep": ep[keep],
            "mbs": b[keep], "v": v[keep], "schedule": sched[keep], "recompute": rc[keep],
            "sp": sp[keep], "zero": zero[keep]}
    return Candidates(**cols)


TWIN_FIELDS = ("tp", "pp", "dp", "cp", "ep", "mbs", "v", "schedule", "sp", "zero")
"""What a plan and its other-recompute twins share (all candidate fields but recompute)."""


def _twin_key(cands: Candidates) -> np.ndarray:
    """One integer per candidate over :data:`TWIN_FIELDS` (mixed radix of the non-negative
    field values; of their ranks where the values' product would overflow int64)."""
    cols = [np.asarray(getattr(cands, name)).astype(np.int64) for name in TWIN_FIELDS]
    radix = [int(col.max()) + 1 if len(col) else 1 for col in cols]
    if float(np.prod([float(r) for r in radix])) >= 2.0 ** 62:
        ranked = [np.unique(col, return_inverse=True)[1].reshape(-1) for col in cols]
        cols, radix = ranked, [int(col.max()) + 1 for col in ranked]
    key = np.zeros(len(cands), dtype=np.int64)
    for col, r in zip(cols, radix, strict=True):
        key = key * r + col
    return key


def partial_recompute_candidates(model: ModelSpec, cands: Candidates, fit: np.ndarray,
                                 cons: Constraints) -> Candidates:
    """The partial-recompute candidates worth evaluating, after the pool's other candidates
    were (``fit``: which of ``cands`` fit): copies of each fitting full-recompute plan whose
    no-recompute twin (same degrees, micro-batch, schedule, ZeRO, sequence parallelism) does
    not fit, with ``rc_layers`` at :data:`PARTIAL_RECOMPUTE_FRACTIONS` of the largest chunk of
    the even split (⌈⌈L/pp⌉/v⌉ layers, :func:`costmodel.bulk.valid_mask`'s limit).

    The others cannot win: partial recompute stashes more than full recompute (so it cannot
    fit where full does not) and computes more than no recompute (so its step is no faster
    where that fits). Where 'none' is not allowed, every fitting full-recompute plan gets its
    copies."""
    if not cons.partial_recompute or (cons.recompute and "full" not in cons.recompute):
        return cands.take(np.zeros(0, dtype=np.int64))
    full = np.flatnonzero((cands.recompute == RECOMPUTES.index("full")) & fit
                          & (cands.rc_layers == 0))
    none = np.flatnonzero(cands.recompute == RECOMPUTES.index("none"))
    if len(full) and len(none):
        # one integer per row over the twin fields (mixed radix of each field's value codes)
        key = _twin_key(cands)
        order = np.argsort(key[none], kind="stable")
        sorted_keys = key[none][order]
        at = np.clip(np.searchsorted(sorted_keys, key[full]), 0, len(none) - 1)
        has_twin = sorted_keys[at] == key[full]
        twin_fits = np.zeros(len(full), dtype=bool)
        twin_fits[has_twin] = fit[none[order[at[has_twin]]]]
        full = full[~twin_fits]
    L = model.num_hidden_layers
    pp, v = cands.pp[full], cands.v[full]
    chunk = largest_chunk(L, pp, v)
    picks: list[np.ndarray] = []
    ks: list[np.ndarray] = []
    prev = np.zeros(len(full), dtype=np.int64)
    for f in PARTIAL_RECOMPUTE_FRACTIONS:
        k = np.clip(np.rint(f * chunk).astype(np.int64), 1, np.maximum(chunk - 1, 1))
        new = (chunk >= 2) & (k > prev)
        picks.append(full[new])
        ks.append(k[new])
        prev = np.where(new, k, prev)
    src = np.concatenate(picks)
    order = np.argsort(src, kind="stable")  # in the order of the plans they copy
    out = cands.take(src[order])
    out.rc_layers = np.concatenate(ks)[order]
    return out
