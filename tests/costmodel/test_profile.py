"""Calibration profiles (costmodel.profile) and how the per-operation model uses them
(costmodel.ops): measured GEMM throughput interpolated piecewise-linearly in log FLOPs,
collective bus bandwidth in log bytes at the nearest measured group size (nccl-tests'
convention, NCCL PERFORMANCE.md), measurements applying only to the GPU they were taken on,
and the default efficiency model carrying its provenance (ARCHITECTURE.md house style: "a
constant that is not physics or a datasheet value comes from a calibration profile, with its
provenance").
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

import costmodel
from costmodel.ops import BUS_FACTOR, Device, collective_time, gemm_time
from costmodel.profile import CalibrationProfile, default_profile, load_profile
from costmodel.specs.cluster import GPUPool

H100 = GPUPool(name="p", gpu="H100-SXM-80GB", gpus_per_node=8, nodes=1)

# Three GEMM points of a hypothetical H100 measurement: cubes of side 1024, 4096, 16384.
GEMM_POINTS = [
    {"m": 1024, "n": 1024, "k": 1024, "tflops": 200.0},
    {"m": 4096, "n": 4096, "k": 4096, "tflops": 600.0},
    {"m": 16384, "n": 16384, "k": 16384, "tflops": 700.0},
]


def profile(gpu: str | None = "H100-SXM-80GB", **measurements: Any) -> CalibrationProfile:
    return CalibrationProfile.model_validate({
        "name": "test", "gpu": gpu, "provenance": {"source": "unit test"},
        "measurements": measurements})


def cube_flops(side: int) -> float:
    return 2.0 * side**3


def gemm_cube(side: int, dev: Device) -> float:
    return float(gemm_time(side, side, side, dev))


# ---------------------------------------------------------------- GEMM interpolation
def test_gemm_rate_is_exact_at_the_measured_points() -> None:
    prof = profile(gemm=GEMM_POINTS)
    for p in GEMM_POINTS:
        rate = float(prof.gemm_rate(np.asarray(cube_flops(p["m"])), "bf16"))  # type: ignore[arg-type]
        assert rate == pytest.approx(p["tflops"] * 1e12, rel=1e-12)


def test_gemm_rate_interpolates_linearly_in_log_flops() -> None:
    """2048³ is the midpoint of 1024³ and 4096³ in log FLOPs (log 2·2048³ = the mean of
    log 2·1024³ and log 2·4096³): the rate there is the mean, (200 + 600)/2 = 400 TFLOP/s;
    8192³ gives (600 + 700)/2 = 650."""
    dev = Device.from_pool(H100, "bf16", profile(gemm=GEMM_POINTS))
    assert math.log(cube_flops(2048)) == pytest.approx(
        (math.log(cube_flops(1024)) + math.log(cube_flops(4096))) / 2)
    assert gemm_cube(2048, dev) == pytest.approx(cube_flops(2048) / 400e12, rel=1e-9)
    assert gemm_cube(8192, dev) == pytest.approx(cube_flops(8192) / 650e12, rel=1e-9)
    # a quarter of the way in log space: 200 + (600 − 200)/4 = 300 TFLOP/s
    side = round(1024 * 4 ** 0.25)  # 1448: log FLOPs ≈ ¼ of the way; compute exactly
    frac = (math.log(cube_flops(side)) - math.log(cube_flops(1024))) / (
        math.log(cube_flops(4096)) - math.log(cube_flops(1024)))
    rate = 200e12 + frac * 400e12
    assert gemm_cube(side, dev) == pytest.approx(cube_flops(side) / rate, rel=1e-9)


def test_gemm_rate_clamps_beyond_the_measured_range() -> None:
    """np.interp semantics: below the smallest point the smallest rate, above the largest the
    largest (no extrapolation)."""
    dev = Device.from_pool(H100, "bf16", profile(gemm=GEMM_POINTS))
    assert gemm_cube(512, dev) == pytest.approx(cube_flops(512) / 200e12, rel=1e-9)
    assert gemm_cube(32768, dev) == pytest.approx(cube_flops(32768) / 700e12, rel=1e-9)


def test_duplicate_gemm_points_are_averaged() -> None:
    points = [*GEMM_POINTS, {"m": 4096, "n": 4096, "k": 4096, "tflops": 500.0}]
    rate = profile(gemm=points).gemm_rate(np.asarray(cube_flops(4096)), "bf16")
    assert float(rate) == pytest.approx(550e12)  # type: ignore[arg-type]


def test_gemm_measurements_of_another_dtype_are_not_used() -> None:
    """Only bf16 was measured: an fp8 job's linear-layer GEMMs (the ones the recipe runs in
    fp8) fall back to the efficiency model; its 16-bit GEMMs use the bf16 measurement."""
    prof = profile(gemm=GEMM_POINTS)
    assert prof.gemm_rate(np.asarray(1e12), "fp8") is None
    with_fp8 = Device.from_pool(H100, "fp8", prof)
    default_fp8 = Device.from_pool(H100, "fp8", default_profile())
    assert float(gemm_time(4096, 4096, 4096, with_fp8, linear=True)) == pytest.approx(
        float(gemm_time(4096, 4096, 4096, default_fp8, linear=True)))
    with_bf16 = Device.from_pool(H100, "bf16", prof)
    assert gemm_cube(4096, with_fp8) == pytest.approx(gemm_cube(4096, with_bf16))


def test_memory_bound_gemm_stays_memory_bound_with_measurements() -> None:
    """Roofline: a skinny GEMM (m = 1) is bound by operand traffic 2·(k + k·n + n) bytes at
    HBM speed (H100 3.35 TB/s × the profile's hbm fraction), not by the measured FLOP rate."""
    dev = Device.from_pool(H100, "bf16", profile(gemm=GEMM_POINTS))
    n = k = 16384
    traffic = 2.0 * (k + k * n + n)
    assert float(gemm_time(1, n, k, dev)) == pytest.approx(traffic / dev.hbm, rel=1e-9)
    assert dev.hbm == pytest.approx(3350e9 * default_profile().arch_efficiency("hopper")
                                    .hbm_fraction)


# ---------------------------------------------------------------- collectives
COLL_POINTS = [
    # nccl-tests all_reduce_perf on 8 GPUs of one node (shape of vTrain's A100 table):
    {"collective": "all_reduce", "group_size": 8, "bytes": 2**20, "busbw_GBps": 20.0},
    {"collective": "all_reduce", "group_size": 8, "bytes": 2**26, "busbw_GBps": 200.0},
    {"collective": "all_reduce", "group_size": 8, "bytes": 2**30, "busbw_GBps": 230.0},
    # and on 2 GPUs
    {"collective": "all_reduce", "group_size": 2, "bytes": 2**20, "busbw_GBps": 10.0},
    {"collective": "all_reduce", "group_size": 2, "bytes": 2**30, "busbw_GBps": 100.0},
]


def busbw(prof: CalibrationProfile, group: int, nbytes: float) -> float:
    v = prof.collective_busbw("all_reduce", "intra_node", group, np.asarray(nbytes))
    assert v is not None
    return float(v)


def test_collective_busbw_interpolates_in_log_bytes() -> None:
    """8 MiB is the log-midpoint of 1 MiB and 64 MiB: (20 + 200)/2 = 110 GB/s; 8 GiB is
    beyond the largest point: clamped to 230 GB/s."""
    prof = profile(collectives=COLL_POINTS)
    assert busbw(prof, 8, 2**20) == pytest.approx(20e9)
    assert busbw(prof, 8, 2**23) == pytest.approx(110e9)
    assert busbw(prof, 8, 2**33) == pytest.approx(230e9)
    assert busbw(prof, 8, 2**10) == pytest.approx(20e9)


@pytest.mark.parametrize(("group", "measured_at"), [(8, 8), (16, 8), (6, 8), (5, 8), (2, 2),
                                                     (3, 2), (1, 2)])
def test_collective_busbw_uses_the_nearest_group_size(group: int, measured_at: int) -> None:
    """Nearest in log size: 5 and 6 are nearer 8 (log 8/5 < log 5/2), 3 nearer 2."""
    prof = profile(collectives=COLL_POINTS)
    expected = {8: 230e9, 2: 100e9}[measured_at]
    assert busbw(prof, group, 2**30) == pytest.approx(expected)


def test_unmeasured_collective_or_link_returns_none() -> None:
    prof = profile(collectives=COLL_POINTS)
    assert prof.collective_busbw("all_gather", "intra_node", 8, np.asarray(1e6)) is None
    assert prof.collective_busbw("all_reduce", "inter_node", 8, np.asarray(1e6)) is None


@pytest.mark.parametrize("nbytes", [2**30])
def test_measured_large_collective_time_follows_nccl_tests(nbytes: int) -> None:
    """nccl-tests (PERFORMANCE.md): busbw = algbw · 2(n−1)/n for all-reduce, algbw = S / t,
    so t = 2(n−1)/n · S / busbw. At 1 GiB latency terms are negligible (within 2%)."""
    dev = Device.from_pool(H100, "bf16", profile(collectives=COLL_POINTS))
    t = float(collective_time("all_reduce", 8.0, float(nbytes), 8.0, dev))
    assert t == pytest.approx(2 * 7 / 8 * nbytes / 230e9, rel=0.02)


@pytest.mark.parametrize("nbytes", [2**20, 2**23])
def test_measured_collective_time_reproduces_the_measurement(nbytes: int) -> None:
    """A profile must reproduce its own measurements: nccl-tests' t = 2(n−1)/n · S / busbw
    (PERFORMANCE.md), within 20% (the fixed latency may be counted once more). Today: 11.1x
    at 1 MiB and 2.3x at 8 MiB."""
    prof = profile(collectives=COLL_POINTS)
    dev = Device.from_pool(H100, "bf16", prof)
    t = float(collective_time("all_reduce", 8.0, float(nbytes), 8.0, dev))
    measured = float(BUS_FACTOR["all_reduce"](8.0)) * nbytes / busbw(prof, 8, nbytes)
    assert t == pytest.approx(measured, rel=0.2)


# ---------------------------------------------------------------- which GPU
def test_profile_for_another_gpu_is_ignored() -> None:
    """A100 measurements must not be applied on an H100 pool: GEMM and collective times equal
    those of the default profile."""
    a100 = profile(gpu="A100-SXM-80GB", gemm=GEMM_POINTS, collectives=COLL_POINTS,
                   hbm_GBps=1500.0)
    dev = Device.from_pool(H100, "bf16", a100)
    ref = Device.from_pool(H100, "bf16", default_profile())
    assert not dev.measured
    for side in (512, 2048, 8192):
        assert gemm_cube(side, dev) == pytest.approx(gemm_cube(side, ref), rel=1e-12)
    assert dev.hbm == pytest.approx(ref.hbm)
    t = float(collective_time("all_reduce", 8.0, 2.0**26, 8.0, dev))
    t_ref = float(collective_time("all_reduce", 8.0, 2.0**26, 8.0, ref))
    assert t == pytest.approx(t_ref, rel=1e-12)


def test_profile_for_this_gpu_is_used() -> None:
    """Control for the test above: on the GPU it names, the same profile changes the times."""
    h100 = profile(gemm=GEMM_POINTS, hbm_GBps=3000.0)
    dev = Device.from_pool(H100, "bf16", h100)
    assert dev.measured
    assert dev.hbm == pytest.approx(3000e9)
    assert gemm_cube(2048, dev) == pytest.approx(cube_flops(2048) / 400e12, rel=1e-9)


def test_profile_for_another_gpu_leaves_the_estimate_unchanged() -> None:
    body: dict[str, Any] = {
        "model": {"preset": "llama3-8b"},
        "training": {"global_batch_size": 64, "seq_len": 4096},
        "cluster": {"pools": [{"name": "h100", "gpu": "H100", "gpus_per_node": 8, "nodes": 1}]},
        "plan": {"tp": 2, "pp": 1, "dp": 4, "sequence_parallel": True},
    }
    base = costmodel.estimate(copy.deepcopy(body))
    a100 = profile(gpu="A100-SXM-80GB", gemm=GEMM_POINTS).model_dump(mode="json")
    other = costmodel.estimate({**copy.deepcopy(body), "calibration": a100})
    assert other.step_time_s == pytest.approx(base.step_time_s, rel=1e-12)
    h100 = profile(gpu="H100-SXM-80GB", gemm=GEMM_POINTS).model_dump(mode="json")
    mine = costmodel.estimate({**copy.deepcopy(body), "calibration": h100})
    assert mine.step_time_s != pytest.approx(base.step_time_s, rel=1e-3)


def test_profile_gpu_alias_resolves() -> None:
    dev = Device.from_pool(H100, "bf16", profile(gpu="H100", gemm=GEMM_POINTS))
    assert dev.measured
    assert gemm_cube(2048, dev) == pytest.approx(cube_flops(2048) / 400e12, rel=1e-9)


# ---------------------------------------------------------------- default profile
def test_default_profile_loads_with_provenance() -> None:
    prof = default_profile()
    assert prof.format == "meshplan-calibration/1"
    assert prof.name == "default"
    assert prof.gpu is None
    assert prof.provenance.source.strip()
    eff = prof.efficiency
    assert eff is not None
    # architectures of every catalog GPU are covered, or fall back to "default"
    assert {"ampere", "hopper", "default"} <= set(eff.archs)
    entries: list[tuple[str, str]] = [(f"archs.{k}", v.provenance) for k, v in eff.archs.items()]
    entries += [(f"collectives.{k}", v.provenance) for k, v in eff.collectives.items()]
    entries += [("host", eff.host.provenance), ("memory", eff.memory.provenance)]
    assert set(eff.collectives) == {"intra_node", "inter_node"}
    for where, prov in entries:
        assert len(prov.strip()) > 20, where


def test_default_profile_round_trips_through_json() -> None:
    prof = default_profile()
    again = load_profile(prof.model_dump_json())
    assert again == prof


def test_default_fractions_are_fractions() -> None:
    eff = default_profile().efficiency
    assert eff is not None
    for arch in eff.archs.values():
        for frac in (arch.gemm_peak_fraction, arch.attention_fwd_fraction,
                     arch.attention_bwd_fraction, arch.hbm_fraction):
            assert frac is None or 0 < frac <= 1
    for c in eff.collectives.values():
        assert 0 < c.busbw_fraction <= 1
    reserve = eff.memory.allocator_reserve_fraction
    assert reserve is None or 0 <= reserve < 1


# ---------------------------------------------------------------- invalid profiles
def _default_json() -> dict[str, Any]:
    return json.loads(default_profile().model_dump_json())


@pytest.mark.parametrize("tflops", [-1.0, 0.0])
def test_non_positive_gemm_tflops_rejected(tflops: float) -> None:
    with pytest.raises(ValidationError) as exc:
        profile(gemm=[{"m": 1, "n": 1, "k": 1, "tflops": tflops}])
    assert "tflops" in str(exc.value)


def test_non_positive_busbw_rejected() -> None:
    with pytest.raises(ValidationError):
        profile(collectives=[{"collective": "all_reduce", "group_size": 8, "bytes": 1024,
                              "busbw_GBps": -5.0}])


@pytest.mark.parametrize("key", ["gemm_peak_fraction", "attention_fwd_fraction",
                                 "attention_bwd_fraction", "hbm_fraction"])
def test_fraction_above_one_rejected(key: str) -> None:
    raw = _default_json()
    raw["efficiency"]["archs"]["hopper"][key] = 1.2
    with pytest.raises(ValidationError) as exc:
        CalibrationProfile.model_validate(raw)
    assert key in str(exc.value)


def test_busbw_fraction_above_one_and_reserve_of_one_rejected() -> None:
    raw = _default_json()
    raw["efficiency"]["collectives"]["intra_node"]["busbw_fraction"] = 1.5
    with pytest.raises(ValidationError):
        CalibrationProfile.model_validate(raw)
    raw = _default_json()
    raw["efficiency"]["memory"]["allocator_reserve_fraction"] = 1.0
    with pytest.raises(ValidationError):
        CalibrationProfile.model_validate(raw)


def test_wrong_format_and_unknown_keys_rejected() -> None:
    raw = _default_json()
    raw["format"] = "meshplan-calibration/2"
    with pytest.raises(ValidationError):
        CalibrationProfile.model_validate(raw)
    raw = _default_json()
    raw["mfu"] = 0.5  # a single global MFU constant is exactly what the format forbids
    with pytest.raises(ValidationError):
        CalibrationProfile.model_validate(raw)


def test_invalid_calibration_in_a_request_is_a_spec_error() -> None:
    body: dict[str, Any] = {
        "model": {"preset": "llama3-8b"},
        "training": {"global_batch_size": 8, "seq_len": 1024},
        "cluster": {"pools": [{"name": "h100", "gpu": "H100", "gpus_per_node": 8}]},
        "plan": {"tp": 8},
        "calibration": {"name": "bad", "provenance": {"source": "x"},
                        "measurements": {"gemm": [{"m": 1, "n": 1, "k": 1, "tflops": -1}]}},
    }
    with pytest.raises(costmodel.SpecError) as exc:
        costmodel.estimate(body)
    assert exc.value.field == "calibration.measurements.gemm.0.tflops"
