"""A concrete parallel plan: what an estimate takes and a search returns."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from costmodel.specs.framework import AttentionKernel

ScheduleName = Literal[
    "GPipe", "1F1B", "Interleaved1F1B", "InterleavedZeroBubble", "ZBVZeroBubble", "DualPipeV",
    "custom", "Chimera", "BitPipe",
]
"""torch.distributed.pipelining's schedule names, "custom", and two schedules over two model
replicas that torch does not run: "Chimera" (Li & Hoefler 2021; virtual_stages 1) and
"BitPipe" (Wu et al. 2024; virtual_stages 2), see costmodel.pipeline.bidirectional."""
Recompute = Literal["none", "selective", "full"]


class StageAssignment(BaseModel):
    """One pipeline stage of a heterogeneous pipeline: the pool whose GPUs run it and its
    transformer layers (Metis, Um et al. 2024; AMP, Li et al. 2022; Sailor, Strati et al. 2025
    place stages of one pipeline on different GPU types)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pool: str = Field(min_length=1, description="Pool whose GPUs run this stage.")
    layers: PositiveInt = Field(description="Transformer layers of this stage.")
    tp: PositiveInt | None = Field(
        None, description="Tensor-parallel degree of this stage (Metis and AMP let it differ "
        "per stage); cp and dp stay the plan's, so the stage uses tp·cp·dp GPUs of its pool. "
        "null = the plan's tp.")


class ParallelPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    pool: str | None = Field(None, description="Pool name; may be omitted with one pool.")
    tp: PositiveInt = 1
    pp: PositiveInt = 1
    dp: PositiveInt = 1
    cp: PositiveInt = 1
    ep: PositiveInt = 1
    micro_batch_size: PositiveInt = 1
    schedule: ScheduleName = "1F1B"
    virtual_stages: PositiveInt = Field(1, description="Model chunks per pipeline rank.")
    layers_per_stage: list[int] | None = Field(
        None, description="Transformer layers of each stage in model order (pp·virtual_stages "
        "entries); null = as even as possible."
    )
    stages: list[StageAssignment] | None = Field(
        None, description="Heterogeneous pipeline: one entry per pipeline stage in model order; "
        "each stage runs on its own pool's GPUs (cp and dp are the plan's, shared by all "
        "stages; tp too unless the stage gives its own); pp must equal len(stages); "
        "virtual_stages 1; schedules GPipe, 1F1B or InterleavedZeroBubble. When given it "
        "overrides pool and layers_per_stage. Send/recv between consecutive stages on "
        "different pools runs at the cluster's inter_pool_Gbps per GPU (null = the slower of "
        "the two pools' NIC rates). null = every stage on pool.",
    )
    custom_schedule: list[list[str]] | None = Field(
        None, description="With schedule 'custom' (required then, and only then): per pipeline "
        "rank, its compute actions in order as torch.distributed.pipelining's _Action strings "
        "'{stage}{F|B|I|W}{microbatch}', e.g. ['0F0', '0F1', '0I0', '0W0', ...]; F forward, B "
        "full backward, I input-gradient and W weight-gradient backward. Stages are global "
        "(0 .. pp·virtual_stages-1) and live on the rank whose list holds them; every rank "
        "holds virtual_stages of them. Micro-batches 0 .. global_batch_size/(dp·"
        "micro_batch_size)-1.")
    recompute: Recompute = "none"
    recompute_num_layers: PositiveInt | None = Field(
        None, description="Partial recompute, only with recompute 'full': the first N "
        "transformer layers of every pipeline stage (every virtual chunk with virtual_stages "
        "> 1) keep only their input and are recomputed in the backward; the stage's other "
        "layers keep all their activations. A stage with N layers or fewer recomputes all of "
        "them. Megatron-LM's --recompute-granularity full --recompute-method block "
        "--recompute-num-layers N (megatron/core/recompute.py checkpointed_forward, the "
        "'block' branch, at NVIDIA/Megatron-LM d98e8a64ddf34856e74b24714e3bedb2f5a39553: "
        "layer_idx < recompute_num_layers over the layers of one TransformerBlock, which is "
        "one virtual chunk). null = every layer (plain full recompute).")
    sequence_parallel: bool = False
    zero_stage: int = Field(1, ge=0, le=3, description="0 none, 1 optimizer, 2 +grads, 3 FSDP.")
    vocab_placement: Literal["end_stages", "split"] = Field(
        "end_stages", description="Embedding on the first and LM head + loss on the last stage, "
        "or both split across all pipeline ranks (vocabulary parallelism, Yeung et al. 2024)."
    )
    activation_offload: float = Field(
        0.0, ge=0.0, le=1.0, description="Fraction of stashed activations kept in host memory "
        "between forward and backward (PipeOffload, Wan et al. 2025)."
    )
    activation_offload_layers: PositiveInt | None = Field(
        None, description="Layer-wise activation offload within a micro-batch: the stashed "
        "activations of the first N transformer layers go to host memory during the forward "
        "and come back ahead of their backward, overlapped with the other layers' compute "
        "(Megatron-Core --cpu-offloading --cpu-offloading-num-layers N, Transformer Engine's "
        "CPU offload context; what Megatron-Bridge's Grace-Blackwell FSDP recipes run). As "
        "Megatron-Core allows it: pp 1, recompute 'none', N below num_hidden_layers. null = "
        "none.")
    overlap_grad_reduce: bool = Field(True, description="Megatron --overlap-grad-reduce.")
    overlap_param_gather: bool = Field(True, description="Megatron --overlap-param-gather.")
    tp_comm_overlap: bool = Field(False, description="Megatron/TE --tp-comm-overlap.")
    torch_compile: bool | None = Field(
        None, description="Run the transformer blocks under torch.compile (torchtitan's "
        "compile.enable), which fuses their norms, rotary embedding and activation: true / "
        "false; null = the stack's default (torchtitan compiles only where its async tensor "
        "parallelism needs it). Only stacks with a compiled path take true "
        "(costmodel/data/stacks/*.json elementwise.compiled); the others' kernels are fused "
        "already.")
    node_order: list[int] | None = Field(
        None, description="Nodes of the pool (0-based, in the pool's part of the cluster's "
        "node_bandwidth_Gbps) that host the pipeline in order: with k = tp·cp·dp/gpus_per_node "
        "nodes per stage, entry s·k+i is node i of stage s; when g stages share a node, entry "
        "u hosts stages u·g … u·g+g−1. null = nodes in index order.")
    zero3_unit: Literal["block", "module"] = Field(
        "block", description="What ZeRO-3 gathers at once: a transformer block (FSDP2 as "
        "torchtitan wraps it) or one submodule such as a Linear (DeepSpeed ZeRO-3).")
    attention: AttentionKernel = Field(
        "flash", description="Attention kernel: flash = the stack's default fused kernel for "
        "the GPU; flash1, flash2, flash3 = FlashAttention 1/2/3; cudnn = cuDNN fused attention; "
        "triton = the Triton flash kernel; unfused = batched matmuls + softmax through HBM "
        "(Megatron-LM before flash attention)."
    )

    def recomputed_layers(self, layers: int) -> int:
        """Layers of a stage (virtual chunk) of ``layers`` layers whose activations are
        recomputed: all with ``recompute`` 'full' and no ``recompute_num_layers``, the first
        min(N, layers) with it (Megatron's 'block' method), none otherwise (selective
        recompute is per layer and counted by the layer's own costs)."""
        if self.recompute != "full":
            return 0
        if self.recompute_num_layers is None:
            return layers
        return min(self.recompute_num_layers, layers)

    @property
    def recompute_text(self) -> str:
        """``recompute`` in words, with the layers a partial recompute covers."""
        if self.recompute_num_layers is None:
            return self.recompute
        return f"{self.recompute} (first {self.recompute_num_layers} layers of each stage)"

    @property
    def model_parallel(self) -> int:
        return self.tp * self.pp * self.cp

    @property
    def num_gpus(self) -> int:
        if self.stages is not None and any(st.tp is not None for st in self.stages):
            return sum(self.stage_tps) * self.dp * self.cp
        return self.tp * self.pp * self.dp * self.cp

    @property
    def stage_tps(self) -> list[int]:
        """Tensor-parallel degree of every global stage: each ``stages`` entry's own tp (the
        plan's where null), or the plan's tp for all pp·virtual_stages stages."""
        if self.stages is not None:
            return [st.tp if st.tp is not None else self.tp for st in self.stages]
        return [self.tp] * self.num_stages

    @property
    def num_stages(self) -> int:
        return self.pp * self.virtual_stages
