"""Data-parallel gradient reduction, ZeRO parameter gathering and the optimizer step.

Vectorized over candidate plans; used by the single-plan estimate (per pipeline rank) and by
the bulk evaluator.

Overlap follows Megatron-Core's DDP (``megatron/core/distributed``): gradients are reduced in
buckets of max(40M, 1M·dp) parameters while the last micro-batch's backward runs
(``--overlap-grad-reduce``), so all but the last bucket can hide behind that backward; with the
distributed optimizer the updated parameters are all-gathered bucket by bucket under the next
step's first forward (``--overlap-param-gather``). Without overlap both are exposed in full.
Gradients travel in ``training.grad_dtype`` (:attr:`~costmodel.specs.training.TrainingSpec.
grad_dtype`): fp32 for bf16 unless the request keeps them in bf16, fp16 for fp16 training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from costmodel.ops import (
    Device,
    GroupLinks,
    affine_terms,
    collective_time,
    group_links,
    mem_time,
    members_per_node,
)

MEGATRON_BUCKET_PARAMS = 40_000_000
"""Megatron-Core DDP bucket size: max(40M, 1M × dp) parameters."""

OPTIMIZER_BYTES_PER_PARAM = {"adamw": 34.0, "adam": 34.0, "sgd": 22.0}
"""HBM traffic of one fused optimizer update per parameter: Adam reads the fp32 master
weight, gradient and two moments (16 B), writes master and moments (12 B) and the bf16 weight
(2 B), plus the gradient-norm pass (4 B); SGD with momentum: 12 read + 8 written + 2."""


GRAD_DTYPE_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0}


def grad_comm_bytes(grad_dtype: str) -> float:
    """Bytes per gradient element on the wire (``training.grad_dtype``)."""
    return GRAD_DTYPE_BYTES[grad_dtype]


def _links(group: np.ndarray, per_node: np.ndarray, dev: Device) -> GroupLinks | None:
    """The groups' link terms, computed once for the several collectives over the same
    groups, where the groups are candidate arrays; ``None`` for one group (one plan's
    estimate), whose collectives take :func:`costmodel.ops.collective_time`'s float path."""
    return group_links(group, per_node, dev) if np.ndim(group) else None


@dataclass
class DPGroup:
    """One kind of gradient-reduction group (of one rank, or of candidate arrays): its size,
    its members per node, the link terms (:class:`costmodel.ops.GroupLinks`, for candidate
    arrays) and the profile's overlap compute cost of its link class."""

    size: np.ndarray
    per_node: np.ndarray
    links: GroupLinks | None
    overlap_cost: np.ndarray
    _affine: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def time(self, collective: str, nbytes: np.ndarray, dev: Device) -> np.ndarray:
        """:func:`costmodel.ops.collective_time` over these groups; for candidate arrays on an
        unmeasured device from its affine terms, computed once per collective."""
        if self.links is None or dev.measured_collectives:
            return collective_time(collective, self.size, nbytes, self.per_node, dev,
                                   links=self.links)
        if collective not in self._affine:
            self._affine[collective] = affine_terms(collective, self.links)
        a, b = self._affine[collective]
        return a + b * nbytes


@dataclass(frozen=True)
class DPGroups:
    """The gradient-reduction groups of one rank (or of candidate arrays), in Megatron's rank
    order: dense parameters over dp·cp ranks with stride tp, routed-expert parameters over
    dp·cp/ep ranks with stride tp·ep. Built once by :func:`dp_groups` for the several
    reductions of the same candidates."""

    dense: DPGroup
    expert: DPGroup


def dp_groups(dp: np.ndarray, cp: np.ndarray, ep: np.ndarray, tp: np.ndarray, dev: Device
              ) -> DPGroups:
    """:class:`DPGroups` of these degrees."""
    gpn = dev.gpus_per_node
    coll = dev.profile.eff.collectives
    u_intra = coll["intra_node"].overlap_compute_cost
    u_inter = coll["inter_node"].overlap_compute_cost
    d = dp * cp

    def kind(group: np.ndarray, stride: np.ndarray) -> DPGroup:
        k = members_per_node(stride, group, gpn)
        return DPGroup(group, k, _links(group, k, dev), np.where(k >= group, u_intra, u_inter))

    return DPGroups(dense=kind(d, tp), expert=kind(d / ep, tp * ep))


def dp_comm(params_dense: np.ndarray, params_expert: np.ndarray, zero: np.ndarray,
            dp: np.ndarray, cp: np.ndarray, ep: np.ndarray, tp: np.ndarray,
            window_f: np.ndarray, window_b: np.ndarray, overlap_grad: np.ndarray,
            overlap_param: np.ndarray, grad_dtype: str, dev: Device,
            groups: DPGroups | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(total, exposed) seconds per step of one rank's gradient reduction and (ZeRO ≥ 1)
    parameter all-gather, for ZeRO stages 0–2 (stage 3 is per micro-batch: see
    :func:`zero3_per_microbatch`), over the ranks of :class:`DPGroups` (``groups``: those of
    ``dp``, ``cp``, ``ep``, ``tp`` already built)."""
    gb = grad_comm_bytes(grad_dtype)
    g = dp_groups(dp, cp, ep, tp, dev) if groups is None else groups
    total = np.zeros(np.broadcast(params_dense, zero, dp).shape)
    exposed = np.zeros_like(total)
    for params, kind in ((params_dense, g.dense), (params_expert, g.expert)):
        group, u = kind.size, kind.overlap_cost
        active = (params > 0) & (group > 1) & (zero < 3)
        if not np.any(active):
            continue
        safe = np.maximum(params, 1.0)
        bucket = np.minimum(1.0, np.maximum(MEGATRON_BUCKET_PARAMS, 1e6 * group) / safe)
        ar = kind.time("all_reduce", params * gb, dev)
        rs = kind.time("reduce_scatter", params * gb, dev)
        ag = kind.time("all_gather", params * dev.elem_bytes, dev)
        grad = np.where(zero == 0, ar, rs)
        gather = np.where(zero == 0, 0.0, ag)
        # overlapped parts still cost compute: the profile's overlap_compute_cost (Calculon's
        # processor_usage) of the hidden time, per link class
        hid_g = np.minimum(grad * (1 - bucket), window_b)
        hid_a = np.minimum(gather * (1 - bucket), window_f)
        eg = np.where(overlap_grad, np.maximum(grad * bucket, grad - window_b) + u * hid_g, grad)
        ea = np.where(overlap_param, np.maximum(gather * bucket, gather - window_f) + u * hid_a,
                      gather)
        total = total + np.where(active, grad + gather, 0.0)
        exposed = exposed + np.where(active, eg + ea, 0.0)
    return total, exposed


def zero3_per_microbatch(params: np.ndarray, layers: np.ndarray, group: np.ndarray,
                         tp: np.ndarray, t_fwd: np.ndarray, t_bwd: np.ndarray,
                         grad_dtype: str, dev: Device, units: np.ndarray | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """FSDP / ZeRO-3 on one rank and micro-batch: parameters all-gathered before each block's
    forward and backward, gradients reduce-scattered after its backward (FSDP's default, no
    no_sync), one collective per sharding unit of the unit's parameters (the stage's
    ``params`` spread evenly over its ``units``: its blocks, plus one for the vocabulary
    layers where the stage holds them; default ``layers``): each pays its own latency and
    size-dependent bus bandwidth. Each gather is followed by its copy-out into the unsharded
    parameters and each reduce-scatter preceded by its copy-in of the gradients (FSDP2's
    ``foreach_all_gather_copy_out`` and ``foreach_reduce``,
    ``torch/distributed/fsdp/_fully_shard/_fsdp_collectives.py``): one read and one write
    of the unit's bytes each. Prefetch overlaps them with compute; what exceeds the stage's
    compute, plus the first unit's gather and the last unit's reduce-scatter, is exposed
    (Zhao et al. 2023, "PyTorch FSDP", §3.3). The hidden part still costs the compute it
    overlaps the profile's
    ``overlap_compute_cost`` of its time (Calculon's ``processor_usage``, as in
    :func:`dp_comm`): small on GPUs, whose collectives take a few SMs, about 1 on a CPU, whose
    cores run the collective themselves. Returns (exposed_fwd, exposed_bwd, total_fwd,
    total_bwd)."""
    k = members_per_node(tp, group, dev.gpus_per_node)
    n = np.maximum(layers if units is None else units, 1.0)
    # one gather and one reduce-scatter per unit: n messages of params/n, with their copies
    w_unit = params / n * dev.elem_bytes
    g_unit = params / n * grad_comm_bytes(grad_dtype)
    links = _links(group, k, dev)
    ag = n * (collective_time("all_gather", group, w_unit, k, dev, links=links)
              + mem_time(2 * w_unit, dev))
    rs = n * (collective_time("reduce_scatter", group, g_unit, k, dev, links=links)
              + mem_time(2 * g_unit, dev))
    coll = dev.profile.eff.collectives
    u = np.where(k >= group, coll["intra_node"].overlap_compute_cost,
                 coll["inter_node"].overlap_compute_cost)
    ef = (np.maximum(0.0, ag - t_fwd) + ag / n
          + u * np.minimum(ag * (1.0 - 1.0 / n), t_fwd))
    eb = (np.maximum(0.0, ag + rs - t_bwd) + rs / n
          + u * np.minimum((ag + rs) * (1.0 - 1.0 / n), t_bwd))
    on = group > 1
    z = np.zeros_like(ef)
    return (np.where(on, ef, z), np.where(on, eb, z), np.where(on, ag, z),
            np.where(on, ag + rs, z))


def _zero3_marginals(layer_params: np.ndarray, group: np.ndarray, tp: np.ndarray,
                     grad_dtype: str, dev: Device) -> tuple[np.ndarray, np.ndarray]:
    """Bandwidth time of one block's parameter gather and gradient reduce-scatter: collective
    time is affine in the message size (:func:`costmodel.ops.collective_time`), so that
    marginal time is ``t(2p) − t(p)`` (no latency term), and n messages carrying P ≥ n·p
    bytes in all take at least P/p of it."""
    k = members_per_node(tp, group, dev.gpus_per_node)
    p = layer_params
    E = dev.elem_bytes
    links = _links(group, k, dev)
    ag = (collective_time("all_gather", group, 2 * p * E, k, dev, links=links)
          - collective_time("all_gather", group, p * E, k, dev, links=links))
    gb = grad_comm_bytes(grad_dtype)
    rs = (collective_time("reduce_scatter", group, 2 * p * gb, k, dev, links=links)
          - collective_time("reduce_scatter", group, p * gb, k, dev, links=links))
    on = group > 1
    return np.where(on, np.maximum(ag, 0.0), 0.0), np.where(on, np.maximum(rs, 0.0), 0.0)


def zero3_exposure_floor(layer_params: np.ndarray, group: np.ndarray, tp: np.ndarray,
                         grad_dtype: str, dev: Device) -> np.ndarray:
    """A floor under :func:`zero3_per_microbatch`'s exposure of one stage and micro-batch: the
    first block's gather and the last block's reduce-scatter are never hidden, and each takes
    at least the bandwidth time of one block's parameters (:func:`_zero3_marginals`). For
    lower bounds in the search."""
    ag, rs = _zero3_marginals(layer_params, group, tp, grad_dtype, dev)
    return ag + rs


def zero3_traffic_floor(layer_params: np.ndarray, group: np.ndarray, tp: np.ndarray,
                        grad_dtype: str, dev: Device
                        ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A floor under a rank's time per micro-batch under ZeRO-3 from its traffic alone, as a
    function of the rank's block count and parameters (``floor(blocks, stage_params)``):
    :func:`zero3_per_microbatch` makes the forward last at least its gathers and the backward
    at least its gathers and reduce-scatters (compute plus the exposed part ≥ the
    collectives), all on one link: two gathers and one reduce-scatter of the rank's
    ``stage_params``, each in one message per sharding unit with its copy-out or copy-in.

    Each message's time is affine in its size, c + s·bytes (:func:`costmodel.ops.collective_time`:
    latency and the half-bandwidth term in c; :func:`costmodel.ops.mem_time` likewise), so
    n ≥ ``blocks`` messages carrying ``stage_params`` take at least
    ``blocks``·c + s·bytes(``stage_params``); ``blocks`` is the rank's block count (its units
    are its blocks plus the vocabulary layers where it holds them) and ``layer_params`` one
    block's parameters (the size at which c and s are read off). With ZeRO-3 at a large
    sharding group and little compute per micro-batch this, not compute, bounds the step.
    For lower bounds in the search."""
    k = members_per_node(tp, group, dev.gpus_per_node)
    E, G = dev.elem_bytes, grad_comm_bytes(grad_dtype)
    p = np.maximum(layer_params, 1.0)
    links = _links(group, k, dev)

    def affine(t1: np.ndarray, t2: np.ndarray, nbytes: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        slope = np.maximum(t2 - t1, 0.0) / nbytes  # s, per byte
        const = np.maximum(t1 - slope * nbytes, 0.0)  # c
        return const, slope

    c_ag, s_ag = affine(collective_time("all_gather", group, p * E, k, dev, links=links)
                        + mem_time(2 * p * E, dev),
                        collective_time("all_gather", group, 2 * p * E, k, dev, links=links)
                        + mem_time(4 * p * E, dev), p * E)
    c_rs, s_rs = affine(collective_time("reduce_scatter", group, p * G, k, dev, links=links)
                        + mem_time(2 * p * G, dev),
                        collective_time("reduce_scatter", group, 2 * p * G, k, dev,
                                        links=links)
                        + mem_time(4 * p * G, dev), p * G)
    if dev.measured_collectives:
        # measured bus bandwidths interpolate by size: not affine, no constant term to claim
        c_ag, c_rs = np.zeros_like(c_ag), np.zeros_like(c_rs)
    per_block = np.where(group > 1, 2 * c_ag + c_rs, 0.0)
    per_param = np.where(group > 1, 2 * s_ag * E + s_rs * G, 0.0)

    def floor(blocks: np.ndarray, stage_params: np.ndarray) -> np.ndarray:
        return np.maximum(blocks, 0.0) * per_block + stage_params * per_param

    return floor


def optimizer_bytes(optimizer: str, precision: str) -> float:
    """HBM bytes of one optimizer update per parameter (:data:`OPTIMIZER_BYTES_PER_PARAM`);
    fp32 training writes no separate low-precision weight copy (2 B less)."""
    return OPTIMIZER_BYTES_PER_PARAM[optimizer] - (2.0 if precision == "fp32" else 0.0)


def optimizer_time(params_dense: np.ndarray, params_expert: np.ndarray, zero: np.ndarray,
                   dp: np.ndarray, cp: np.ndarray, ep: np.ndarray, optimizer: str,
                   dev: Device) -> np.ndarray:
    """One fused optimizer step over this rank's (ZeRO-sharded) parameters: memory-bound."""
    d = dp * cp
    local = np.where(zero >= 1, params_dense / d + params_expert / np.maximum(1.0, d / ep),
                     params_dense + params_expert)
    return (mem_time(local * optimizer_bytes(optimizer, dev.precision), dev)
            + 3 * dev.kernel_latency)
