"""plan.activation_offload_layers: Megatron-Core's layer-wise CPU activation offload. The
offloaded layers' activations leave the device (all but the one being copied), the copies run
over the GPU's host link (PCIe, or NVLink-C2C on Grace superchips) under the other layers'
compute, Megatron-Core's rules are checked where every request is, and the emitters render or
refuse it by name."""

from __future__ import annotations

from typing import Any

import pytest

from costmodel import SpecError, evaluate
from costmodel.specs.cluster import Cluster, GPUPool
from costmodel.specs.gpus import get_gpu
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.presets import get_preset
from costmodel.specs.training import TrainingSpec
from runtime.launch import LaunchError, render

MODEL = get_preset("llama3-8b")  # 32 layers
TRAINING = TrainingSpec(global_batch_size=64, seq_len=8192)


def _cluster(gpu: str) -> Cluster:
    return Cluster(pools=[GPUPool(name="p", gpu=gpu, gpus_per_node=8, nodes=1)])


def _plan(n: int | None) -> ParallelPlan:
    return ParallelPlan(dp=8, zero_stage=3, micro_batch_size=1, activation_offload_layers=n)


def test_offloaded_layers_leave_the_device_but_one_buffer() -> None:
    c = _cluster("GB200-186GB")
    none, half = evaluate(MODEL, TRAINING, c, _plan(None)), evaluate(MODEL, TRAINING, c, _plan(16))
    a0, a1 = none.memory.per_stage[0], half.memory.per_stage[0]
    per_layer = a0.inflight_gib_per_microbatch / 32
    # 16 offloaded, 15 of them away at once (Transformer Engine double-buffers one layer)
    assert a0.activations_gib - a1.activations_gib == pytest.approx(15 * per_layer, rel=1e-6)
    assert (a1.weights_gib, a1.grads_gib) == (a0.weights_gib, a0.grads_gib)


def test_copies_hide_behind_compute_on_nvlink_c2c_not_on_pcie() -> None:
    """GB200's 900 GB/s C2C link moves 31 layers' activations under the forward; an H100's
    PCIe Gen5 (128 GB/s) cannot, and the step pays for the copies."""
    assert get_gpu("GB200-186GB").host_GBps_per_direction == 450
    h100 = get_gpu("H100-SXM-80GB")
    assert h100.host_GBps_per_direction == h100.pcie_GBps / 2
    gb, h = _cluster("GB200-186GB"), _cluster("H100-SXM-80GB")
    assert evaluate(MODEL, TRAINING, gb, _plan(31)).step_time_s == pytest.approx(
        evaluate(MODEL, TRAINING, gb, _plan(None)).step_time_s, rel=1e-3)
    assert evaluate(MODEL, TRAINING, h, _plan(31)).step_time_s > 1.05 * evaluate(
        MODEL, TRAINING, h, _plan(None)).step_time_s


@pytest.mark.parametrize(("update", "says"), [
    ({"activation_offload_layers": 32}, "below num_hidden_layers=32"),
    ({"pp": 2, "dp": 4}, "pp=2"),
    ({"recompute": "full"}, "recompute='full'"),
])
def test_megatron_core_rules(update: dict[str, Any], says: str) -> None:
    plan = _plan(8).model_copy(update=update)
    with pytest.raises(SpecError) as info:
        evaluate(MODEL, TRAINING, _cluster("GB200-186GB"), plan)
    assert info.value.field == "plan.activation_offload_layers"
    assert says in str(info.value)


def _request() -> dict[str, Any]:
    return {"model": {"preset": "llama3-8b"},
            "training": {"global_batch_size": 64, "seq_len": 8192},
            "cluster": {"pools": [{"name": "p", "gpu": "GB200-186GB", "gpus_per_node": 8,
                                   "nodes": 1}]},
            "plan": {"dp": 8, "zero_stage": 1, "activation_offload_layers": 12}}


def test_megatron_renders_cpu_offloading() -> None:
    content = render("megatron", _request()).content
    assert "--cpu-offloading " in content and "--cpu-offloading-num-layers 12" in content


@pytest.mark.parametrize("fmt", ["torchtitan", "deepspeed"])
def test_other_frameworks_refuse_it(fmt: str) -> None:
    with pytest.raises(LaunchError) as info:
        render(fmt, _request())
    assert "plan.activation_offload_layers" in {p.field for p in info.value.problems}
