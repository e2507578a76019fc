"""From raw worker measurements to a calibration profile (runtime.profile_build, pure): the
bus-bandwidth conventions of nccl-tests (NVIDIA/nccl-tests doc/PERFORMANCE.md), the fits of
the per-kernel time and of a collective's latency/bandwidth, and a profile that defines a
measured device which an estimate then uses through the ordinary cost-model path.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

import costmodel
from costmodel.profile import CalibrationProfile
from runtime.profile_build import (
    Raw,
    algbw_GBps,
    build_profile,
    bus_factor,
    busbw_GBps,
    fit_collective,
    fit_latency,
)


@pytest.mark.parametrize(("collective", "n", "factor"), [
    ("all_reduce", 2, 1.0), ("all_reduce", 8, 1.75), ("all_reduce", 16, 1.875),
    ("all_gather", 2, 0.5), ("all_gather", 8, 0.875), ("reduce_scatter", 8, 0.875),
    ("send_recv", 2, 1.0), ("send_recv", 8, 1.0),
])
def test_bus_factors_are_nccl_tests(collective: str, n: int, factor: float) -> None:
    """Checks: busbw = algbw × 2(n−1)/n for all-reduce, (n−1)/n for all-gather and
    reduce-scatter, 1 for send/recv (PERFORMANCE.md, "Bus bandwidth")."""
    assert bus_factor(collective, n) == pytest.approx(factor)


def test_busbw_of_a_worked_example() -> None:
    """Checks: an 8-rank all-reduce of 1 GiB in 10 ms has algbw 107.4 GB/s and busbw 1.75×
    that; an all-gather of the same size and time, 0.875×."""
    size, t = float(2**30), 0.010
    assert algbw_GBps(size, t) == pytest.approx(107.374, rel=1e-4)
    assert busbw_GBps("all_reduce", 8, size, t) == pytest.approx(107.374 * 1.75, rel=1e-4)
    assert busbw_GBps("all_gather", 8, size, t) == pytest.approx(107.374 * 0.875, rel=1e-4)


def test_fit_latency_recovers_intercept_and_rate() -> None:
    """Checks: t = a + F/r sampled exactly gives back a and r."""
    a, r = 4e-6, 5e10
    pts = [(f, a + f / r) for f in (1e3, 8e3, 6.4e4, 5.12e5)]
    fa, fr = fit_latency(pts)
    assert fa == pytest.approx(a, rel=1e-6)
    assert fr == pytest.approx(r, rel=1e-6)


def test_fit_latency_never_negative() -> None:
    """Checks: noise that would give a negative intercept clips it to 0."""
    a, _ = fit_latency([(1.0, 1e-6), (2.0, 3e-6), (3.0, 5.2e-6)])
    assert a >= 0.0


def test_fit_collective_recovers_alpha_bandwidth_and_half_size() -> None:
    """Checks: times made from t = α + factor·(S + S½)/B (large messages) with α the
    smallest message's time give back B and S½."""
    alpha, bw, half = 50e-6, 2e9, 1 << 20
    fac = bus_factor("all_reduce", 2)
    sizes = [1 << 22, 1 << 23, 1 << 24, 1 << 25, 1 << 26]
    pts = [(4096, alpha)] + [(s, alpha + fac * (s + half) / bw) for s in sizes]
    a_us, b_gbps, half_mib = fit_collective("all_reduce", 2, pts)
    assert a_us == pytest.approx(alpha * 1e6)
    assert b_gbps == pytest.approx(bw / 1e9, rel=1e-6)
    assert half_mib == pytest.approx(1.0, rel=1e-6)


def raw_cpu() -> Raw:
    """A synthetic two-rank CPU measurement: GEMMs at 50 GFLOP/s plus 5 µs per call."""
    def gemm(m: int, n: int, k: int) -> dict[str, Any]:
        return {"m": m, "n": n, "k": k, "seconds": 3 * (5e-6 + 2 * m * n * k / 5e10)}
    raw = Raw(device_name="Test CPU", device_type="cpu", dtype="fp32", world_size=2, nodes=1,
              memory_gib=8.0, compute_units=1)
    raw.gemm = [gemm(m, n, k) for m in (128, 512) for n in (256, 1024) for k in (256, 1024)]
    raw.latency = [{"m": s, "n": s, "k": s, "seconds": 5e-6 + 2 * s**3 / 5e10}
                   for s in (8, 16, 32, 64)]
    raw.attention = [{"batch": 1, "heads": 8, "seq": s, "head_dim": 64,
                      "fwd_s": 2 * 8 * s * s * 64 / 2e10, "bwd_s": 5 * 8 * s * s * 64 / 1e10}
                     for s in (128, 512)]
    raw.copy_GBps = 10.0
    raw.collectives = [{"collective": c, "group_size": 2, "bytes": b, "link": "intra_node",
                        "seconds": 1e-4 + b / 1e9}
                       for c in ("all_reduce", "all_gather", "reduce_scatter", "send_recv")
                       for b in (4096, 1 << 20, 1 << 24)]
    raw.layers = [{"hidden_size": 256, "intermediate_size": 704, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "seq_len": 128, "micro_batch_size": 2, "tp": 1,
                   "fwd_s": 0.006, "bwd_s": 0.012, "bwd_input_s": 0.008, "bwd_weight_s": 0.006}]
    raw.overlap = {"collective": "all_gather", "bytes": 1 << 24, "group_size": 2,
                   "collective_s": 0.01, "compute_s": 0.02, "both_s": 0.028,
                   "overlap_compute_cost": 0.8}
    raw.provenance = {"torch": "test", "OMP_NUM_THREADS": "1"}
    return raw


def test_cpu_profile_defines_its_device() -> None:
    """Checks: a CPU measurement becomes a profile whose device is named 'cpu', whose fp32
    peak is the best GEMM rate, memory bandwidth the copy rate, link the best all-reduce bus
    bandwidth; the efficiency entry of its arch carries the fitted per-kernel time (5 µs) as
    both kernel latency and host dispatch, the measured overlap cost, and provenance."""
    prof = build_profile(raw_cpu(), "t", None, "2026-01-01", {"command": "x"})
    assert prof.gpu == "cpu" and prof.device is not None
    d = prof.device
    best = max(p.tflops for p in prof.measurements.gemm)
    assert d.peak_tflops == {"fp32": pytest.approx(best)}
    assert d.hbm_GBps == 10.0
    ar = [c.busbw_GBps for c in prof.measurements.collectives if c.collective == "all_reduce"]
    assert d.intra_node_GBps == pytest.approx(max(ar))
    assert prof.efficiency is not None
    arch = prof.efficiency.archs["cpu"]
    assert arch.kernel_latency_us == pytest.approx(5.0, rel=1e-3)
    assert prof.efficiency.host.dispatch_us_per_kernel == pytest.approx(5.0, rel=1e-3)
    assert prof.efficiency.collectives["intra_node"].overlap_compute_cost == 0.8
    assert "fit" in arch.provenance and "measured" in \
        prof.efficiency.collectives["intra_node"].provenance
    assert prof.provenance.model_extra is not None
    assert prof.provenance.model_extra["OMP_NUM_THREADS"] == "1"
    assert prof.measurements.layers[0].bwd_input_s == 0.008
    # round trip through JSON
    assert CalibrationProfile.model_validate_json(prof.model_dump_json()) == prof


def test_catalog_gpu_profile_keeps_the_default_efficiency() -> None:
    """Checks: a measurement of a catalog GPU records measurements only (no device section,
    no efficiency override): the datasheet peaks stay and measurements refine them."""
    raw = raw_cpu()
    raw.device_type, raw.dtype, raw.device_name = "cuda", "bf16", "NVIDIA H100 80GB HBM3"
    prof = build_profile(raw, "h", "H100-SXM-80GB", "2026-01-01", {})
    assert prof.gpu == "H100-SXM-80GB" and prof.device is None and prof.efficiency is None
    assert prof.measurements.gemm[0].dtype == "bf16"


def request(prof: CalibrationProfile, **plan: Any) -> dict[str, Any]:
    return {"model": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4,
                      "num_key_value_heads": 2, "intermediate_size": 704, "vocab_size": 2048},
            "training": {"global_batch_size": 8, "seq_len": 128, "precision": "fp32"},
            "cluster": {"pools": [{"name": "local", "gpu": "cpu", "gpus_per_node": 2}]},
            "plan": {"micro_batch_size": 2, "zero_stage": 0, **plan},
            "calibration": prof.model_dump(mode="json")}


def test_estimate_on_the_measured_cpu() -> None:
    """Checks: a request whose pool names the profile's device ('cpu') is estimated; the
    device's measured peak is the MFU denominator; a plan whose block shape was measured
    takes the measured block times (4 layers × 2 micro-batches × (6 + 12) ms of blocks on
    one rank at dp = 2)."""
    prof = build_profile(raw_cpu(), "t", None, "2026-01-01", {})
    est = costmodel.estimate(request(prof, dp=2))
    assert est.gpu == "cpu" and est.num_gpus == 2
    assert est.breakdown.forward_s >= 4 * 2 * 0.006
    assert est.breakdown.backward_input_s + est.breakdown.backward_weight_s \
        >= 4 * 2 * 0.012 - 1e-9
    peak = prof.device.peak_tflops["fp32"] * 1e12  # type: ignore[union-attr]
    assert est.mfu == pytest.approx(est.model_flops_per_step / (est.step_time_s * 2 * peak))
    assert math.isfinite(est.step_time_s) and est.fits


def test_zero_bubble_uses_the_measured_split_backward() -> None:
    """Checks: InterleavedZeroBubble times its I and W actions with the measured split
    backward (8 + 6 ms per block), 1F1B with the one-pass backward (12 ms) split in the
    model's ratio."""
    prof = build_profile(raw_cpu(), "t", None, "2026-01-01", {})
    zb = costmodel.estimate(request(prof, pp=2, schedule="InterleavedZeroBubble",
                                    virtual_stages=2))
    one = costmodel.estimate(request(prof, pp=2, schedule="1F1B"))
    m = 4  # micro-batches
    assert zb.breakdown.backward_input_s == pytest.approx(2 * m * 0.008, rel=1e-6)
    assert zb.breakdown.backward_weight_s == pytest.approx(2 * m * 0.006, rel=1e-6)
    assert one.breakdown.backward_input_s + one.breakdown.backward_weight_s < \
        zb.breakdown.backward_input_s + zb.breakdown.backward_weight_s
