"""From raw measurements to a calibration profile (pure: numpy and the cost model only).

``meshplan-runtime calibrate`` collects raw timings on every rank (:mod:`runtime.worker.
calibrate`); rank 0 turns them into a ``meshplan-calibration/1`` profile here, so the fitting
and the conventions are testable without torch:

* **bus bandwidth** — nccl-tests' convention (NVIDIA/nccl-tests ``doc/PERFORMANCE.md``):
  ``algbw = S / t`` with S the message size (the all-reduce buffer, the all-gather output, the
  reduce-scatter input, the send/recv buffer) and ``busbw = algbw × factor(n)``, factor
  ``2(n−1)/n`` for all-reduce, ``(n−1)/n`` for all-gather and reduce-scatter, 1 for send/recv
  (the cost model's own :data:`costmodel.ops.BUS_FACTOR`);
* **per-kernel time** — the intercept of a least-squares fit ``t = a + F / r`` over the smallest
  measured GEMMs (``F.linear`` with autograd recording, as training calls it): what one eager
  operator costs regardless of its work. On a CPU the host runs the kernels itself, so
  dispatch and execution are serial: the profile's ``kernel_latency_us`` and
  ``dispatch_us_per_kernel`` are both this fitted time (the dispatch floor then never exceeds
  the modelled time, which already contains it);
* **collective fallback** — ``t = α + factor·(S + S½)/B`` fitted on the all-reduce sweep (α =
  the smallest message's time, B from the slope), used only for collectives or group sizes the
  sweep did not cover;
* **device** — for a device the catalog does not list (a CPU, an unlisted GPU), the measured
  figures: peak = best sustained GEMM rate, memory bandwidth = copy rate, link = best
  all-reduce bus bandwidth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from costmodel.ops import BUS_FACTOR
from costmodel.profile import CalibrationProfile, default_profile


def bus_factor(collective: str, n: int) -> float:
    """nccl-tests' bus-bandwidth factor of ``collective`` over ``n`` ranks."""
    return float(BUS_FACTOR[collective](np.asarray(float(n))))


def algbw_GBps(nbytes: float, seconds: float) -> float:
    return nbytes / seconds / 1e9


def busbw_GBps(collective: str, n: int, nbytes: float, seconds: float) -> float:
    """nccl-tests' bus bandwidth in GB/s (see the module docstring)."""
    return algbw_GBps(nbytes, seconds) * bus_factor(collective, n)


def fit_latency(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares ``t = a + F / r`` over (FLOPs, seconds) points: (a seconds, r FLOP/s).
    The intercept is clipped at 0 and, with fewer than two distinct sizes, is the smallest
    time."""
    if not points:
        raise ValueError("no points to fit")
    f = np.array([p[0] for p in points], dtype=float)
    t = np.array([p[1] for p in points], dtype=float)
    if len(set(f.tolist())) < 2:
        return float(t.min()), float(np.max(f / t))
    slope, icpt = np.polyfit(f, t, 1)
    if slope <= 0:
        return float(t.min()), float(np.max(f / t))
    return max(0.0, float(icpt)), float(1.0 / slope)


def fit_collective(collective: str, n: int, points: list[tuple[int, float]]
                   ) -> tuple[float, float, float]:
    """(α µs, large-message busbw GB/s, half-bandwidth size MiB) of ``t = α + factor·(S +
    S½)/B`` from (bytes, seconds) points of one collective and group size."""
    pts = sorted(points)
    s = np.array([p[0] for p in pts], dtype=float)
    t = np.array([p[1] for p in pts], dtype=float)
    alpha = float(t[0])
    fac = bus_factor(collective, n)
    big = s >= s.max() / 16  # the bandwidth regime
    if big.sum() >= 2:
        slope, icpt = np.polyfit(s[big], t[big], 1)
    else:
        slope, icpt = t[-1] / s[-1], 0.0
    slope = max(float(slope), 1e-30)
    bw = fac / slope
    half = max(0.0, (float(icpt) - alpha) * bw / fac)
    return alpha * 1e6, bw / 1e9, half / 2**20


@dataclass
class Raw:
    """What the ranks measured (times in seconds, rates as measured), JSON-friendly."""

    device_name: str
    """``torch.cuda.get_device_name`` or the CPU model name."""
    device_type: str
    """``cuda`` or ``cpu``."""
    dtype: str
    """Precision the GEMMs, attention and blocks ran in (bf16 on CUDA, fp32 on a CPU)."""
    world_size: int
    nodes: int
    memory_gib: float
    """Memory one rank may use (CUDA device memory; host RAM / local ranks on a CPU)."""
    compute_units: int
    gemm: list[dict[str, Any]] = field(default_factory=list)
    """{m, n, k, seconds}: forward, input-gradient and weight-gradient GEMMs of a linear layer
    (6·m·n·k FLOPs), mean over ranks of the median."""
    latency: list[dict[str, Any]] = field(default_factory=list)
    """{m, n, k, seconds}: one small ``F.linear`` call with autograd recording."""
    attention: list[dict[str, Any]] = field(default_factory=list)
    """{batch, heads, seq, head_dim, fwd_s, bwd_s}, causal."""
    copy_GBps: float | None = None
    """Bytes read + written per second of a large device copy, per rank, all ranks at once."""
    collectives: list[dict[str, Any]] = field(default_factory=list)
    """{collective, group_size, bytes, link, seconds}: the slowest rank's median."""
    layers: list[dict[str, Any]] = field(default_factory=list)
    """{hidden_size, ..., tp, fwd_s, bwd_s}: one transformer block."""
    overlap: dict[str, Any] | None = None
    """{collective, bytes, collective_s, compute_s, both_s, overlap_compute_cost}: an
    asynchronous collective run under a GEMM loop (see ``runtime.worker.calibrate``)."""
    provenance: dict[str, Any] = field(default_factory=dict)


def _device_section(raw: Raw, peak_tflops: float, link_GBps: float,
                    gemm_best: dict[str, Any], notes: dict[str, str]) -> dict[str, Any]:
    name = "cpu" if raw.device_type == "cpu" else _slug(raw.device_name)
    return {
        "name": name, "vendor": raw.device_name, "arch": name,
        "peak_tflops": {raw.dtype: peak_tflops},
        "memory_gib": raw.memory_gib, "hbm_GBps": raw.copy_GBps or 1.0,
        "intra_node_GBps": link_GBps, "compute_units": 1 if raw.device_type == "cpu"
        else raw.compute_units,
        "provenance": (
            f"Measured by meshplan-runtime calibrate on {raw.world_size} rank(s) at once. "
            f"peak_tflops: best sustained {raw.dtype} GEMM rate of the grid (the forward, "
            f"input-gradient and weight-gradient GEMMs of a {gemm_best['m']}x{gemm_best['n']}"
            f"x{gemm_best['k']} linear layer). hbm_GBps: {notes['copy']}. intra_node_GBps: "
            f"{notes['link']}. memory_gib: {notes['memory']}."),
    }


def _slug(name: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def build_profile(raw: Raw, name: str, gpu: str | None, created: str,
                  provenance: dict[str, Any]) -> CalibrationProfile:
    """The calibration profile of ``raw`` (provenance: ``raw.provenance`` updated with
    ``provenance``). ``gpu`` = the catalog name when the device is a
    catalog GPU (measurements then refine the datasheet model and the default efficiency
    model stays), or None for a device the catalog lacks (the profile then defines it: a
    ``device`` section and an efficiency entry with the fitted per-kernel time)."""
    if not raw.gemm:
        raise ValueError("no GEMM measurements")
    gemm_pts = []
    best: dict[str, Any] | None = None
    best_rate = 0.0
    for g in raw.gemm:
        rate = 6.0 * g["m"] * g["n"] * g["k"] / g["seconds"]
        gemm_pts.append({"m": g["m"], "n": g["n"], "k": g["k"], "dtype": raw.dtype,
                         "tflops": rate / 1e12})
        if rate > best_rate:
            best_rate, best = rate, g
    assert best is not None
    att = [{"batch": a["batch"], "heads": a["heads"], "seq_q": a["seq"], "seq_kv": a["seq"],
            "head_dim": a["head_dim"], "causal": True, "dtype": raw.dtype,
            "fwd_s": a["fwd_s"], "bwd_s": a["bwd_s"]} for a in raw.attention]
    colls = [{"collective": c["collective"], "group_size": c["group_size"], "bytes": c["bytes"],
              "link": c["link"], "time_s": c["seconds"],
              "busbw_GBps": busbw_GBps(c["collective"], c["group_size"], c["bytes"],
                                       c["seconds"])} for c in raw.collectives]
    layers = [{**ly, "dtype": raw.dtype} for ly in raw.layers]
    measurements: dict[str, Any] = {"gemm": gemm_pts, "attention": att, "collectives": colls,
                                    "layers": layers}
    if raw.copy_GBps:
        measurements["hbm_GBps"] = raw.copy_GBps
    body: dict[str, Any] = {
        "name": name, "gpu": gpu, "measurements": measurements,
        "provenance": {"source": "meshplan-runtime calibrate", "date": created,
                       **raw.provenance, **provenance},
    }
    if raw.overlap is not None:
        body["provenance"]["overlap"] = raw.overlap
    if gpu is None:
        link, link_note = _best_link(colls)
        latency_s, lat_note = _kernel_time(raw)
        notes = {"copy": f"{raw.copy_GBps:.2f} GB/s read+write of a large tensor copy"
                 if raw.copy_GBps else "not measured",
                 "link": link_note,
                 "memory": "host RAM / local ranks" if raw.device_type == "cpu"
                 else "device memory reported by torch"}
        device = _device_section(raw, best_rate / 1e12, link, best, notes)
        body["device"] = device
        body["gpu"] = device["name"]
        body["efficiency"] = _efficiency(raw, device["arch"], latency_s, lat_note, best,
                                         best_rate, colls)
    return CalibrationProfile.model_validate(body)


def _best_link(colls: list[dict[str, Any]]) -> tuple[float, str]:
    ar = [c for c in colls if c["collective"] == "all_reduce" and c["link"] == "intra_node"]
    pool = ar or [c for c in colls if c["link"] == "intra_node"] or colls
    if not pool:
        return 1.0, "not measured (one rank): 1 GB/s placeholder, unused by one-rank plans"
    c = max(pool, key=lambda c: c["busbw_GBps"])
    return float(c["busbw_GBps"]), (f"best measured {c['collective']} bus bandwidth, "
                                    f"{c['bytes']} bytes over {c['group_size']} ranks")


def _kernel_time(raw: Raw) -> tuple[float, str]:
    pts = [(2.0 * p["m"] * p["n"] * p["k"], p["seconds"]) for p in raw.latency]
    if not pts:
        return 0.0, "not measured"
    a, _ = fit_latency(pts)
    sizes = sorted({f"{p['m']}x{p['n']}x{p['k']}" for p in raw.latency})
    return a, (f"intercept of a least-squares fit t = a + F/r over F.linear calls with "
               f"autograd recording of shapes {', '.join(sizes)} (median per shape, mean over "
               f"ranks): {a * 1e6:.2f} us")


def _efficiency(raw: Raw, arch: str, latency_s: float, lat_note: str, best: dict[str, Any],
                best_rate: float, colls: list[dict[str, Any]]) -> dict[str, Any]:
    """The default efficiency model with this device's measured entry and fitted
    collectives; what is copied from the default says so."""
    base = default_profile().efficiency
    assert base is not None
    eff = base.model_dump(mode="json")
    att_f = att_b = 1.0
    if raw.attention:
        rates = [(4.0 * a["batch"] * a["heads"] * a["seq"] ** 2 * a["head_dim"] / 2, a)
                 for a in raw.attention]
        att_f = min(1.0, max(f / a["fwd_s"] for f, a in rates) / best_rate)
        att_b = min(1.0, max(2.5 * f / a["bwd_s"] for f, a in rates) / best_rate)
    eff["archs"][arch] = {
        "gemm_peak_fraction": 1.0,
        "gemm_reference_shape": [best["m"], best["n"], best["k"]],
        "kernel_latency_us": latency_s * 1e6,
        "attention_fwd_fraction": att_f, "attention_bwd_fraction": att_b,
        "hbm_fraction": 1.0,
        "provenance": (
            "Measured by meshplan-runtime calibrate. gemm_peak_fraction 1: the device's peak "
            "is defined as its best measured GEMM rate (device.peak_tflops), at "
            "gemm_reference_shape. kernel_latency_us: " + lat_note + ". attention fractions: "
            "best measured causal scaled_dot_product_attention rate / peak (used only for "
            "shapes the attention sweep does not cover). hbm_fraction 1: the bandwidth is the "
            "measured copy rate."),
    }
    eff["host"] = {
        "dispatch_us_per_kernel": latency_s * 1e6 if raw.device_type == "cpu"
        else eff["host"]["dispatch_us_per_kernel"],
        "provenance": (
            "On a CPU the host runs the kernels itself: dispatch and execution are serial, so "
            "the per-kernel host time is the fitted per-kernel time (" + lat_note + ")"
            if raw.device_type == "cpu" else
            "Not measured (a GPU's host dispatch overlaps its kernels): copied from the "
            "default profile. " + eff["host"]["provenance"]),
    }
    ov = raw.overlap
    u_intra = eff["collectives"]["intra_node"]["overlap_compute_cost"]
    u_note = "overlap_compute_cost copied from the default profile"
    if ov is not None:
        u_intra = ov["overlap_compute_cost"]
        u_note = (f"overlap_compute_cost measured: an asynchronous {ov['collective']} of "
                  f"{ov['bytes']} B ({ov['collective_s'] * 1e3:.2f} ms alone) under GEMMs "
                  f"({ov['compute_s'] * 1e3:.2f} ms alone) took {ov['both_s'] * 1e3:.2f} ms: "
                  f"u = (both - GEMMs) / collective, clipped to [0, 1]")
    eff["collectives"]["intra_node"]["overlap_compute_cost"] = u_intra
    eff["collectives"]["intra_node"]["provenance"] = (
        u_note + ". " + eff["collectives"]["intra_node"]["provenance"])
    ar = [(c["bytes"], c["time_s"], c["group_size"]) for c in colls
          if c["collective"] == "all_reduce" and c["link"] == "intra_node"]
    if ar:
        n = max(g for _, _, g in ar)
        alpha, bw, half = fit_collective("all_reduce", n, [(b, t) for b, t, g in ar if g == n])
        link = max(c["busbw_GBps"] for c in colls if c["link"] == "intra_node")
        eff["collectives"]["intra_node"] = {
            "busbw_fraction": min(1.0, bw / link), "latency_us": alpha,
            "half_bandwidth_MiB": half, "overlap_compute_cost": u_intra,
            "provenance": (
                f"Fitted on the measured all_reduce sweep over {n} ranks (t = alpha + "
                f"factor*(S + S_half)/B; alpha = the smallest message's time, B from the slope "
                f"over the largest messages); used only where no sweep covers a collective. "
                f"{u_note}."),
        }
    eff["collectives"]["inter_node"]["provenance"] = (
        "Not measured (one node): copied from the default profile. "
        + eff["collectives"]["inter_node"]["provenance"])
    if raw.device_type == "cpu":
        eff["memory"] = {
            "cuda_context_gib": 0.0, "allocator_reserve_fraction":
            eff["memory"]["allocator_reserve_fraction"], "nccl_buffers_gib_per_group": 0.0,
            "provenance": ("CPU: no CUDA context and no NCCL buffers (gloo); the allocator "
                           "reserve is copied from the default profile."),
        }
    return eff
