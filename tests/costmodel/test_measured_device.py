"""Devices described by a calibration profile (costmodel.specs.measured_device): a pool may
name the device of the request's calibration; everything else about pools and catalog GPUs
is unchanged; the rules name the field they break; fp32 is a precision with 4-byte elements.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

import costmodel
from costmodel.errors import SpecError
from costmodel.ops import Device
from costmodel.profile import CalibrationProfile
from costmodel.specs.cluster import GPUPool
from costmodel.specs.measured_device import MeasuredDevice

DEVICE = {"name": "cpu", "arch": "cpu", "peak_tflops": {"fp32": 0.08}, "memory_gib": 8.0,
          "hbm_GBps": 10.0, "intra_node_GBps": 1.0, "provenance": "unit test"}


def calibration(**device: Any) -> dict[str, Any]:
    return {"name": "cpu-test", "provenance": {"source": "unit test"},
            "device": {**DEVICE, **device}}


def body(gpu: str = "cpu", precision: str = "fp32", cal: dict[str, Any] | None = None,
         **pool: Any) -> dict[str, Any]:
    out = {"model": {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4,
                     "intermediate_size": 1024, "vocab_size": 1000},
           "training": {"global_batch_size": 8, "seq_len": 128, "precision": precision},
           "cluster": {"pools": [{"name": "local", "gpu": gpu, "gpus_per_node": 2, **pool}]},
           "plan": {"dp": 2, "micro_batch_size": 1, "zero_stage": 0}}
    if cal is not None:
        out["calibration"] = cal
    return out


def test_pool_names_the_calibrated_device() -> None:
    """Checks: with a calibration defining device 'cpu', a pool with gpu 'cpu' is estimated
    on it: its measured peak for MFU, its memory for the capacity, the profile's gpu is the
    device's name."""
    est = costmodel.estimate(body(cal=calibration()))
    assert est.gpu == "cpu"
    assert est.memory.capacity_gib == pytest.approx(8.0)
    assert est.mfu == pytest.approx(est.model_flops_per_step / (est.step_time_s * 2 * 0.08e12))
    prof = CalibrationProfile.model_validate(calibration())
    assert prof.gpu == "cpu"


def test_unknown_device_without_calibration_names_the_field() -> None:
    """Checks: gpu 'cpu' without a calibration that defines it is the usual unknown-GPU
    error at cluster.pools.0.gpu, and says a calibration may define the device."""
    with pytest.raises(SpecError) as exc:
        costmodel.estimate(body())
    assert exc.value.field == "cluster.pools.0.gpu"
    assert "unknown GPU 'cpu'" in exc.value.rule and "calibration.device" in exc.value.rule


def test_catalog_pools_are_unchanged_beside_a_measured_device() -> None:
    """Checks: a catalog pool in a request whose calibration defines a device keeps its
    catalog GPU (no device attached), and its estimate equals the one without the device
    section."""
    b = body(gpu="H100", precision="bf16", cal=calibration())
    plain = body(gpu="H100", precision="bf16",
                 cal={"name": "cpu-test", "provenance": {"source": "unit test"}})
    a, c = costmodel.estimate(b), costmodel.estimate(plain)
    assert a.gpu == "H100-SXM-80GB"
    assert a.step_time_s == c.step_time_s


def test_device_name_may_not_be_a_catalog_gpu() -> None:
    """Checks: a measured device called 'H100' is refused at calibration.device.name."""
    with pytest.raises(SpecError) as exc:
        costmodel.estimate(body(cal=calibration(name="H100")))
    rules = {p.field: p.rule for p in exc.value.problems}
    assert "catalog GPU H100-SXM-80GB" in rules["calibration.device.name"]


def test_profile_gpu_must_match_its_device() -> None:
    """Checks: a profile with a device names that device as its gpu (or nothing)."""
    with pytest.raises(ValueError, match="measured device's name"):
        CalibrationProfile.model_validate({**calibration(), "gpu": "A100"})


def test_multi_node_pool_of_a_one_node_device_needs_a_network_rate() -> None:
    """Checks: a device measured without a network rate cannot span nodes unless the pool
    gives inter_node_Gbps."""
    with pytest.raises(SpecError) as exc:
        costmodel.estimate(body(cal=calibration(), nodes=2))
    assert exc.value.field.startswith("cluster.pools.0")
    assert "inter_node_Gbps" in exc.value.rule
    est = costmodel.estimate(body(cal=calibration(), nodes=2, inter_node_Gbps=10.0))
    assert est.num_gpus == 2


def test_fp32_on_a_catalog_gpu_is_refused() -> None:
    """Checks: the catalog lists no fp32 peaks; training.precision fp32 on an H100 says so."""
    with pytest.raises(SpecError) as exc:
        costmodel.estimate(body(gpu="H100"))
    assert exc.value.field == "training.precision"
    assert "fp32" in exc.value.rule


def test_fp32_elements_are_four_bytes() -> None:
    """Checks: a device at fp32 moves 4-byte elements (bf16: 2): the same data-parallel
    gradient all-reduce, the activation memory twice the bf16 formula's."""
    prof = CalibrationProfile.model_validate(calibration(peak_tflops={"fp32": 1, "bf16": 2}))
    pool = GPUPool(name="p", gpu="cpu", device=prof.device, gpus_per_node=2)
    assert Device.from_pool(pool, "fp32", prof).elem_bytes == 4.0
    assert Device.from_pool(pool, "bf16", prof).elem_bytes == 2.0
    cal = calibration(peak_tflops={"fp32": 1, "bf16": 2})
    e32 = costmodel.estimate(body(cal=cal))
    e16 = costmodel.estimate(body(cal=copy.deepcopy(cal), precision="bf16"))
    a32 = e32.memory.per_stage[0].activations_gib
    a16 = e16.memory.per_stage[0].activations_gib
    assert a32 == pytest.approx(2 * a16)
    # fp32 weights are their own master copy: 4 (weights) + 4 (grads) + 8 (moments) B/param
    s32 = e32.memory.per_stage[0]
    assert (s32.weights_gib + s32.grads_gib + s32.optimizer_gib) == pytest.approx(
        16.0 / 4.0 * s32.weights_gib)


def test_measured_device_as_gpu_type() -> None:
    """Checks: the device as a catalog record: no network rate means the link rate, no host
    link means the memory bandwidth, one compute unit (no wave quantization)."""
    d = MeasuredDevice.model_validate(DEVICE)
    g = d.gpu_type()
    assert (g.name, g.arch, g.sm_count) == ("cpu", "cpu", 1)
    assert g.nic_Gbps == 8.0 and g.pcie_GBps == 10.0
    assert g.peak_flops("fp32") == pytest.approx(0.08e12)


def test_search_resolves_the_device_too() -> None:
    """Checks: a search request's pool may name its calibration's device as well."""
    from solver.request import SearchRequest

    b = body(cal=calibration())
    req = SearchRequest.model_validate({k: b[k] for k in ("model", "training", "cluster",
                                                          "calibration")})
    assert req.cluster.pools[0].device is not None
