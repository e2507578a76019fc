"""The cost-model profile of one software stack (``costmodel/data/stacks/<framework>.json``).

A plan is for a stack: its attention kernels, FP8 recipes, which communication it overlaps
with what, how much host time it spends per kernel, and what it keeps in memory beyond the
weights, gradients, optimizer states and activations of the textbook accounting decide the
step time and the fit as much as the layout does. One file per ``training.framework`` value,
each field with the source it was read from (a repository file at a commit, a paper, a
release note); ``releases`` hold what changed in older releases (``training.framework_version``).
``training.framework: null`` takes the Megatron-Core file (the contract's "Megatron-Core
kernels, any launcher").

What each part changes in the model (one place each):

* ``attention`` — the kernel ``plan.attention: "flash"`` means on each architecture, and the
  kernels the stack can run at all (:func:`resolve_attention`);
* ``fp8`` — the recipes the stack implements and, per recipe, the HBM bytes of its cast /
  amax / transpose kernels per element of each FP8 GEMM's inputs (forward) and output
  gradients (backward), and the bytes per element it stashes for the weight gradient
  (Transformer Engine keeps the FP8 copy, torchao the 16-bit input);
* ``overlap`` — whether the stack can overlap tensor-parallel communication with GEMMs, the
  data-parallel gradient reduction with the backward, and the parameter all-gather with the
  next forward, and whether its pipeline engine overlaps the reduction at all
  (:func:`effective_overlaps`);
* ``host`` — CPU time per modelled kernel, the floor of a small layer's time;
* ``memory`` — the allocator reserve (measured fraction of device memory) and the bytes per
  parameter the stack keeps beyond the textbook accounting;
* ``elementwise`` — the HBM traffic, kernel count and autograd stash of a block's memory-bound
  operations (norms, rotary embedding, MLP activation, GQA key/value expansion) as the
  stack's model code runs them: fused kernels (Megatron, TE) or eager PyTorch ops
  (torchtitan without torch.compile), and compiled where the stack compiles
  (:meth:`StackProfile.compiled`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)

from costmodel.errors import FieldProblem, SpecError
from costmodel.specs.framework import ATTENTION_KERNELS, FRAMEWORKS, AttentionKernel, FP8Recipe
from costmodel.specs.gpus import GPUType
from costmodel.specs.training import TrainingSpec

DEFAULT_FRAMEWORK = "megatron"
"""The stack of a request without ``training.framework``."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttentionStack(_Model):
    default: dict[str, AttentionKernel] = Field(
        description="The kernel 'flash' means, by GPU architecture ('*' = any other).")
    kernels: list[AttentionKernel] = Field(description="Kernels the stack can run.")
    source: str


class FP8RecipeCost(_Model):
    cast_fwd_bytes: NonNegativeFloat = Field(
        description="HBM bytes per element of each FP8 GEMM input in the forward pass "
        "(amax, scale, cast and the transposed copy the weight gradient needs).")
    cast_bwd_bytes: NonNegativeFloat = Field(
        description="HBM bytes per element of each FP8 GEMM's output gradient in the backward "
        "pass (and any re-cast of the saved input).")
    kernels_fwd: NonNegativeFloat = Field(description="Cast kernels per FP8 GEMM input.")
    kernels_bwd: NonNegativeFloat
    stash_bytes: PositiveFloat = Field(
        description="Bytes per element the recipe keeps of a linear layer's input for its "
        "weight gradient (1 = the FP8 copy, 2 = the 16-bit input).")
    tp_gather_bytes: PositiveFloat | None = Field(
        None, description="Bytes per element of the tensor-parallel all-gathers of a linear "
        "layer's input (forward) and output gradient (backward) where the recipe casts to FP8 "
        "before them (1), which is also the copy kept where the stack keeps the gathered input "
        "(memory.sp_saves_gathered_input); null = they stay 16-bit.")
    archs: list[str] = Field(description="GPU architectures the recipe runs on.")
    source: str


class FP8Stack(_Model):
    recipes: dict[FP8Recipe, FP8RecipeCost]
    default: dict[str, FP8Recipe] = Field(description="Recipe of fp8_recipe: null, by arch.")


class TPCommGemms(_Model):
    """How a stack's tensor-parallel overlap runs the GEMMs that carry its collectives
    (:func:`costmodel.layer_cost._tp_overlap_gemms`). Column-parallel layers (QKV, the MLP's
    input projection) take an all-gathered input forward and reduce-scatter their input
    gradient backward; row-parallel ones (attention output, the MLP's output projection)
    reduce-scatter their output forward and take an all-gathered output gradient backward."""

    gather_splits: PositiveInt | Literal["tp"] = Field(
        description="Row chunks of a GEMM fed by an all-gather (tp: one per rank).")
    scatter_splits: PositiveInt | Literal["tp"] = Field(
        description="Row chunks of a GEMM whose output is reduce-scattered, forward (and "
        "backward where ``backward`` is dgrad).")
    streams: PositiveInt = Field(description="Chunk GEMMs in flight at once.")
    comm_sms: NonNegativeInt = Field(
        description="SMs the reduce-scatter kernels of the forward's row-parallel GEMMs and "
        "the bulk backward collectives hold while those GEMMs run (0: copy engines only).")
    backward: Literal["dgrad", "dgrad_and_wgrad"] = Field(
        description="dgrad: each backward collective is fused with its input-gradient GEMM "
        "(chunked); dgrad_and_wgrad: the column-parallel layers' all-gather and "
        "reduce-scatter run in bulk beside their input- and weight-gradient GEMMs, which lose "
        "comm_sms SMs, and only the row-parallel input gradients are chunked.")
    needs_sequence_parallel: bool = Field(
        description="Only all-gathers and reduce-scatters are overlapped: without sequence "
        "parallelism the all-reduces run exposed.")
    partial_reduction: bool = Field(
        description="A reduce-scatter's tp partial sums are reduced by a separate kernel "
        "(read T·h, write T·h/tp).")
    local_copy: bool = Field(
        description="An all-gather first copies the local shard into the symmetric buffer.")
    source: str


class OverlapStack(_Model):
    tp_comm: bool = Field(description="Tensor-parallel collectives overlapped with the GEMMs "
                          "(TE userbuffers / async TP) when the plan asks for it.")
    tp_comm_gemms: TPCommGemms | None = Field(
        None, description="How the TP overlap runs the GEMMs that carry the collectives; null = "
        "the collectives hide behind the pass's GEMMs at the profile's overlap_compute_cost.")
    dp_grad_reduce: bool = Field(description="Bucketed gradient reduction under the backward "
                                 "(plan.overlap_grad_reduce honoured).")
    dp_param_gather: bool = Field(description="Parameter all-gather under the next forward "
                                  "(plan.overlap_param_gather honoured).")
    pipeline_grad_reduce: bool = Field(
        description="Whether the overlaps above also hold with pipeline parallelism (DeepSpeed's "
        "pipeline engine reduces gradients only after the last micro-batch).")
    cp_kv_exchange: CPExchange = Field(
        "ring", description="How context parallelism moves keys and values between its ranks "
        "(:data:`CPExchange`).")
    source: str


class HostStack(_Model):
    dispatch_us_per_kernel: NonNegativeFloat | None = Field(
        None, description="Host µs per modelled kernel; null = the calibration profile's.")
    source: str


class MemoryStack(_Model):
    allocator_reserve_fraction: NonNegativeFloat = Field(
        lt=1, description="Fraction of device memory the caching allocator's fragmentation "
        "and reserve take from what tensors can use.")
    extra_bytes_per_param: NonNegativeFloat = Field(
        0.0, description="Bytes per (local) parameter the stack holds beyond weights, "
        "gradients and optimizer states (e.g. DeepSpeed's 16-bit gradient buffer).")
    fp16_grads_at_step: bool = Field(
        False, description="With fp16 and no ZeRO the optimizer's fp32 gradients are made in "
        "the step from the 16-bit .grad, not held through forward and backward.")
    zero3_pipeline_unsharded: bool = Field(
        False, description="With zero_stage 3 and pp > 1 the stage's parameters stay gathered "
        "(16-bit) and its gradients unsharded until the last micro-batch, for the whole step.")
    sp_saves_gathered_input: bool = Field(
        False, description="With sequence parallelism, a column-parallel linear layer keeps "
        "its all-gathered input (every token of the micro-batch) for the weight gradient, "
        "rather than its sequence shard re-gathered in the backward.")
    source: str


class ElementwiseCost(_Model):
    """The memory-bound operations of one block as one way of running them executes them:
    forward HBM bytes and kernels per element of the tensor each one transforms, and the
    bytes autograd keeps of it for the backward (whose traffic is twice the forward's:
    :mod:`costmodel.layer_cost`). The residual adds are one read-read-write kernel each on
    every stack and stay in the block formula."""

    norm_bytes: PositiveFloat = Field(
        description="Forward HBM bytes per element of one norm (fused: read 2, write 2).")
    norm_kernels: PositiveFloat = Field(description="Kernels of one norm's forward.")
    norm_stash_bytes: NonNegativeFloat = Field(
        description="Bytes per element one norm keeps for its backward (fused: its 16-bit "
        "input; the per-token statistics are negligible).")
    rope_bytes: NonNegativeFloat = Field(
        description="Forward HBM bytes per element of the rotated queries and keys.")
    rope_kernels: NonNegativeFloat = Field(
        description="Kernels of one block's rotary embedding (queries and keys together).")
    rope_stash_bytes: NonNegativeFloat = Field(
        description="Bytes per rotated query/key element the rotation itself keeps for its "
        "backward (beyond what attention keeps).")
    act_bytes_gated: PositiveFloat = Field(
        description="Forward HBM bytes per FFN-wide element of a gated activation "
        "(act(gate) * up).")
    act_kernels_gated: PositiveFloat
    act_stash_gated: NonNegativeFloat = Field(
        description="Bytes per FFN-wide element a gated activation keeps beyond its two "
        "inputs (eager: act(gate), the product's other operand).")
    act_bytes_plain: PositiveFloat = Field(
        description="Forward HBM bytes per FFN-wide element of an ungated activation.")
    act_kernels_plain: PositiveFloat
    kv_repeat: bool = Field(
        description="With fewer key/value heads than query heads, keys and values are "
        "copied out to one per query head before attention (what attention then keeps).")
    loss_bytes_per_logit: PositiveFloat | None = Field(
        None, description="Where the loss runs this way too (compiled with the blocks), its "
        "peak bytes per logit without tensor parallelism; null: the loss runs as "
        "recompute.loss_bytes_per_logit says.")


class ElementwiseStack(_Model):
    kernels: ElementwiseCost = Field(description="How the stack runs them by default.")
    compiled: ElementwiseCost | None = Field(
        None, description="How they run under torch.compile, where the stack compiles: with "
        "async tensor parallelism, which needs it (null = the stack does not compile).")
    source: str


CPExchange = Literal["ring", "all_gather"]
"""``ring``: each rank passes its key/value block to the next, one step per block, hidden
behind the attention of the block in hand, and the backward passes blocks and their
gradients the same way (Megatron-Core / Transformer Engine ``cp_comm_type`` p2p);
``all_gather``: the blocks are gathered once, hidden only behind the first block's
attention, again in the backward, whose key/value gradients travel ring-wise in fp32
(PyTorch's context parallelism: torch/distributed/tensor/experimental/_context_parallel)."""

SelectiveRecompute = Literal["attention_core", "op_every_second_mm"]
"""What ``plan.recompute: selective`` means on a stack: ``attention_core`` is Korthikanti et
al. 2022's (only the core attention is recomputed; Megatron-LM ``--recompute-granularity
selective``); ``op_every_second_mm`` is torchtitan's per-op policy (the outputs of attention
and of every odd-numbered linear layer of a block are saved, the rest recomputed)."""


class RecomputeStack(_Model):
    selective: SelectiveRecompute = Field(
        description="What plan.recompute 'selective' keeps and recomputes on this stack.")
    loss_bytes_per_logit: PositiveFloat = Field(
        description="Peak bytes per logit of the LM head's output and the cross-entropy at "
        "the start of the backward, when every activation of the last stage is still held.")
    loss_bytes_per_logit_vocab_parallel: PositiveFloat | None = Field(
        None, description="The same where tensor parallelism shards the vocabulary and the "
        "stack then runs another loss (torchtitan's loss_parallel); null: as "
        "loss_bytes_per_logit.")
    source: str

    def loss_bytes(self, tp: Any) -> np.ndarray:
        """Per candidate: peak bytes per logit of the loss at tensor-parallel degree ``tp``."""
        vp = self.loss_bytes_per_logit_vocab_parallel
        return np.where(np.asarray(tp) > 1, vp if vp is not None else self.loss_bytes_per_logit,
                        self.loss_bytes_per_logit)


class Release(_Model):
    """What an older release did differently (fields left null keep the current ones)."""

    attention: AttentionStack | None = None
    overlap: OverlapStack | None = None
    host: HostStack | None = None
    memory: MemoryStack | None = None
    elementwise: ElementwiseStack | None = None
    note: str


def _async_tp(tp_overlap: Any, tp: Any) -> np.ndarray:
    """Per candidate: the plan overlaps its tensor-parallel communication (with tp > 1), which
    on a compiling stack is async TP and needs torch.compile."""
    return np.asarray(tp_overlap, dtype=bool) & (np.asarray(tp) > 1)


class StackProfile(_Model):
    format: Literal["meshplan-stack/1"]
    name: str
    title: str
    release: str = Field(description="The current release this file describes.")
    attention: AttentionStack
    fp8: FP8Stack
    overlap: OverlapStack
    host: HostStack
    memory: MemoryStack
    recompute: RecomputeStack
    elementwise: ElementwiseStack
    releases: dict[str, Release] = Field(
        default_factory=dict, description="Older releases and what they did differently.")

    def compiled(self, tp_overlap: Any, tp: Any, torch_compile: bool | None = None
                 ) -> np.ndarray:
        """Whether a plan's blocks run under torch.compile, on a stack that compiles
        (``elementwise.compiled``): as ``plan.torch_compile`` says, or by default where async
        tensor parallelism (the honoured ``plan.tp_comm_overlap`` with tp > 1) requires it,
        as torchtitan's does; its launch config enables ``compile.enable`` exactly there.
        Scalars or per-candidate arrays."""
        if self.elementwise.compiled is None:
            return np.asarray(False)
        needed = _async_tp(tp_overlap, tp)
        return needed if torch_compile is None else np.full(needed.shape, torch_compile)

    def loss_bytes(self, tp: Any, compiled: Any) -> np.ndarray:
        """Per candidate: peak bytes per logit of the loss at tensor-parallel degree ``tp``,
        compiled with the blocks where ``compiled`` (:meth:`compiled`) and the stack's compiled
        path says what its loss then holds; the vocab-parallel loss keeps its eager bytes."""
        eager = self.recompute.loss_bytes(tp)
        fused = self.elementwise.compiled.loss_bytes_per_logit if self.elementwise.compiled \
            else None
        if fused is None:
            return eager
        return np.where(np.asarray(compiled) & (np.asarray(tp) == 1), fused, eager)

    def compile_problem(self, torch_compile: bool | None, tp_overlap: Any, tp: Any
                        ) -> str | None:
        """Why ``plan.torch_compile`` cannot be as asked on this stack (None: it can)."""
        if torch_compile and self.elementwise.compiled is None:
            return (f"{self.title} has no torch.compile path that meshplan costs or launches: "
                    "its norms and activations run as fused kernels already "
                    f"(costmodel/data/stacks/{self.name}.json elementwise); leave it null")
        needed = bool(np.any(_async_tp(tp_overlap, tp)))
        if torch_compile is False and needed and self.elementwise.compiled is not None:
            return (f"{self.title}'s async tensor parallelism (plan.tp_comm_overlap with tp > 1) "
                    "runs only under torch.compile: set it true or null, or turn the overlap "
                    "off")
        return None

    def tp_overlap_note(self, tp_overlap: bool, tp: int, sequence_parallel: bool) -> str | None:
        """What the estimate says where the plan asks for a TP overlap this stack cannot give:
        where it overlaps only all-gathers and reduce-scatters
        (``overlap.tp_comm_gemms.needs_sequence_parallel``), without sequence parallelism the
        all-reduces run exposed (None: nothing to say)."""
        g = self.overlap.tp_comm_gemms
        if (g is not None and g.needs_sequence_parallel and tp_overlap and tp > 1
                and not sequence_parallel):
            return (f"{self.title}'s tensor-parallel overlap fuses only the all-gathers and "
                    "reduce-scatters of sequence parallelism with their GEMMs: with "
                    "plan.sequence_parallel off the TP all-reduces run exposed (turn "
                    "sequence_parallel on to overlap them)")
        return None

    def at(self, version: str | None) -> StackProfile:
        """This stack as of release ``version`` (null or the current release = as is)."""
        if version is None or version == self.release:
            return self
        rel = self.releases.get(version)
        if rel is None:
            known = ", ".join([self.release, *self.releases])
            raise SpecError(FieldProblem(
                "training.framework_version",
                f"unknown {self.title} release {version!r}; known: {known}"))
        updates = {k: v for k, v in (("attention", rel.attention), ("overlap", rel.overlap),
                                     ("host", rel.host), ("memory", rel.memory),
                                     ("elementwise", rel.elementwise))
                   if v is not None}
        return self.model_copy(update={**updates, "release": version})


@cache
def _load(name: str) -> StackProfile:
    text = resources.files("costmodel").joinpath(f"data/stacks/{name}.json").read_text()
    return StackProfile.model_validate(json.loads(text))


def get_stack(framework: str | None, version: str | None = None) -> StackProfile:
    """The stack profile of ``training.framework`` (null = Megatron-Core) at ``version``."""
    name = framework or DEFAULT_FRAMEWORK
    if name not in FRAMEWORKS:
        raise SpecError(FieldProblem("training.framework",
                                     f"unknown framework {name!r}; one of {', '.join(FRAMEWORKS)}"))
    return _load(name).at(version)


def resolve_attention(stack: StackProfile, kernel: str, arch: str) -> str:
    """The attention kernel a plan runs: ``plan.attention`` as given, or for ``flash`` the
    stack's default for the architecture; refused (``plan.attention``) when the stack cannot
    run it."""
    if kernel not in ATTENTION_KERNELS:
        raise SpecError(FieldProblem("plan.attention", f"unknown kernel {kernel!r}"))
    if kernel == "flash":
        return stack.attention.default.get(arch) or stack.attention.default["*"]
    if kernel not in stack.attention.kernels:
        raise SpecError(FieldProblem(
            "plan.attention", f"{stack.title} does not run {kernel!r} attention (it runs "
            f"{', '.join(stack.attention.kernels)}; {stack.attention.source})"))
    return kernel


def resolve_fp8_recipe(stack: StackProfile, recipe: str | None, arch: str) -> str:
    """The FP8 recipe of an fp8 job: ``training.fp8_recipe`` or the stack's default for the
    architecture; refused when the stack or the GPU does not run it."""
    name = recipe or stack.fp8.default.get(arch) or stack.fp8.default["*"]
    cost = stack.fp8.recipes.get(name)  # type: ignore[call-overload]
    if cost is None:
        raise SpecError(FieldProblem(
            "training.fp8_recipe", f"{stack.title} has no {name!r} FP8 recipe (it has "
            f"{', '.join(stack.fp8.recipes)})"))
    if arch not in cost.archs:
        raise SpecError(FieldProblem(
            "training.fp8_recipe", f"the {name!r} recipe runs on {', '.join(cost.archs)} GPUs, "
            f"not {arch}"))
    return name


@dataclass(frozen=True)
class Execution:
    """How a job runs on one GPU type under its stack: what every cost formula reads of the
    stack (resolved once per request and pool)."""

    stack: StackProfile
    kernel: str
    """The attention kernel (``plan.attention`` resolved: :func:`resolve_attention`)."""
    fp8_recipe: str | None
    fp8: FP8RecipeCost | None

    def overlaps(self, grad_reduce: Any, param_gather: Any, tp_comm: Any, pp: Any
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The overlaps a plan asks for (``plan.overlap_grad_reduce``, ``overlap_param_gather``,
        ``tp_comm_overlap``; scalars or per-candidate arrays) that the stack honours: a stack
        without one runs it exposed, and a stack whose pipeline engine reduces only after the
        last micro-batch (``pipeline_grad_reduce: false``, DeepSpeed) exposes the data-parallel
        reduction and gather whenever ``pp > 1``."""
        o = self.stack.overlap
        in_pipe = np.asarray(pp) > 1
        pipe_ok = np.asarray(o.pipeline_grad_reduce) | ~in_pipe
        grad = np.asarray(grad_reduce, dtype=bool) & o.dp_grad_reduce & pipe_ok
        gather = np.asarray(param_gather, dtype=bool) & o.dp_param_gather & pipe_ok
        tp = np.asarray(tp_comm, dtype=bool) & o.tp_comm
        return grad, gather, tp

    def describe(self, compiled: bool = False) -> str:
        """One line for the estimate: which stack and kernels it assumed (``compiled``: the
        plan's blocks run under torch.compile, :meth:`StackProfile.compiled`)."""
        parts = [f"{self.stack.title} {self.stack.release}", f"attention {self.kernel}"]
        if self.stack.elementwise.compiled is not None:
            parts.append("blocks under torch.compile (fused pointwise kernels)" if compiled
                         else "eager blocks (torch.compile off: each pointwise op its own "
                         "kernel)")
        if self.stack.recompute.selective == "op_every_second_mm":
            parts.append("selective recompute per op (every second linear layer and the "
                         "memory-bound kernels recomputed)")
        if self.fp8_recipe is not None:
            parts.append(f"fp8 recipe {self.fp8_recipe} (linear layers in fp8; attention, LM "
                         "head, norms and optimizer in 16/32 bits)")
        return ", ".join(parts)


def execution(training: TrainingSpec, attention: str, gpu: GPUType) -> Execution:
    """The stack (``training.framework`` at ``training.framework_version``), the attention
    kernel for ``gpu`` and, with precision fp8, the FP8 recipe and its costs."""
    stack = get_stack(training.framework, training.framework_version)
    kernel = resolve_attention(stack, attention, gpu.arch)
    recipe: str | None = None
    cost: FP8RecipeCost | None = None
    if training.precision == "fp8":
        recipe = resolve_fp8_recipe(stack, training.fp8_recipe, gpu.arch)
        cost = stack.fp8.recipes[recipe]  # type: ignore[index]
    return Execution(stack, kernel, recipe, cost)
