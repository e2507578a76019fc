"""Measured kernel ceilings: GEMM (maximum achievable matmul FLOP/s per GPU and precision) and
fused attention (TFLOP/s by kernel, architecture, head dim, sequence length, mask and pass).

The figures are kernel micro-benchmarks shipped as data with their sources
(``costmodel/data/kernels/gemm.json`` and ``attention.json``); nothing here is fitted to
training step times. The rules that turn them into a rate for a shape they were not measured
at are written once, here:

* **GEMM** (:func:`gemm_ceiling`): the GPU's own MAMF at the precision; else the measured
  fraction MAMF / datasheet peak of a named sibling (same die) times this GPU's peak; else the
  GPU's own measured fraction at another precision (with a warning); else a conservative
  default fraction with a warning. :func:`costmodel.ops.gemm_time` then derates
  the ceiling per shape: by the architecture's measured shape grid where one exists
  (:class:`GemmShapes`, XLA's GEMM table for Hopper and Blackwell), else by wave quantization
  relative to the shape at which the ceiling was measured, plus a per-kernel latency.
* **Attention** (:func:`attention_rates`): piecewise interpolation of the measured curve in
  the sequence length (through every measured point, a saturating ``r = R·s / (s + S)`` arc
  between neighbours, so monotone where the data are; held at the end points outside); a
  backward measured without a causal mask times the kernel's forward causal / non-causal
  ratio at the same length; a curve of the fused forward + backward pass used for both passes;
  head dims between measured ones interpolated in log2(head dim), outside them clamped;
  another GPU of the measured architecture scaled by the ratio of datasheet peaks; an
  architecture without the kernel measured scaled from a measured one by the ratio of the two
  GPUs' GEMM ceilings (or by a sourced factor from the data file), with a warning.
* **Collectives inside an NVLink node** (:func:`collective_plateaus`): the largest bus
  bandwidth XLA's collective table measured for the collective and group size on the
  architecture (``collectives.json``), scaled by the node's link rate over the measured
  node's, interpolated in log2 of the group size between 2, 4 and 8 and held at 8 above it; it
  caps the bus bandwidth of :func:`costmodel.ops.collective_time`'s formula.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from costmodel.errors import problem
from costmodel.specs.gpus import GPUType, catalog

GEMM_DTYPE = {"bf16": "bf16", "fp16": "bf16", "fp8": "fp8"}
"""The MAMF table a precision's GEMMs use: fp16 runs on the bf16 tensor cores at their rate."""

DEFAULT_WAVE_SHAPE = (8192, 8192, 8192)


@dataclass(frozen=True)
class GemmCeiling:
    """The GEMM ceiling of one GPU at one precision."""

    flops: float
    """FLOP/s of the best measured shape."""
    shape: tuple[int, int, int]
    """(m, n, k) at which it was measured (the wave-quantization reference)."""
    source: str
    warning: str | None = None
    """Set when the figure is not a measurement of this GPU's family."""


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        resources.files("costmodel").joinpath(f"data/kernels/{name}").read_text())
    return data


@cache
def gemm_table() -> dict[str, Any]:
    return _load("gemm.json")


def gemm_ceiling(gpu: GPUType, precision: str) -> GemmCeiling:
    """The GEMM ceiling of ``gpu`` at ``precision`` (module docstring: own, sibling, default)."""
    table = gemm_table()
    dtype = GEMM_DTYPE.get(precision, precision)
    peak = gpu.peak_flops(precision)
    own = table["mamf"].get(gpu.name, {}).get(dtype)
    if own is not None:
        return GemmCeiling(own["tflops"] * 1e12, tuple(own["shape"]),
                           f"measured MAMF of {gpu.name} ({own['tflops']:g} TFLOP/s {dtype}, "
                           f"torch {own['torch']})")
    sib = table["siblings"].get(gpu.name)
    if sib is not None:
        ref = catalog().get(sib["of"])
        meas = table["mamf"].get(sib["of"], {}).get(dtype)
        if ref is not None and meas is not None and dtype in ref.peak_tflops:
            frac = meas["tflops"] / ref.peak_tflops[precision if precision in ref.peak_tflops
                                                     else dtype]
            return GemmCeiling(frac * peak, tuple(meas["shape"]),
                               f"{sib['of']}'s measured MAMF fraction {frac:.3f} of peak "
                               f"({sib['why']})", warning=sib.get("warning"))
    for other, meas in table["mamf"].get(gpu.name, {}).items():
        if other in gpu.peak_tflops:
            frac = meas["tflops"] / gpu.peak_tflops[other]
            return GemmCeiling(
                frac * peak, tuple(meas["shape"]),
                f"{gpu.name}'s measured {other} MAMF fraction {frac:.3f} of peak",
                warning=(f"no measured {dtype} GEMM ceiling for {gpu.name}: its measured "
                         f"{other} fraction of peak ({frac:.0%}) applied to the {precision} "
                         "peak"))
    frac = float(table["unmeasured_fraction"]["value"])
    return GemmCeiling(
        frac * peak, DEFAULT_WAVE_SHAPE, table["unmeasured_fraction"]["source"],
        warning=(f"no measured GEMM ceiling for {gpu.name} at {precision}: GEMMs at the "
                 f"conservative default of {frac:.0%} of the datasheet peak; measure with "
                 "meshplan-runtime calibrate"))


STEPS_PER_OCTAVE = 8
"""Resolution of the lookup table a measured GEMM grid is expanded into (1/8 octave: a
dimension is rounded by at most 4.4 %, and the measured points are table points)."""


class GemmShapes:
    """How a GEMM's rate depends on its shape on one architecture, from a measured grid
    (``costmodel/data/kernels/gemm_shapes.json``): the measured rate at (m, n, k) over the
    grid's best rate, so 1 at the best measured shape.

    Between grid points the efficiency is interpolated linearly in log2 of each dimension
    (the batch b of the grid folds into m: a (b, m) entry at the largest m is an m = b·m
    GEMM, which holds the same work in the same tiles); past the largest grid point it is
    held (the grid's best shapes are saturated: 4096³ within 1 % of its neighbours on
    Hopper); below the smallest (256) the output tile is underfilled, so the efficiency falls
    in proportion to the dimension. The interpolation is done once, into a table at
    :data:`STEPS_PER_OCTAVE` steps per octave that a call reads at the nearest step (the
    search evaluates GEMMs over many candidate arrays)."""

    def __init__(self, m: tuple[float, ...], n: tuple[float, ...], k: tuple[float, ...],
                 efficiency: np.ndarray, source: str) -> None:
        self.axes = tuple(np.log2(np.asarray(a, dtype=float)) for a in (m, n, k))
        self.lo = [float(a[0]) for a in self.axes]
        self.source = source
        fine = [np.arange(round((a[-1] - a[0]) * STEPS_PER_OCTAVE) + 1) / STEPS_PER_OCTAVE
                + a[0] for a in self.axes]
        self.top = [len(f) - 1 for f in fine]
        weights = []
        for grid, f in zip(self.axes, fine, strict=True):
            i = np.clip(np.searchsorted(grid, f, side="right") - 1, 0, len(grid) - 2)
            weights.append((i, (f - grid[i]) / (grid[i + 1] - grid[i])))
        (i, wi), (j, wj), (q, wq) = weights
        table = np.zeros((len(fine[0]), len(fine[1]), len(fine[2])))
        for di in (0, 1):
            for dj in (0, 1):
                for dq in (0, 1):
                    w = (np.where(di, wi, 1 - wi)[:, None, None]
                         * np.where(dj, wj, 1 - wj)[None, :, None]
                         * np.where(dq, wq, 1 - wq)[None, None, :])
                    table += w * efficiency[np.ix_(i + di, j + dj, q + dq)]
        self.table = table

    def __call__(self, m: Any, n: Any, k: Any) -> np.ndarray:
        idx: list[Any] = []
        under: Any = 1.0
        for x, lo, top in zip((m, n, k), self.lo, self.top, strict=True):
            if np.ndim(x) == 0:  # a scalar dimension (most calls): no array work
                step = (math.log2(float(x)) - lo) * STEPS_PER_OCTAVE
                idx.append(min(max(round(step), 0), int(top)))
                if step < 0:
                    under = under * 2.0 ** (step / STEPS_PER_OCTAVE)
                continue
            steps = (np.log2(x) - lo) * STEPS_PER_OCTAVE
            idx.append(np.clip(np.rint(steps), 0, top).astype(np.intp))
            if np.any(steps < 0):
                under = under * np.minimum(1.0, np.exp2(steps / STEPS_PER_OCTAVE))
        return np.asarray(self.table[idx[0], idx[1], idx[2]] * under)


@cache
def _gemm_shape_tables() -> dict[tuple[str, str], GemmShapes]:
    raw = _load("gemm_shapes.json")
    grid = raw["grid"]
    batch, dims = grid["b"], grid["m"]
    n_b, n_d = len(batch), len(dims)
    # fold the batch into m: plain GEMMs up to the largest m, then b·m at the largest m
    rows = [(0, i) for i in range(n_d)] + [(bi, n_d - 1) for bi in range(1, n_b)]
    m_axis = tuple(float(batch[bi] * dims[mi]) for bi, mi in rows)
    out: dict[tuple[str, str], GemmShapes] = {}
    for arch, entry in raw["archs"].items():
        for dtype in ("bf16", "fp8"):
            if dtype not in entry:
                continue
            cube = np.asarray(entry[dtype], dtype=float).reshape(n_b, n_d, n_d, n_d)
            rates = np.stack([cube[bi, mi] for bi, mi in rows])
            out[(arch, dtype)] = GemmShapes(
                m_axis, tuple(map(float, grid["n"])), tuple(map(float, grid["k"])),
                rates / rates.max(),
                f"{dtype} GEMMs measured by XLA on {entry['measured_on']} "
                f"({entry['xla_device']}; gemm_shapes.json)")
    return out


def gemm_shapes(gpu: GPUType, precision: str) -> GemmShapes | None:
    """The measured shape dependence of ``gpu``'s GEMMs at ``precision``: its architecture's
    grid for that operand type, else (fp8 on an architecture whose fp8 grid is missing or
    was left out) its bf16 grid; None for an architecture without a measured grid, whose
    GEMMs keep the wave-quantization rule of :func:`costmodel.ops.gemm_time`."""
    tables = _gemm_shape_tables()
    dtype = GEMM_DTYPE.get(precision, precision)
    return tables.get((gpu.arch, dtype)) or tables.get((gpu.arch, "bf16"))


# -------------------------------------------------------------------------------- collectives
PLATEAU_GROUPS = np.array([2.0, 4.0, 8.0])
"""The group sizes XLA's collective table measured (every group of one 8-GPU node at once)."""


@dataclass(frozen=True, eq=False)
class CollectivePlateaus:
    """The measured maximum bus bandwidth (B/s) of each collective inside one NVLink node, by
    group size, scaled to a node's link rate."""

    busbw: dict[str, np.ndarray]
    """Collective → B/s at the group sizes :data:`PLATEAU_GROUPS`."""
    source: str
    _scalar: dict[tuple[str, float], float | None] = field(
        default_factory=dict, compare=False, repr=False)
    """Memo of one group's cap (a single plan's estimate asks the same few sizes often)."""

    def __call__(self, collective: str, n: Any) -> Any:
        """Bus bandwidth cap of ``collective`` over groups of ``n`` (scalar or array) GPUs:
        interpolated in log2(n) between the measured sizes, held at the nearest outside them
        (an NVL72 domain's larger groups take the 8-GPU plateau); None for a collective the
        table lacks (send/recv). A float for a scalar ``n``, else an array."""
        if isinstance(n, float | int) or np.ndim(n) == 0:
            key = (collective, float(n))
            if key not in self._scalar:
                cap = self._interp(collective, n)
                self._scalar[key] = None if cap is None else float(cap)
            return self._scalar[key]
        return self._interp(collective, n)

    def _interp(self, collective: str, n: Any) -> np.ndarray | None:
        table = self.busbw.get(collective)
        if table is None:
            return None
        x = np.log2(np.clip(np.asarray(n, dtype=float), 2.0, 8.0))
        return np.interp(x, np.log2(PLATEAU_GROUPS), table)


@cache
def _collective_table() -> dict[str, Any]:
    return _load("collectives.json")


@cache
def _plateaus(arch: str) -> tuple[dict[str, np.ndarray], float, str] | None:
    entry = _collective_table()["archs"].get(arch)
    if entry is None:
        return None
    out = {c: np.array([max(b for _, b in by_n[str(int(n))]) * 1e9 for n in PLATEAU_GROUPS])
           for c, by_n in entry["busbw_GBps"].items()}
    return out, float(entry["link_GBps"]), str(entry["measured_on"])


def collective_plateaus(gpu: GPUType, link_GBps: float) -> CollectivePlateaus | None:
    """The measured collective plateaus for ``gpu``'s architecture in a node whose link runs
    at ``link_GBps`` per direction (the pool's), or None where nothing was measured (an
    architecture outside the table, or a PCIe node). One object per (architecture, link)."""
    if gpu.intra_node != "nvlink":
        return None
    return _scaled_plateaus(gpu.arch, float(link_GBps))


@cache
def _scaled_plateaus(arch: str, link_GBps: float) -> CollectivePlateaus | None:
    found = _plateaus(arch)
    if found is None:
        return None
    busbw, ref_link, measured_on = found
    scale = link_GBps / ref_link
    return CollectivePlateaus(
        busbw={c: v * scale for c, v in busbw.items()},
        source=f"XLA's collective table measured on {measured_on} (collectives.json)"
               + (f", scaled by the link rate {link_GBps:g}/{ref_link:g} GB/s"
                  if scale != 1.0 else ""))


# ---------------------------------------------------------------------------------- attention
@dataclass(frozen=True)
class _Curve:
    seq: np.ndarray
    tflops: np.ndarray
    source: str

    def __call__(self, s: np.ndarray) -> np.ndarray:
        return _interp_saturating(self.seq, self.tflops, s)


def _interp_saturating(xs: np.ndarray, ys: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Through every point (xs, ys); between neighbours the arc r = R·s/(s + S) through both
    (a linear interpolation where that arc does not exist: equal or falling values); held at
    the end values outside [xs[0], xs[-1]]."""
    s = np.clip(np.asarray(s, dtype=float), xs[0], xs[-1])
    out = np.interp(s, xs, ys)
    for i in range(len(xs) - 1):
        x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
        # r(x) = R x / (x + S) through both points: y0 (x0 + S) x1 / x0 = y1 (x1 + S)
        den = y0 * x1 / x0 - y1
        if y1 <= y0 or den <= 0:
            continue
        S = (y1 * x1 - y0 * x1) / den
        R = y0 * (x0 + S) / x0
        inside = (s >= x0) & (s <= x1)
        out = np.where(inside, R * s / (s + S), out)
    return out


@dataclass(frozen=True)
class AttentionRates:
    """Forward and backward FLOP/s of a fused attention kernel, and where they come from."""

    fwd: np.ndarray
    bwd: np.ndarray
    kernel: str
    source: str
    warning: str | None = None


KERNEL_ARCHS: dict[str, tuple[str, ...] | None] = {
    "flash1": ("ampere", "ada", "hopper"),
    "flash2": ("ampere", "ada", "hopper", "blackwell", "cdna2", "cdna3", "cdna4"),
    "flash3": ("hopper",),
    "cudnn": ("ampere", "ada", "hopper", "blackwell"),
    "triton": ("ampere", "ada", "hopper", "blackwell", "cdna3", "cdna4"),
    "unfused": None,
}
"""Architectures each kernel runs on (None = every one): FlashAttention-1 sm75-sm90
(Dao-AILab/flash-attention v1 README); FlashAttention-2 sm80+ and ROCm CK for MI200/MI300
(flash-attention README 'Installation and features'); FlashAttention-3 Hopper only ('H100 /
H800 GPU, CUDA >= 12.3', flash-attention hopper/README); cuDNN fused attention sm80+ (cuDNN
9 graph API, 'Fused Flash Attention' support matrix); the Triton flash kernel wherever Triton
targets (NVIDIA sm80+, AMD CDNA3+)."""

KERNEL_NAMES = {"flash1": "FlashAttention-1", "flash2": "FlashAttention-2",
                "flash3": "FlashAttention-3", "cudnn": "cuDNN fused attention",
                "triton": "Triton flash attention", "unfused": "unfused attention"}


@cache
def _attention_table() -> tuple[dict[tuple[str, str], dict[tuple[int, bool, str], _Curve]],
                                dict[tuple[str, str], dict[str, Any]], dict[tuple[str, str], str]]:
    raw = _load("attention.json")
    curves: dict[tuple[str, str], dict[tuple[int, bool, str], _Curve]] = {}
    measured_on: dict[tuple[str, str], str] = {}
    for c in raw["curves"]:
        key = (c["kernel"], c["arch"])
        curves.setdefault(key, {})[(int(c["head_dim"]), bool(c["causal"]), c["pass"])] = _Curve(
            np.asarray(c["seq"], dtype=float), np.asarray(c["tflops"], dtype=float) * 1e12,
            c["source"])
        measured_on[key] = c["measured_on"]
    scaled = {(s["kernel"], s["arch"]): s for s in raw.get("scaled", [])}
    return curves, scaled, measured_on


def _head_rates(cs: dict[tuple[int, bool, str], _Curve], hd: int, s: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """(fwd, bwd) causal rates at one measured head dim (module docstring rules), or None."""
    def ratio() -> np.ndarray | None:  # forward causal / non-causal of this head dim, or 128's
        for h in (hd, 128):
            c, n = cs.get((h, True, "fwd")), cs.get((h, False, "fwd"))
            if c is not None and n is not None:
                return c(s) / n(s)
        return None

    combined = cs.get((hd, True, "fwd_bwd"))
    fwd: np.ndarray | None = None
    if (hd, True, "fwd") in cs:
        fwd = cs[(hd, True, "fwd")](s)
    elif (hd, False, "fwd") in cs and (r := ratio()) is not None:
        fwd = cs[(hd, False, "fwd")](s) * r
    elif combined is not None:
        fwd = combined(s)
    bwd: np.ndarray | None = None
    if (hd, True, "bwd") in cs:
        bwd = cs[(hd, True, "bwd")](s)
    elif combined is not None and (hd, True, "fwd") in cs:
        # 3.5 units of work at the fused rate = 1 forward unit + 2.5 backward units
        bwd = 2.5 / np.maximum(3.5 / combined(s) - 1.0 / fwd, 1e-30)  # type: ignore[operator]
    elif (hd, False, "bwd") in cs and (r := ratio()) is not None:
        bwd = cs[(hd, False, "bwd")](s) * r
    elif combined is not None:
        bwd = combined(s)
    elif fwd is not None and hd != 128 and (ref := _head_rates(cs, 128, s)) is not None:
        bwd = fwd * ref[1] / ref[0]  # this head dim's forward, 128's backward/forward ratio
    if fwd is None or bwd is None:
        return None
    return fwd, bwd


def _measured_rates(kernel: str, arch: str, head_dim: float, s: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, str] | None:
    curves, _, measured_on = _attention_table()
    cs = curves.get((kernel, arch))
    if not cs:
        return None
    dims = sorted({hd for hd, _, _ in cs})
    usable = [(hd, r) for hd in dims if (r := _head_rates(cs, hd, s)) is not None]
    if not usable:
        return None
    x = math.log2(max(head_dim, 1.0))
    xs = [math.log2(hd) for hd, _ in usable]
    if x <= xs[0]:
        fwd, bwd = usable[0][1]
    elif x >= xs[-1]:
        fwd, bwd = usable[-1][1]
    else:
        j = next(i for i in range(len(xs) - 1) if xs[i] <= x <= xs[i + 1])
        w = (x - xs[j]) / (xs[j + 1] - xs[j])
        (f0, b0), (f1, b1) = usable[j][1], usable[j + 1][1]
        fwd, bwd = f0 + w * (f1 - f0), b0 + w * (b1 - b0)
    srcs = sorted({c.source for c in cs.values()})
    return fwd, bwd, measured_on[(kernel, arch)] + ": " + "; ".join(srcs)


def attention_rates(kernel: str, gpu: GPUType, head_dim: float, seq: Any) -> AttentionRates:
    """Causal forward and backward FLOP/s of ``kernel`` on ``gpu`` for heads of ``head_dim``
    at sequence length(s) ``seq`` (per-rank query length; see the module docstring).

    Raises a :class:`~costmodel.errors.SpecError` on ``plan.attention`` when the kernel does
    not run on the GPU's architecture (FlashAttention-3 outside Hopper, say)."""
    if np.ndim(seq) != 0:
        return _attention_rates(kernel, gpu, head_dim, seq)
    # one plan's estimate asks the same few questions thousands of times in a search; a GPU
    # type holds dicts (not hashable), so its repr stands for all its figures in the key
    key = (kernel, repr(gpu), float(head_dim), float(seq))
    out = _SCALAR_RATES.get(key)
    if out is None:
        out = _attention_rates(kernel, gpu, head_dim, seq)
        for a in (out.fwd, out.bwd):  # shared between callers: read-only
            if isinstance(a, np.ndarray):
                a.flags.writeable = False
        if len(_SCALAR_RATES) >= _SCALAR_RATES_MAX:
            _SCALAR_RATES.clear()
        _SCALAR_RATES[key] = out
    return out


_SCALAR_RATES: dict[tuple[str, str, float, float], AttentionRates] = {}
_SCALAR_RATES_MAX = 4096


def _attention_rates(kernel: str, gpu: GPUType, head_dim: float, seq: Any) -> AttentionRates:
    archs = KERNEL_ARCHS.get(kernel)
    known = {a for arch_list in KERNEL_ARCHS.values() if arch_list for a in arch_list}
    # a device outside the GPU families (a calibrated CPU, say) is not refused: it takes the
    # GEMM-ceiling-scaled curve below, with its warning
    if archs is not None and gpu.arch in known and gpu.arch not in archs:
        raise problem("plan.attention",
                      f"{KERNEL_NAMES.get(kernel, kernel)} does not run on {gpu.name} "
                      f"({gpu.arch}); it runs on: {', '.join(archs)}")
    s = np.asarray(seq, dtype=float)
    _, scaled, measured_on = _attention_table()
    meas = _measured_rates(kernel, gpu.arch, head_dim, s)
    if meas is not None:
        fwd, bwd, src = meas
        ref = catalog()[measured_on[(kernel, gpu.arch)]]
        f = gpu.peak_flops("bf16") / ref.peak_flops("bf16")
        note = "" if f == 1.0 else f"; scaled by the datasheet peak ratio {f:.3f} to {ref.name}"
        return AttentionRates(fwd * f, bwd * f, kernel, src + note)
    sc = scaled.get((kernel, gpu.arch))
    if sc is not None:
        base = _measured_rates(kernel, sc["from_arch"], head_dim, s)
        if base is not None:
            fwd, bwd, src = base
            fac = float(sc["factor"])
            return AttentionRates(
                fwd * fac, bwd * fac, kernel, f"{src}; x {fac:g}: {sc['source']}",
                warning=(f"{KERNEL_NAMES[kernel]} on {gpu.arch}: no published curve; the "
                         f"{sc['from_arch']} measurement scaled by {fac:g}, as "
                         f"costmodel/data/kernels/attention.json derives it: {sc['source']}"))
    # another architecture's measurement, scaled by the ratio of GEMM ceilings
    for ref_arch in ("hopper", "ampere"):
        base = _measured_rates(kernel, ref_arch, head_dim, s)
        if base is None:
            continue
        ref = catalog()[measured_on[(kernel, ref_arch)]]
        # a device without bf16 tensor cores (a calibrated CPU in fp32, say): its own dtype
        dt = "bf16" if "bf16" in gpu.peak_tflops else next(iter(gpu.peak_tflops))
        fac = (gemm_ceiling(gpu, dt).flops / gemm_ceiling(ref, "bf16").flops)
        fwd, bwd, src = base
        return AttentionRates(
            fwd * fac, bwd * fac, kernel, f"{src}; scaled by GEMM ceilings x {fac:.3f}",
            warning=(f"{KERNEL_NAMES[kernel]} on {gpu.name}: no measurement for {gpu.arch}; "
                     f"{ref.name}'s curve scaled by the GEMM-ceiling ratio {fac:.2f}: "
                     "measure with meshplan-runtime calibrate"))
    raise problem("plan.attention", f"no measurement of {KERNEL_NAMES.get(kernel, kernel)} on "
                  "any architecture; choose flash2, cudnn or unfused")


@cache
def _published_mfu() -> dict[str, Any]:
    text = resources.files("costmodel").joinpath("data/published_mfu.json").read_text()
    return dict(json.loads(text)["best"])


def best_published_mfu(arch: str, precision: str) -> tuple[float, str] | None:
    """(best published MFU, its source) for jobs of ``precision`` on ``arch``; None where no
    public run is on file (``costmodel/data/published_mfu.json``)."""
    entry = _published_mfu().get(arch, {}).get(precision)
    return None if entry is None else (float(entry["mfu"]), str(entry["source"]))
