"""The training job: batch, sequence length, precision, optimizer."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from costmodel.errors import FieldProblem, SpecError
from costmodel.specs.framework import FP8Recipe, Framework
from costmodel.specs.reliability import ReliabilitySpec

Precision = Literal["bf16", "fp16", "fp8", "fp32"]


class TrainingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    global_batch_size: PositiveInt = Field(description="Sequences per optimizer step.")
    global_batch_sizes: list[PositiveInt] | None = Field(
        None, min_length=1, max_length=16, description="For a search: further acceptable "
        "global batch sizes (sequences per step); the search also chooses the batch size "
        "among these and global_batch_size (each plan says its own). Ignored by an estimate, "
        "which runs global_batch_size.", examples=[[512, 1024, 2048]])
    seq_len: PositiveInt = Field(description="Tokens per sequence.")
    precision: Precision = Field(
        "bf16", description="Compute precision of the matmuls; fp8 keeps bf16 master weights "
        "and optimizer states (Transformer Engine recipe); fp32 is plain single precision (what "
        "a CPU run uses; a device needs a measured fp32 peak, as a calibrated device has)."
    )
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    train_tokens: PositiveInt | None = Field(
        None, description="Tokens of the whole run, for time_to_train / cost_to_train."
    )
    framework: Framework | None = Field(
        None, description="The software stack the plan is for: megatron (Megatron-LM, "
        "Megatron-Core, NeMo, Megatron-Bridge), torchtitan, deepspeed (DeepSpeed, "
        "Megatron-DeepSpeed) or fsdp (plain PyTorch FSDP1/2: llm-foundry, accelerate). It sets "
        "the kernels, overlaps and memory extras the cost model assumes, the plans a search "
        "may return and what launch emits. null = Megatron-Core kernels, any launcher.",
        examples=["megatron"])
    framework_version: str | None = Field(
        None, min_length=1, max_length=32, pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$",
        description="Release of the framework, e.g. '0.3' for torchtitan; null = the current "
        "release.", examples=["0.3"])
    fp8_recipe: FP8Recipe | None = Field(
        None, description="With precision fp8: delayed (Transformer Engine delayed scaling), "
        "tensorwise or rowwise (torchao Float8), mxfp8 (block-scaled, Blackwell); null = the "
        "stack's default recipe.", examples=["delayed"])
    grad_reduce_dtype: Literal["fp32", "bf16"] | None = Field(
        None, description="Data type of the gradient buffers and of their data-parallel "
        "reduction: null = fp32 main gradients (Megatron-Core's default for bf16 and fp8, "
        "torchtitan's and FSDP2's reduce_dtype float32; fp16 training reduces in fp16); 'bf16' "
        "halves both (Megatron --grad-reduce-in-bf16, as Megatron-Bridge's performance recipes "
        "run; FSDP2 reduce_dtype bfloat16). Needs precision bf16 or fp8.", examples=["bf16"])

    reliability: ReliabilitySpec | None = Field(
        None, description="Failure rate, restart time, checkpoint bandwidth and recovery "
        "scheme; given, the estimate reports goodput (failures, checkpoint interval, lost "
        "work) and the time and cost to train including them.")

    @property
    def batch_sizes(self) -> list[int]:
        """The global batch sizes a search may choose: global_batch_size and
        global_batch_sizes, ascending, each once."""
        return sorted({self.global_batch_size, *(self.global_batch_sizes or [])})

    @model_validator(mode="after")
    def _recipe_needs_fp8(self) -> TrainingSpec:
        problems = []
        if self.fp8_recipe is not None and self.precision != "fp8":
            problems.append(FieldProblem(
                "training.fp8_recipe", f"needs precision 'fp8' (got {self.precision!r})"))
        if self.grad_reduce_dtype == "bf16" and self.precision not in ("bf16", "fp8"):
            problems.append(FieldProblem(
                "training.grad_reduce_dtype",
                f"'bf16' needs precision 'bf16' or 'fp8' (got {self.precision!r})"))
        if self.framework_version is not None and self.framework is None:
            problems.append(FieldProblem("training.framework_version",
                                         "needs training.framework (whose release it names)"))
        if problems:
            raise SpecError(problems)
        return self

    @property
    def grad_dtype(self) -> str:
        """What the gradients are reduced in: ``training.grad_reduce_dtype``, or fp16 for fp16
        training and fp32 otherwise (Megatron's arguments.py sets
        ``accumulate_allreduce_grads_in_fp32`` for bf16)."""
        if self.grad_reduce_dtype is not None:
            return self.grad_reduce_dtype
        return "fp16" if self.precision == "fp16" else "fp32"

    @property
    def grad_buffer_bytes(self) -> float:
        """Bytes per parameter of the gradient buffer the optimizer reads: 4 (fp32 main
        gradients, also for fp16 training's fp32 accumulation) unless the gradients are kept
        and reduced in bf16 (``grad_reduce_dtype: bf16``)."""
        return 2.0 if self.grad_reduce_dtype == "bf16" else 4.0

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_len
