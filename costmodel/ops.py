"""Time of primitive operations: GEMMs, fused attention, memory-bound kernels, collectives.

All functions take numpy arrays (or scalars) and broadcast, so that one plan and a million
candidate plans go through the same formulas. Times are in seconds, sizes in bytes/FLOPs.

Compute (roofline with a fixed per-kernel latency, the shape of Calculon's and SimuMax's
per-operation efficiency models)::

    t = latency + max(FLOPs / (peak · η), bytes / (HBM · η_mem))

η·peak is the GPU's measured GEMM ceiling (maximum achievable matmul FLOP/s,
:mod:`costmodel.kernels`) derated for the shape's wave quantization, or the interpolated
measured throughput where a calibration profile has GEMM measurements. The latency term
makes small operations slow (efficiency rises with size as F / (F + F½) with
F½ = latency · peak · η); it is the per-kernel time the profile gives, not a fitted MFU.

Collectives use nccl-tests' bus-bandwidth convention (NCCL's PERFORMANCE.md) with a
size-dependent bus bandwidth ``busbw(S) = busbw_max · S / (S + S½)``, i.e.
``t = α + factor(n) · (S + S½) / busbw_max`` with factor 2(n−1)/n for all-reduce, (n−1)/n
for all-gather, reduce-scatter and all-to-all, 1 for send/recv. S½ is the profile's
half-bandwidth size (vTrain's measured A100 all-reduce table fits it at 1 MiB, 64 MiB and
1 GiB).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from costmodel.kernels import (
    CollectivePlateaus,
    GemmShapes,
    attention_rates,
    collective_plateaus,
    gemm_ceiling,
    gemm_shapes,
)
from costmodel.profile import CalibrationProfile, CollectiveEfficiency, LinkClass
from costmodel.specs.cluster import GPUPool
from costmodel.specs.gpus import GPUType

Array = np.ndarray | float

BUS_FACTOR = {
    "all_reduce": lambda n: 2.0 * (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_to_all": lambda n: (n - 1) / n,
    "send_recv": lambda n: np.ones_like(n, dtype=float),
}
"""nccl-tests' busbw = algbw × factor (shared/reference/frameworks.md, NCCL PERFORMANCE.md)."""


@dataclass(frozen=True)
class Device:
    """Effective performance parameters of one device type under one calibration profile."""

    name: str
    peak: float
    """Datasheet dense FLOP/s at the job's precision (the MFU denominator)."""
    gemm_rate: float
    """Ceiling FLOP/s of the GEMMs that run at 16 bits whatever the recipe (LM head, router,
    unfused attention's batched matmuls; all GEMMs without fp8): the GPU's measured maximum
    achievable matmul throughput (:func:`costmodel.kernels.gemm_ceiling`)."""
    hbm: float
    """Achievable HBM B/s."""
    kernel_latency: float
    host_dispatch: float
    """Host seconds per kernel of an eager framework."""
    link_intra: float
    """One-direction B/s between devices of a node."""
    nic: float
    """Per-device B/s between nodes."""
    gpus_per_node: int
    sms: float
    """Streaming multiprocessors (compute units) of the device."""
    wave_ref: float
    """Wave efficiency of the shape at which ``gemm_rate`` was measured."""
    memory_bytes: float
    precision: str
    profile: CalibrationProfile
    gpu: GPUType
    elem_bytes: float = 2.0
    """Bytes of one activation / weight element at the job's precision
    (:func:`activation_bytes`)."""
    linear_rate: float = 0.0
    """Ceiling FLOP/s of the linear layers' GEMMs: the fp8 ceiling when the job runs fp8
    (recipes put only ``nn.Linear`` in fp8), else ``gemm_rate``."""
    linear_wave_ref: float = 1.0
    linear_elem_bytes: float = 2.0
    """Operand bytes of a linear layer's GEMM (1 for fp8)."""
    shapes: GemmShapes | None = None
    """Measured shape dependence of the 16-bit GEMMs (:func:`costmodel.kernels.gemm_shapes`);
    None = wave quantization relative to ``wave_ref``."""
    shapes_ref: float = 1.0
    """``shapes`` at the shape at which ``gemm_rate`` was measured."""
    linear_shapes: GemmShapes | None = None
    """The same for the linear layers' GEMMs (the fp8 grid when the job runs fp8)."""
    linear_shapes_ref: float = 1.0
    plateaus: CollectivePlateaus | None = None
    """Measured bus-bandwidth plateaus of the collectives inside one NVLink node by group size
    (:func:`costmodel.kernels.collective_plateaus`); None = the profile's link fraction only."""
    attention_fractions: tuple[float, float] | None = None
    """(forward, backward) fraction of the bf16 peak a profile sets for fused attention (a
    measured device's calibration); None = the kernel tables (:mod:`costmodel.kernels`)."""
    warnings: tuple[str, ...] = ()
    """What the estimate must say about these figures (a default used for lack of a
    measurement)."""

    @classmethod
    def from_pool(cls, pool: GPUPool, precision: str, profile: CalibrationProfile) -> Device:
        """The device of ``pool`` at ``precision``: GEMM ceilings from the measured kernel
        tables (:func:`costmodel.kernels.gemm_ceiling`) unless ``profile`` sets its own
        fraction for the architecture (a measured device's calibration does)."""
        gpu = pool.gpu_type
        eff = profile.arch_efficiency(gpu.arch)
        peak = gpu.peak_flops(precision)
        hbm = gpu.hbm_GBps * 1e9
        if profile.measurements.hbm_GBps and (profile.gpu in (None, gpu.name)):
            hbm_eff = profile.measurements.hbm_GBps * 1e9
        else:
            hbm_eff = hbm * eff.hbm_fraction
        wide = "bf16" if precision == "fp8" else precision
        warnings: list[str] = []
        shapes = linear_shapes = None
        if eff.gemm_peak_fraction is not None:
            wide_rate = gpu.peak_flops(wide) * eff.gemm_peak_fraction
            wide_shape = eff.gemm_reference_shape
            frac8 = eff.gemm_peak_fraction_fp8 or eff.gemm_peak_fraction
            lin_rate, lin_shape = (peak * frac8, wide_shape) if precision == "fp8" else (
                wide_rate, wide_shape)
        else:
            derate = profile.eff.gemm.mamf_fraction if profile.eff.gemm is not None else 1.0
            wide_c = gemm_ceiling(gpu, wide)
            wide_rate, wide_shape = wide_c.flops * derate, wide_c.shape
            warnings += [wide_c.warning] if wide_c.warning else []
            if precision == "fp8":
                lin_c = gemm_ceiling(gpu, "fp8")
                lin_rate, lin_shape = lin_c.flops * derate, lin_c.shape
                warnings += [lin_c.warning] if lin_c.warning else []
            else:
                lin_rate, lin_shape = wide_rate, wide_shape
            shapes, linear_shapes = gemm_shapes(gpu, wide), gemm_shapes(gpu, precision)
        attn = None
        if eff.attention_fwd_fraction is not None and eff.attention_bwd_fraction is not None:
            attn = (eff.attention_fwd_fraction, eff.attention_bwd_fraction)

        def wave(shape: tuple[int, int, int]) -> float:
            return float(wave_efficiency(shape[0], shape[1], gpu.sm_count))

        def at(grid: GemmShapes | None, shape: tuple[int, int, int]) -> float:
            return 1.0 if grid is None else float(grid(*shape))

        return cls(
            name=gpu.name, peak=peak, gemm_rate=wide_rate, hbm=hbm_eff,
            kernel_latency=eff.kernel_latency_us * 1e-6,
            host_dispatch=profile.eff.host.dispatch_us_per_kernel * 1e-6,
            link_intra=pool.link_GBps * 1e9, nic=pool.nic_GBps * 1e9,
            gpus_per_node=pool.gpus_per_node, sms=float(gpu.sm_count),
            wave_ref=wave(wide_shape), memory_bytes=gpu.memory_bytes,
            precision=precision, profile=profile, gpu=gpu, elem_bytes=activation_bytes(precision),
            linear_rate=lin_rate, linear_wave_ref=wave(lin_shape),
            linear_elem_bytes=1.0 if precision == "fp8" else activation_bytes(precision),
            attention_fractions=attn, warnings=tuple(warnings),
            plateaus=collective_plateaus(gpu, pool.link_GBps),
            shapes=shapes, shapes_ref=at(shapes, wide_shape), linear_shapes=linear_shapes,
            linear_shapes_ref=at(linear_shapes, lin_shape),
        )

    @property
    def measured(self) -> bool:
        """Whether the profile's measurements apply to this device."""
        return self.profile.gpu in (None, self.name)

    @property
    def measured_collectives(self) -> bool:
        """Whether collective times come from the profile's measured bus bandwidths (which
        interpolate by size) rather than the latency-bandwidth formula."""
        return self.measured and bool(self.profile.measurements.collectives)


def activation_bytes(precision: str) -> float:
    """Bytes of an activation (and compute-weight) element: 2 for bf16 and fp16, and for fp8,
    whose recipes keep activations in bf16 (Transformer Engine); 4 for fp32."""
    return 4.0 if precision == "fp32" else 2.0


TILE = (256.0, 128.0)
"""Output tile of cuBLAS's most efficient kernels, 256×128 or 128×256 (NVIDIA, "Matrix
Multiplication Background User's Guide", §2.3); the better orientation is used per shape."""


def wave_efficiency(m: Array, n: Array, sms: float) -> np.ndarray:
    """Fraction of SM-time doing useful tiles: tiles / (waves · SMs) (ibid. §3.2, wave
    quantization), for the better of the two 256×128 orientations."""
    m = np.asarray(m, dtype=float)
    n = np.asarray(n, dtype=float)
    best = np.zeros(np.broadcast(m, n).shape)
    for tm, tn in (TILE, TILE[::-1]):
        tiles = np.ceil(m / tm) * np.ceil(n / tn)
        waves = np.ceil(tiles / sms)
        best = np.maximum(best, tiles / (waves * sms))
    return best


def gemm_time(m: Array, n: Array, k: Array, dev: Device, elem_bytes: float | None = None,
              linear: bool = False) -> np.ndarray:
    """One GEMM (m×k)·(k×n): roofline of compute and operand traffic.

    The compute rate is the device's measured ceiling (the maximum achievable matmul
    throughput, MAMF, at its best shape: :func:`costmodel.kernels.gemm_ceiling`) times the
    shape's efficiency. Where the architecture has a measured shape grid
    (:class:`costmodel.kernels.GemmShapes`) that is the grid's efficiency at the shape relative
    to its efficiency at the ceiling's own shape, ``rate = ceiling · shapes(m, n, k) /
    shapes(MAMF shape)``, and the kernel's latency is inside the measurement; elsewhere it is
    wave quantization relative to the ceiling's shape, ``rate = ceiling · wave_eff(m, n) /
    wave_eff(MAMF shape)``, plus a per-kernel latency (which misses cuBLAS's split-K: on the
    H100 grid it runs 0.11× to 1.78× of the measured rate, so the grid is preferred wherever
    it exists). ``linear`` marks a linear
    layer's GEMM (QKV, projections, MLP, experts), which runs at the fp8 ceiling with 1-byte
    operands when the job runs fp8; everything else stays at 16 bits (Transformer Engine and
    torchao convert ``nn.Linear`` only: shared/reference/kernels.md, "Precision per
    operation").
    """
    flops = 2.0 * np.asarray(m, dtype=float) * n * k
    if elem_bytes is None:
        elem_bytes = dev.linear_elem_bytes if linear else dev.elem_bytes
    ceiling, ref = (dev.linear_rate, dev.linear_wave_ref) if linear else (dev.gemm_rate,
                                                                          dev.wave_ref)
    traffic = elem_bytes * (np.asarray(m) * k + np.asarray(k) * n + np.asarray(m) * n)
    if dev.measured:
        dtype = "fp8" if linear and dev.precision == "fp8" else (
            "bf16" if dev.precision == "fp8" else dev.precision)
        measured = dev.profile.gemm_rate(flops, dtype)
        if measured is not None:
            # measured throughput already contains the kernel latency of the measured shapes
            return np.maximum(flops / measured, traffic / dev.hbm)
    # never above the measured ceiling: a shape that runs better than the MAMF shape on the
    # grid, or quantizes better, does not beat MAMF
    shapes, s_ref = (dev.linear_shapes, dev.linear_shapes_ref) if linear else (
        dev.shapes, dev.shapes_ref)
    if shapes is not None:
        rate = ceiling * np.minimum(1.0, shapes(m, n, k) / s_ref)
        return np.maximum(flops / rate, traffic / dev.hbm)
    rate = ceiling * np.minimum(1.0, wave_efficiency(m, n, dev.sms) / ref)
    return dev.kernel_latency + np.maximum(flops / rate, traffic / dev.hbm)


def mem_time(nbytes: Array, dev: Device, kernels: Array = 1.0) -> np.ndarray:
    """Memory-bound work moving ``nbytes`` through HBM in ``kernels`` kernels (one by
    default), each paying the kernel latency."""
    return kernels * dev.kernel_latency + np.asarray(nbytes, dtype=float) / dev.hbm


def flash_attention_time(flops_fwd: Array, dev: Device, kernel: str, head_dim: float,
                         seq_q: Array) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward time of a fused attention kernel.

    ``flops_fwd`` counts only the unmasked work (causal ≈ half), as the FlashAttention
    benchmarks do; backward does 2.5× the forward FLOPs (five matmuls against two, Dao 2023
    §4.1). Rates: a profile's attention measurements where it has them; else the fractions of
    the bf16 peak a profile sets for the architecture (a measured device); else the kernel
    tables for ``kernel`` at ``head_dim`` and the per-rank query length ``seq_q``
    (:func:`costmodel.kernels.attention_rates`). Attention runs in bf16 whatever the job's
    precision (FP8 recipes leave it out).
    """
    f = np.asarray(flops_fwd, dtype=float)
    if dev.measured:
        rates = dev.profile.attention_rates(f, "bf16" if dev.precision == "fp8"
                                            else dev.precision)
        if rates is not None:
            return f / rates[0], 2.5 * f / rates[1]
    if dev.attention_fractions is not None:
        wide = dev.gpu.peak_flops("bf16" if dev.precision == "fp8" else dev.precision)
        rf: np.ndarray | float = wide * dev.attention_fractions[0]
        rb: np.ndarray | float = wide * dev.attention_fractions[1]
    else:
        r = attention_rates(kernel, dev.gpu, head_dim, seq_q)
        rf, rb = r.fwd, r.bwd
    fwd = dev.kernel_latency + f / rf
    bwd = 2 * dev.kernel_latency + 2.5 * f / rb
    return fwd, bwd


@dataclass(frozen=True)
class GroupLinks:
    """The link terms of process groups (arrays over candidates) that every collective over
    them shares: :func:`collective_time`'s ``α``, ``S½`` and maximal bus bandwidth, and
    whether each group stays inside a node. Computed once by :func:`group_links` and passed
    to the collectives of one set of groups (a reduction and a gather over the same ranks)."""

    n: np.ndarray
    inside: np.ndarray
    alpha: np.ndarray
    half: np.ndarray
    busbw: np.ndarray
    plateaus: CollectivePlateaus | None = None
    """The device's measured plateaus, which cap ``busbw`` inside a node per collective."""


def group_links(group: Array, per_node: Array, dev: Device, link_intra: Array | None = None,
                nic: Array | None = None) -> GroupLinks:
    """:class:`GroupLinks` of groups of ``group`` devices, ``per_node`` of them in each node:
    inside one node the device link; across nodes NCCL's rings/trees are bound by the NICs of
    the group's members in a node (``per_node · nic``, rail-optimised fabric as in DGX
    SuperPOD) and by the device link. Inside a node, each collective's bus bandwidth is also
    capped by the plateau measured for it at the group's size on the architecture
    (:attr:`Device.plateaus`, applied per collective in :func:`affine_terms`): NCCL reaches
    less on 2- and 4-GPU groups than on 8 (XLA's table for H100: all-reduce 250, 302 and
    402 GB/s)."""
    intra = dev.link_intra if link_intra is None else link_intra
    net = dev.nic if nic is None else nic
    coll = dev.profile.eff.collectives
    n = np.asarray(group, dtype=float)
    k = np.minimum(np.asarray(per_node, dtype=float), n)
    ci, ce = coll["intra_node"], coll["inter_node"]
    inside = k >= n
    bw_intra = np.asarray(intra, dtype=float) * ci.busbw_fraction
    bw_inter = np.minimum(bw_intra, k * net * ce.busbw_fraction)
    return GroupLinks(
        n=n, inside=inside, alpha=np.where(inside, ci.latency_us, ce.latency_us) * 1e-6,
        half=np.where(inside, ci.half_bandwidth_MiB, ce.half_bandwidth_MiB) * 2**20,
        busbw=np.where(inside, bw_intra, bw_inter), plateaus=dev.plateaus)


def collective_time(
    collective: str,
    group: Array,
    nbytes: Array,
    per_node: Array,
    dev: Device,
    link_intra: Array | None = None,
    nic: Array | None = None,
    links: GroupLinks | None = None,
) -> np.ndarray:
    """Time of one collective over ``group`` devices, ``per_node`` of them in each node.

    Bus bandwidth: see :func:`group_links` (``links``: those terms already computed for these
    groups). ``nbytes`` is nccl-tests' message size (the full buffer of all-reduce, the
    gathered output of all-gather, the input of reduce-scatter).
    """
    intra = dev.link_intra if link_intra is None else link_intra
    net = dev.nic if nic is None else nic
    measured = dev.measured_collectives
    if links is None and not measured and all(
            np.ndim(x) == 0 for x in (group, per_node, intra, net)):
        # one group (one plan's estimate; its sizes may be per stage): the same formula with
        # the group's terms in floats (numpy's per-call overhead on one-element arrays was a
        # quarter of a search's simulation time)
        a0, per_byte = _group_terms(collective, float(group), float(per_node), float(intra),
                                    float(net), dev.profile.eff.collectives, dev.plateaus)
        if np.ndim(nbytes) == 0:
            return np.asarray(a0 + per_byte * float(nbytes) if per_byte else 0.0)
        sizes = np.asarray(nbytes, dtype=float)
        return a0 + per_byte * sizes if per_byte else np.zeros_like(sizes)
    g = group_links(group, per_node, dev, intra, net) if links is None else links
    n = g.n
    size = np.asarray(nbytes, dtype=float)
    a, b = affine_terms(collective, g)
    t = a + b * size
    if measured:
        # a measured bus bandwidth already contains latency and the small-message loss:
        # nccl-tests defines it by t = factor · S / busbw
        for link, mask in (("intra_node", g.inside), ("inter_node", ~g.inside)):
            if np.any(mask):
                meas = dev.profile.collective_busbw(collective, link, int(np.max(n)), size)
                if meas is not None:
                    t = np.where(mask, BUS_FACTOR[collective](n) * size / meas, t)
    return np.where(n > 1, t, 0.0)


def affine_terms(collective: str, g: GroupLinks) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of :func:`collective_time` over the groups ``g`` on an unmeasured device:
    ``t = α + factor(n) · (S + S½) / busbw = a + b · S``, 0 for a group of one. Affine in the
    message size, so several collectives over the same groups compute these once."""
    on = g.n > 1
    busbw = g.busbw
    cap = g.plateaus(collective, g.n) if g.plateaus is not None else None
    if cap is not None:
        busbw = np.where(g.inside, np.minimum(busbw, cap), busbw)
    b = np.where(on, BUS_FACTOR[collective](g.n) / busbw, 0.0)
    return np.where(on, g.alpha + b * g.half, 0.0), b


def _group_terms(collective: str, n: float, per_node: float, intra: float, net: float,
                 coll: Mapping[LinkClass, CollectiveEfficiency],
                 plateaus: CollectivePlateaus | None = None) -> tuple[float, float]:
    """:func:`affine_terms` for one group (unmeasured device), term by term the same:
    t = a + b · size; b = 0 for a group of one (no time)."""
    if n <= 1:
        return 0.0, 0.0
    k = min(per_node, n)
    ci, ce = coll["intra_node"], coll["inter_node"]
    bw_intra = intra * ci.busbw_fraction
    if k >= n:
        cap = plateaus(collective, n) if plateaus is not None else None
        busbw, c = (bw_intra if cap is None else min(bw_intra, float(cap))), ci
    else:
        busbw, c = min(bw_intra, k * net * ce.busbw_fraction), ce
    factor = 1.0 if collective == "send_recv" else float(BUS_FACTOR[collective](n))
    b = factor / busbw
    return c.latency_us * 1e-6 + b * (c.half_bandwidth_MiB * 2**20), b


def members_per_node(stride: Array, size: Array, gpus_per_node: int) -> np.ndarray:
    """Members of a process group that share a node, for a group whose ranks are ``stride``
    apart in Megatron's rank order (tp fastest, then cp, dp, pp)."""
    stride = np.asarray(stride, dtype=float)
    size = np.asarray(size, dtype=float)
    per = np.floor(gpus_per_node / np.maximum(stride, 1.0))
    return np.clip(per, 1.0, size)
