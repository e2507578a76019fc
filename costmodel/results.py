"""Result types of an estimate; ``model_dump(mode="json")`` is the HTTP response body."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from costmodel.goodput import Goodput
from costmodel.specs.plan import ParallelPlan

MFU_CONVENTION = (
    "Megatron-LM num_floating_point_operations (Megatron-Core r0.8, 2024): 3 x forward GEMM "
    "FLOPs with attention scores over the full s x s matrix (no causal halving) and the logits; "
    "recompute excluded (it counts in hfu); peak = dense datasheet FLOP/s at the job precision; "
    "a heterogeneous pipeline (plan.stages) uses the GPU-count-weighted mean peak of its "
    "stages' GPUs."
)


class StageMemory(BaseModel):
    """Memory of one pipeline rank (all its stages), GiB."""

    rank: int = Field(description="Pipeline rank.")
    stages: list[int] = Field(description="Global stage indices held by this rank.")
    layers: int
    weights_gib: float
    grads_gib: float
    optimizer_gib: float
    activations_gib: float = Field(description="Stashed activations × in-flight micro-batches "
                                   "+ the working set of one block.")
    inflight_microbatches: float = Field(description="Peak stashed (stage, micro-batch) pairs.")
    inflight_gib_per_microbatch: float = Field(
        0.0, description="What one more stashed (stage, micro-batch) pair adds to "
        "activations_gib (beyond the first): the rank's mean stash per stage × the share kept "
        "on the device (1 − activation_offload). A schedule synthesizer turns the headroom into "
        "an in-flight limit with it.")
    logits_gib: float = Field(description="The vocabulary layers' one micro-batch on this "
                              "rank: the LM head's logits and the loss's tensors (the stack's "
                              "bytes per logit) with the final norm's and the head's saved "
                              "inputs; a share of them where plan.vocab_placement splits them.")
    comm_buffers_gib: float
    cuda_context_gib: float
    total_gib: float
    usable_gib: float = Field(description="Device memory minus the allocator reserve.")
    capacity_gib: float
    fits: bool
    fit: Literal["fits", "tight", "does_not_fit"] = Field(
        "fits", description="Verdict with the model's demonstrated error band "
        "(costmodel/data/memory_band.json): tight = within the band of the usable memory.")
    margin_gib: float = Field(0.0, description="usable_gib − total_gib (negative = over).")


class MemoryReport(BaseModel):
    peak_gib: float
    capacity_gib: float = Field(description="Device memory of the rank nearest its capacity "
                                "(every rank's, unless plan.stages mixes GPUs).")
    usable_gib: float
    peak_fraction: float = Field(description="Largest memory / capacity over the pipeline ranks, "
                                 "each against its own device.")
    per_stage: list[StageMemory]
    fit: Literal["fits", "tight", "does_not_fit"] = Field(
        "fits", description="The worst rank's verdict: fits / tight (within the model's "
        "demonstrated memory error, costmodel/data/memory_band.json) / does_not_fit. The "
        "estimate's `fits` is false only for does_not_fit.")
    margin_gib: float = Field(0.0, description="Smallest usable − peak over the ranks, GiB.")
    band: tuple[float, float] = Field(
        (0.0, 0.0), description="The error band used: (under, over) as fractions of the "
        "prediction; the true peak lies in [peak / (1 + over), peak / (1 − under)].")


class Breakdown(BaseModel):
    """Seconds per step on the critical pipeline rank (the busiest one)."""

    forward_s: float
    backward_input_s: float
    backward_weight_s: float
    recompute_s: float
    tp_comm_s: float = Field(description="Tensor-parallel collectives (exposed or overlapped).")
    cp_comm_s: float
    ep_comm_s: float
    pp_comm_s: float = Field(description="Send/recv latency on the critical path.")
    dp_comm_s: float = Field(description="Data-parallel / ZeRO collectives, total.")
    dp_comm_exposed_s: float
    dp_comm_overlapped_s: float
    optimizer_s: float
    pipeline_bubble_s: float
    offload_exposed_s: float


class PipelineReport(BaseModel):
    schedule: str
    num_microbatches: int
    virtual_stages: int
    bubble_fraction: float = Field(description="(makespan − busiest rank's work) / that work.")
    stage_forward_s: list[float] = Field(description="Forward time of one micro-batch, per stage.")
    stage_backward_input_s: list[float]
    stage_backward_weight_s: list[float]
    p2p_s: list[float] = Field(description="Send/recv time per stage boundary (with two model "
                               "replicas, Chimera and BitPipe, of both replicas' stages in turn; "
                               "the entry between the replicas is 0).")
    layers_per_stage: list[int]
    makespan_s: float


class Estimate(BaseModel):
    """Predicted step time, throughput, cost and memory of one plan."""

    step_time_s: float
    tokens_per_s: float
    tokens_per_s_per_gpu: float
    mfu: float
    hfu: float
    mfu_convention: str = MFU_CONVENTION
    model_flops_per_step: float
    fits: bool
    memory: MemoryReport
    breakdown: Breakdown
    pipeline: PipelineReport
    cost_per_hour: float
    cost_per_million_tokens: float
    num_gpus: int
    gpu: str = Field(description="Catalog GPU name; for a heterogeneous pipeline the distinct "
                     "GPUs of its stages in stage order joined by '+' (e.g. "
                     "'H100-SXM-80GB+A100-SXM-80GB').")
    plan: ParallelPlan
    warnings: list[str] = []
    stack: str = Field("", description="The software stack, release, attention kernel and FP8 "
                       "recipe the estimate assumed (training.framework; null = Megatron-Core).")
    calibration: str
    cost_model_version: str
    goodput: Goodput | None = Field(
        None, description="With training.reliability: failures, checkpoints, lost work and "
        "goodput, and time/cost to train including them (costmodel.goodput).")
