"""Calibration profiles: measured performance data and the documented efficiency model.

A profile is JSON (format ``meshplan-calibration/1``) with two parts:

* **measurements** (written by ``meshplan-runtime calibrate``): GEMM throughput by
  ``(m, n, k, dtype)``, attention forward/backward time by shape, HBM bandwidth, collective bus
  bandwidth by ``(collective, group_size, bytes, link)`` in nccl-tests' convention, and
  per-layer forward/backward time. Where a measurement covers an operation, the cost model
  interpolates it (piecewise-linear in log FLOPs or log bytes).
* **efficiency** — the fallback where nothing was measured: per-operation derating of the
  datasheet peaks that depends on operation size (a fixed per-kernel latency plus a sustained
  fraction of peak, in the manner of Calculon (Isaev et al. 2023) and SimuMax), never a single
  global MFU constant. Every number carries its provenance in the file.
* **device** (optional) — a device the GPU catalog does not list (a CPU host, an unlisted
  GPU), described by what was measured on it (:class:`~costmodel.specs.measured_device.
  MeasuredDevice`: name, arch, peak TFLOP/s per precision, memory, memory and link
  bandwidth). ``gpu`` is then its name, and a cluster pool of an estimate request carrying
  this profile may name it in its ``gpu`` field.

Measured blocks (``measurements.layers``) may also give the backward split in an
input-gradient and a weight-gradient pass (``bwd_input_s``, ``bwd_weight_s``), which the
zero-bubble schedules run.

``costmodel/data/profiles/default.json`` ships the default efficiency model. Measured profiles
are stored per GPU type by the service and passed to :func:`costmodel.estimate` by name or
inline.
"""

from __future__ import annotations

import json
from functools import cache, cached_property
from importlib import resources
from typing import Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationInfo,
    field_validator,
)

from costmodel.specs.measured_device import MeasuredDevice

FORMAT: Literal["meshplan-calibration/1"] = "meshplan-calibration/1"
Collective = Literal["all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv"]
LinkClass = Literal["intra_node", "inter_node"]


class Provenance(BaseModel):
    model_config = ConfigDict(extra="allow")

    source: str = Field(description="Where the numbers come from (measurement or publication).")
    gpu: str | None = None
    date: str | None = None
    torch: str | None = None
    driver: str | None = None
    host: str | None = None


class GemmPoint(BaseModel):
    m: PositiveInt
    n: PositiveInt
    k: PositiveInt
    dtype: str = "bf16"
    tflops: PositiveFloat


class AttentionPoint(BaseModel):
    batch: PositiveInt
    heads: PositiveInt
    seq_q: PositiveInt
    seq_kv: PositiveInt
    head_dim: PositiveInt
    causal: bool = True
    dtype: str = "bf16"
    fwd_s: PositiveFloat
    bwd_s: PositiveFloat


class CollectivePoint(BaseModel):
    collective: Collective
    group_size: PositiveInt
    bytes: PositiveInt
    link: LinkClass = "intra_node"
    busbw_GBps: PositiveFloat = Field(description="nccl-tests bus bandwidth.")
    time_s: PositiveFloat | None = None


class LayerPoint(BaseModel):
    """Measured forward/backward time of one transformer block for a given shape."""

    hidden_size: PositiveInt
    intermediate_size: PositiveInt
    num_attention_heads: PositiveInt
    num_key_value_heads: PositiveInt
    seq_len: PositiveInt
    micro_batch_size: PositiveInt
    tp: PositiveInt = 1
    dtype: str = "bf16"
    fwd_s: PositiveFloat
    bwd_s: PositiveFloat = Field(description="Backward in one pass (input and weight "
                                 "gradients together), as GPipe and 1F1B run it.")
    bwd_input_s: PositiveFloat | None = Field(
        None, description="Input-gradient pass when the backward runs split into two "
        "(torch.distributed.pipelining's stage_backward_input, as zero-bubble schedules run it).")
    bwd_weight_s: PositiveFloat | None = Field(
        None, description="The weight-gradient pass that follows it (stage_backward_weight).")


class Measurements(BaseModel):
    gemm: list[GemmPoint] = []
    attention: list[AttentionPoint] = []
    hbm_GBps: PositiveFloat | None = None
    collectives: list[CollectivePoint] = []
    layers: list[LayerPoint] = []


class ArchEfficiency(BaseModel):
    """Per-architecture parameters of the derating model.

    GEMM and attention rates come from the measured kernel tables
    (:mod:`costmodel.kernels`: maximum achievable matmul FLOP/s per GPU and precision, fused
    attention TFLOP/s by kernel, head dim and sequence length). A profile may instead set
    fractions of the datasheet peak for an architecture the tables do not cover (what
    ``meshplan-runtime calibrate`` writes for a measured device); they then replace the
    tables for that architecture."""

    model_config = ConfigDict(extra="forbid")

    gemm_peak_fraction: PositiveFloat | None = Field(
        None, le=1, description="Override: sustained fraction of dense peak of a large GEMM; "
        "null = the measured GEMM ceiling of the GPU (costmodel/data/kernels/gemm.json).")
    gemm_reference_shape: tuple[PositiveInt, PositiveInt, PositiveInt] = Field(
        (8192, 8192, 8192), description="(m, n, k) at which gemm_peak_fraction was measured; "
        "other shapes are scaled by their wave quantization relative to it.")
    kernel_latency_us: NonNegativeFloat = Field(
        description="Fixed GPU-side time per kernel (launch, ramp-up and tail of the wave).")
    attention_fwd_fraction: PositiveFloat | None = Field(
        None, le=1, description="Override: fused-attention forward rate as a fraction of the "
        "16-bit peak; null = the kernel tables (costmodel/data/kernels/attention.json).")
    attention_bwd_fraction: PositiveFloat | None = Field(None, le=1)
    gemm_peak_fraction_fp8: PositiveFloat | None = Field(
        None, le=1, description="Override: sustained fraction of the FP8 peak; null = "
        "gemm_peak_fraction, or the measured FP8 ceiling when that is null too.")
    hbm_fraction: PositiveFloat = Field(le=1, description="Achievable fraction of HBM bandwidth.")
    provenance: str


class CollectiveEfficiency(BaseModel):
    model_config = ConfigDict(extra="forbid")

    busbw_fraction: PositiveFloat = Field(
        le=1, description="Large-message bus bandwidth / link rate (nccl-tests busbw).")
    latency_us: NonNegativeFloat = Field(description="Per-collective fixed latency.")
    overlap_compute_cost: NonNegativeFloat = Field(
        0.0, le=1, description="Fraction of an overlapped collective's duration added to the "
        "compute it hides behind (its kernels occupy SMs and HBM).")
    half_bandwidth_MiB: NonNegativeFloat = Field(
        description="Message size at which half the large-message bus bandwidth is reached: "
        "busbw(S) = busbw_max · S / (S + S½), i.e. a latency that grows with the bus factor.")
    provenance: str


class HostEfficiency(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dispatch_us_per_kernel: NonNegativeFloat = Field(
        description="CPU time an eager framework spends to issue one kernel; a layer cannot run "
        "faster than its kernel count times this.")
    provenance: str


class MemoryOverheads(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cuda_context_gib: NonNegativeFloat
    allocator_reserve_fraction: NonNegativeFloat | None = Field(
        None, lt=1, description="Fraction of device memory lost to the caching allocator's "
        "fragmentation and reserve, as measured on this machine; null = the software stack's "
        "documented figure (costmodel/data/stacks/).")
    nccl_buffers_gib_per_group: NonNegativeFloat
    provenance: str


class GemmDerating(BaseModel):
    """The one rule, the same for every GPU, by which training-shape GEMMs run below the best
    shape of a MAMF sweep (shared/reference/kernels.md: 'MAMF is a ceiling for one best shape;
    training shapes run below it')."""

    model_config = ConfigDict(extra="forbid")

    mamf_fraction: float = Field(gt=0, le=1, description="Sustained GEMM throughput at "
                                 "training shapes / MAMF, before wave quantization.")
    provenance: str


class Efficiency(BaseModel):
    archs: dict[str, ArchEfficiency] = Field(
        description="By GPU architecture (ampere, hopper, ...); must include 'default'.")
    collectives: dict[LinkClass, CollectiveEfficiency] = Field(
        description="Must give both intra_node and inter_node.")
    host: HostEfficiency
    memory: MemoryOverheads
    gemm: GemmDerating | None = Field(
        None, description="GEMMs at training shapes relative to the measured ceiling (MAMF); "
        "null = 1 (every GEMM at the ceiling times its wave quantization).")

    @field_validator("archs")
    @classmethod
    def _has_default(cls, v: dict[str, ArchEfficiency]) -> dict[str, ArchEfficiency]:
        if "default" not in v:
            raise ValueError("needs a 'default' entry for GPUs of other architectures")
        return v

    @field_validator("collectives")
    @classmethod
    def _both_links(cls, v: dict[str, CollectiveEfficiency]) -> dict[str, CollectiveEfficiency]:
        missing = {"intra_node", "inter_node"} - set(v)
        if missing:
            raise ValueError(f"missing link classes: {', '.join(sorted(missing))}")
        return v


class CalibrationProfile(BaseModel):
    """A calibration profile (see the module docstring for the format)."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["meshplan-calibration/1"] = FORMAT
    name: str
    # declared before ``gpu`` so that gpu's validator sees it (pydantic validates in order)
    device: MeasuredDevice | None = Field(
        None, description="The device measured, when it is not a catalog GPU (e.g. the CPU of "
        "a CI host): its measured peaks, memory and links. A cluster pool of an estimate "
        "request that carries this profile names it by device.name.")
    gpu: str | None = Field(None, validate_default=True,
                            description="GPU type it was measured on (catalog name or alias, or "
                            "device.name); null = any.")
    provenance: Provenance

    @field_validator("gpu")
    @classmethod
    def _canonical_gpu(cls, v: str | None, info: ValidationInfo) -> str | None:
        from costmodel.specs.gpus import canonical_gpu_name

        device = info.data.get("device")
        if v is None:
            return device.name if device is not None else None
        if device is not None:
            if v.strip() != device.name:
                raise ValueError(f"must be the measured device's name {device.name!r}")
            return device.name
        return canonical_gpu_name(v)
    measurements: Measurements = Measurements()
    efficiency: Efficiency | None = Field(
        None, description="Overrides of the default efficiency model; null = the default's.")

    def arch_efficiency(self, arch: str) -> ArchEfficiency:
        eff = self.efficiency or default_profile().efficiency
        assert eff is not None
        return eff.archs.get(arch) or eff.archs["default"]

    @property
    def eff(self) -> Efficiency:
        eff = self.efficiency or default_profile().efficiency
        assert eff is not None
        return eff

    # -------------------------------------------------------------- measured interpolation
    @cached_property
    def _gemm_curve(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per dtype: sorted log(FLOPs) and achieved FLOP/s of the measured GEMMs."""
        by: dict[str, list[tuple[float, float]]] = {}
        for p in self.measurements.gemm:
            flops = 2.0 * p.m * p.n * p.k
            by.setdefault(p.dtype, []).append((np.log(flops), p.tflops * 1e12))
        return {dt: _mean_curve(pts) for dt, pts in by.items()}

    def gemm_rate(self, flops: np.ndarray, dtype: str) -> np.ndarray | None:
        """Measured achieved FLOP/s for GEMMs of ``flops`` (None if nothing measured)."""
        curve = self._gemm_curve.get(dtype)
        if curve is None:
            return None
        return np.interp(np.log(np.maximum(flops, 1.0)), curve[0], curve[1])

    @cached_property
    def _attn_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per dtype: sorted log(forward FLOPs actually computed) and achieved forward and
        backward FLOP/s of the measured attention calls (causal work counted as half, as
        FlashAttention's benchmark counts it; backward = 2.5 × forward FLOPs)."""
        by: dict[str, list[tuple[float, float, float]]] = {}
        for p in self.measurements.attention:
            f = 4.0 * p.batch * p.heads * p.seq_q * p.seq_kv * p.head_dim
            if p.causal:
                f /= 2
            by.setdefault(p.dtype, []).append((np.log(f), f / p.fwd_s, 2.5 * f / p.bwd_s))
        out = {}
        for dt, pts in by.items():
            xs, fw = _mean_curve([(x, a) for x, a, _ in pts])
            _, bw = _mean_curve([(x, b) for x, _, b in pts])
            out[dt] = (xs, fw, bw)
        return out

    def attention_rates(self, flops_fwd: np.ndarray, dtype: str
                        ) -> tuple[np.ndarray, np.ndarray] | None:
        """Measured (forward, backward) attention FLOP/s at these forward FLOPs, or None."""
        curve = self._attn_curves.get(dtype)
        if curve is None:
            return None
        x = np.log(np.maximum(flops_fwd, 1.0))
        return np.interp(x, curve[0], curve[1]), np.interp(x, curve[0], curve[2])

    def layer_time(self, model_key: tuple[int, int, int, int, int, int, int, str]
                   ) -> tuple[float, float] | None:
        """Measured (forward, backward) seconds of one block of exactly this shape
        ``(hidden, ffn, heads, kv_heads, seq_len, micro_batch, tp, dtype)``, or None."""
        hits = [p for p in self.measurements.layers
                if (p.hidden_size, p.intermediate_size, p.num_attention_heads,
                    p.num_key_value_heads, p.seq_len, p.micro_batch_size, p.tp, p.dtype)
                == model_key]
        if not hits:
            return None
        return (float(np.mean([p.fwd_s for p in hits])), float(np.mean([p.bwd_s for p in hits])))

    def layer_split_time(self, model_key: tuple[int, int, int, int, int, int, int, str]
                         ) -> tuple[float, float] | None:
        """Measured (input-gradient, weight-gradient) seconds of one block of exactly this
        shape when its backward runs split in two passes, or None."""
        hits = [p for p in self.measurements.layers
                if (p.hidden_size, p.intermediate_size, p.num_attention_heads,
                    p.num_key_value_heads, p.seq_len, p.micro_batch_size, p.tp, p.dtype)
                == model_key and p.bwd_input_s is not None and p.bwd_weight_s is not None]
        if not hits:
            return None
        return (float(np.mean([p.bwd_input_s for p in hits])),
                float(np.mean([p.bwd_weight_s for p in hits])))

    @cached_property
    def _coll_curves(self) -> dict[tuple[str, str], list[tuple[int, np.ndarray, np.ndarray]]]:
        by: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
        for p in self.measurements.collectives:
            by.setdefault((p.collective, p.link, p.group_size), []).append(
                (np.log(p.bytes), p.busbw_GBps * 1e9))
        out: dict[tuple[str, str], list[tuple[int, np.ndarray, np.ndarray]]] = {}
        for (coll, link, n), pts in by.items():
            xs, ys = _mean_curve(pts)
            out.setdefault((coll, link), []).append((n, xs, ys))
        return out

    def collective_busbw(self, collective: str, link: str, group: int,
                         nbytes: np.ndarray) -> np.ndarray | None:
        """Measured bus bandwidth (B/s) at the nearest measured group size, or None."""
        curves = self._coll_curves.get((collective, link))
        if not curves:
            return None
        _, xs, ys = min(curves, key=lambda c: (abs(np.log(c[0]) - np.log(max(group, 1))), c[0]))
        return np.interp(np.log(np.maximum(nbytes, 1.0)), xs, ys)


def _mean_curve(points: list[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Sort by x and average duplicate x values."""
    pts = sorted(points)
    xs: list[float] = []
    ys: list[list[float]] = []
    for x, y in pts:
        if xs and abs(xs[-1] - x) < 1e-12:
            ys[-1].append(y)
        else:
            xs.append(x)
            ys.append([y])
    return np.array(xs), np.array([sum(v) / len(v) for v in ys])


def load_profile(text: str) -> CalibrationProfile:
    return CalibrationProfile.model_validate(json.loads(text))


@cache
def default_profile() -> CalibrationProfile:
    """The shipped default efficiency model (``costmodel/data/profiles/default.json``)."""
    text = resources.files("costmodel").joinpath("data/profiles/default.json").read_text()
    prof = load_profile(text)
    if prof.efficiency is None:
        raise ValueError("the default profile must define the efficiency model")
    return prof
