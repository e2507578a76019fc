"""training.grad_reduce_dtype: gradients kept and reduced in bf16 (Megatron
--grad-reduce-in-bf16, FSDP2 reduce_dtype bfloat16) halve the gradient buffer and the
data-parallel gradient traffic, the same in the single-plan estimate and the bulk path; the
launch emitters render it or refuse it by name."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import costmodel
from costmodel import SpecError, evaluate
from costmodel.bulk import Candidates, evaluate_bulk
from costmodel.specs.cluster import Cluster, GPUPool
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.presets import get_preset
from costmodel.specs.training import TrainingSpec
from runtime.launch import LaunchError, render

MODEL = get_preset("llama3-8b")
POOL = GPUPool(name="h100", gpu="H100-SXM-80GB", gpus_per_node=8, nodes=4)
CLUSTER = Cluster(pools=[POOL])
FP32 = TrainingSpec(global_batch_size=64, seq_len=4096)
BF16 = FP32.model_copy(update={"grad_reduce_dtype": "bf16"})


@pytest.mark.parametrize("zero", [0, 1, 2])
def test_bf16_gradients_halve_the_gradient_buffer(zero: int) -> None:
    plan = ParallelPlan(tp=2, pp=2, dp=8, zero_stage=zero, recompute="selective",
                        sequence_parallel=True)
    a, b = evaluate(MODEL, FP32, CLUSTER, plan), evaluate(MODEL, BF16, CLUSTER, plan)
    for sa, sb in zip(a.memory.per_stage, b.memory.per_stage, strict=True):
        assert sb.grads_gib == pytest.approx(sa.grads_gib / 2, rel=1e-9)
        assert (sb.weights_gib, sb.optimizer_gib) == (sa.weights_gib, sa.optimizer_gib)


def test_bf16_gradients_halve_the_data_parallel_traffic() -> None:
    plan = ParallelPlan(tp=1, pp=1, dp=32, zero_stage=1, overlap_grad_reduce=False)
    a, b = evaluate(MODEL, FP32, CLUSTER, plan), evaluate(MODEL, BF16, CLUSTER, plan)
    # ZeRO-1: a gradient reduce-scatter (halved) and a bf16 parameter all-gather (unchanged)
    assert b.breakdown.dp_comm_s < a.breakdown.dp_comm_s
    assert b.breakdown.dp_comm_s > a.breakdown.dp_comm_s / 2
    assert b.step_time_s < a.step_time_s


def test_bulk_path_reads_the_same_gradient_dtype() -> None:
    grid = Candidates.grid(tp=[1, 2], pp=[1, 2], dp=[8, 16], mbs=[1], v=[1],
                           schedule=["1F1B"], recompute=["full"], sp=[False], zero=[0, 1, 3])
    for training in (FP32, BF16):
        bulk = evaluate_bulk(MODEL, training, POOL, grid)
        for i in np.flatnonzero(bulk.valid):
            est = evaluate(MODEL, training, CLUSTER, grid.plan(int(i)))
            assert bulk.peak_gib[i] == pytest.approx(est.memory.peak_gib, rel=0.02)


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_bf16_reduction_needs_bf16_or_fp8_training(precision: str) -> None:
    with pytest.raises(SpecError) as info:
        costmodel.estimate(_request(precision=precision, grad_reduce_dtype="bf16"))
    assert info.value.field == "training.grad_reduce_dtype"


def _request(**training: Any) -> dict[str, Any]:
    return {"model": {"preset": "llama3-8b"},
            "training": {"global_batch_size": 64, "seq_len": 4096, **training},
            "cluster": {"pools": [POOL.model_dump()]},
            "plan": {"tp": 1, "pp": 1, "dp": 32, "zero_stage": 1}}


def test_megatron_renders_bf16_gradient_reduction() -> None:
    assert "--grad-reduce-in-bf16" in render("megatron", _request(grad_reduce_dtype="bf16")).content
    assert "--grad-reduce-in-bf16" not in render("megatron", _request()).content


@pytest.mark.parametrize("fmt", ["torchtitan", "deepspeed"])
def test_frameworks_without_bf16_gradient_buffers_refuse_it(fmt: str) -> None:
    render(fmt, _request())  # the same plan with fp32 gradients renders
    with pytest.raises(LaunchError) as info:
        render(fmt, _request(grad_reduce_dtype="bf16"))
    assert "training.grad_reduce_dtype" in {p.field for p in info.value.problems}
