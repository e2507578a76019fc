"""Lay a model out as a plan says: pipeline stages, tensor parallelism, data parallelism.

Ranks form a ``(pp, dp, tp)`` device mesh (``init_device_mesh``), tensor parallel fastest as in
Megatron's rank order, pipeline outermost. On every rank:

1. **Pipeline**: the global stages this pipeline rank owns (the cost model's own layer split and
   stage placement, :func:`runtime.plan_file.split`, or a schedule CSV's), each a copy of the
   model with the other parts deleted (:func:`runtime.worker.model.split_for_stage`), wrapped in
   a ``torch.distributed.pipelining.PipelineStage``; the schedule is the plan's
   (``get_schedule_class``) or a CSV loaded by ``_PipelineScheduleRuntime._load_csv``.
2. **Tensor parallel** (``parallelize_module`` on the ``tp`` mesh, torchtitan's plan for a
   Llama block): fused QKV and MLP-in column-parallel, output projection and MLP-down
   row-parallel (two all-reduces forward, two backward — Shoeybi et al. 2019 §3), the embedding
   row-parallel over the vocabulary (Megatron's ``VocabParallelEmbedding``, one all-reduce),
   the LM head column-parallel with the loss computed on vocabulary shards
   (``loss_parallel``, Megatron's vocab-parallel cross-entropy). With
   ``sequence_parallel`` the norms run on sequence shards and the all-reduces become
   all-gather + reduce-scatter pairs (Korthikanti et al. 2022 §4.2.2).
3. **Data parallel** per ZeRO stage:

   * 0 — ``DistributedDataParallel`` with buckets of Megatron-Core's size, max(40M, 1M·dp)
     parameters (``bucket_cap_mb``), the bucketing the cost model assumes, gradients kept in
     the buckets (``gradient_as_bucket_view``, Megatron's contiguous gradient buffer) and
     all-reduced once per step (``no_sync`` on the other micro-batches);
   * 1 and 2 — FSDP2 ``fully_shard`` per block with ``reshard_after_forward=False`` and the
     gradient reduce-scatter and reshard only after the last micro-batch: parameters gathered
     once per step and gradients reduce-scattered once per step, optimizer states sharded —
     Megatron's distributed optimizer, which is what the cost model prices for 1 and 2
     (PyTorch has no separate ZeRO-2 mode);
   * 3 — FSDP2 ``fully_shard`` per block, resharding after forward and backward, gradients
     reduce-scattered every micro-batch (FSDP's default; ``zero3_per_microbatch``).

Precision: on CUDA the plan's bf16 (fp32 parameters with ``torch.autocast`` under DDP/TP/PP,
FSDP2's ``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`` when sharded); on a CPU
plain fp32, the dtype the CPU calibration measures.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from costmodel.specs.model import ModelSpec
from costmodel.specs.plan import ParallelPlan
from runtime.plan_file import StageSplit
from runtime.worker.dist import Env
from runtime.worker.model import (
    Transformer,
    build_model,
    causal_lm_loss,
    materialize,
    set_recompute,
    split_for_stage,
)

MEGATRON_BUCKET_PARAMS = 40_000_000
"""Megatron-Core DDP bucket: max(40M, 1M × dp) parameters (as ``costmodel.data_parallel``)."""


def unsupported(plan: ParallelPlan, model: ModelSpec, world_size: int) -> list[str]:
    """Rules this worker adds to the cost model's (``field: rule`` strings; empty = runs)."""
    out = []
    if plan.num_gpus != world_size:
        out.append(f"plan: tp·pp·dp·cp = {plan.num_gpus} ranks, but the job has {world_size} "
                   "processes")
    if plan.cp > 1:
        out.append("plan.cp: context parallelism is not run by the worker")
    if plan.ep > 1:
        out.append("plan.ep: expert parallelism is not run by the worker")
    if plan.stages is not None:
        out.append("plan.stages: heterogeneous pipelines are not run by the worker")
    if plan.vocab_placement != "end_stages":
        out.append("plan.vocab_placement: only end_stages is run by the worker")
    if plan.activation_offload > 0:
        out.append("plan.activation_offload: not run by the worker")
    if plan.activation_offload_layers:
        out.append("plan.activation_offload_layers: not run by the worker (Megatron-Core's "
                   "CPU offload)")
    if plan.tp_comm_overlap:
        out.append("plan.tp_comm_overlap: not run by the worker (no userbuffers)")
    if plan.tp > 1 and plan.dp > 1 and plan.zero_stage == 0:
        out.append("plan.zero_stage: tp > 1 with dp > 1 needs zero_stage >= 1 (FSDP2 on the dp "
                   "mesh; DDP does not take tensor-parallel parameters)")
    if model.tie_word_embeddings and (plan.tp > 1 or plan.pp > 1):
        out.append("model.tie_word_embeddings: tied embeddings run only with tp = pp = 1")
    if plan.tp > 1 and model.kv_heads % plan.tp:
        out.append(f"plan.tp: the fused QKV layout needs num_key_value_heads="
                   f"{model.kv_heads} divisible by tp={plan.tp}")
    if plan.sequence_parallel and plan.pp > 1:
        out.append("plan.sequence_parallel: not run together with pp > 1 by the worker")
    return out


@dataclass
class Layout:
    """This rank's part of the laid-out model and how to run one step."""

    env: Env
    plan: ParallelPlan
    modules: list[nn.Module]
    """The model parts (stages) on this rank, wrapped for DP/TP."""
    mesh: Any
    schedule: Any = None
    """The pipeline schedule (pp > 1), else None."""
    stage_ids: list[int] = field(default_factory=list)
    compute_dtype: torch.dtype = torch.float32
    autocast: bool = False
    loss_parallel: bool = False

    @property
    def pp_rank(self) -> int:
        return self.mesh["pp"].get_local_rank() if self.mesh is not None else 0

    @property
    def dp_rank(self) -> int:
        return self.mesh["dp"].get_local_rank() if self.mesh is not None else 0

    @property
    def first(self) -> bool:
        return 0 in self.stage_ids

    def last(self, num_stages: int) -> bool:
        return (num_stages - 1) in self.stage_ids

    def parameters(self) -> list[nn.Parameter]:
        seen: set[int] = set()
        out = []
        for m in self.modules:
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def param_groups(self) -> list[list[nn.Parameter]]:
        """Parameters grouped by kind — plain tensors, and DTensors per device mesh — since
        fused and foreach optimizer kernels take one kind per call (one optimizer param group
        each)."""
        groups: dict[Any, list[nn.Parameter]] = {}
        for p in self.parameters():
            key = id(p.device_mesh) if hasattr(p, "device_mesh") else None
            groups.setdefault(key, []).append(p)
        return list(groups.values())

    @contextlib.contextmanager
    def compute(self) -> Iterator[None]:
        """Autocast (CUDA bf16 without FSDP's mixed precision) and loss parallelism (tp > 1)
        around a step's forward and backward."""
        with contextlib.ExitStack() as st:
            if self.autocast:
                st.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
            if self.loss_parallel:
                from torch.distributed.tensor.parallel import loss_parallel

                st.enter_context(loss_parallel())
            yield


def make_mesh(env: Env, plan: ParallelPlan) -> Any:
    if env.world_size == 1:
        return None
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(env.device.type, (plan.pp, plan.dp, plan.tp),
                            mesh_dim_names=("pp", "dp", "tp"))


def apply_tp(model: Transformer, tp_mesh: Any, sequence_parallel: bool) -> None:
    """Tensor parallelism of torchtitan's Llama plan (see the module docstring)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    sp = sequence_parallel
    top: dict[str, Any] = {}
    if model.embed is not None:
        top["embed"] = RowwiseParallel(input_layouts=Replicate(),
                                       output_layouts=Shard(1) if sp else Replicate())
    if model.norm is not None and sp:
        top["norm"] = SequenceParallel()
    if model.lm_head is not None:
        top["lm_head"] = ColwiseParallel(input_layouts=Shard(1) if sp else Replicate(),
                                         output_layouts=Shard(-1), use_local_output=False)
    if top:
        parallelize_module(model, tp_mesh, top)
    for block in model.layers.values():
        apply_tp_block(block, tp_mesh, sp)


def apply_tp_block(block: nn.Module, tp_mesh: Any, sequence_parallel: bool) -> None:
    """Tensor parallelism of one block (fused QKV and MLP-in column-parallel, output and
    MLP-down row-parallel; with sequence parallelism the norms on sequence shards)."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    sp = sequence_parallel
    plan: dict[str, Any] = {
        "attn.qkv": ColwiseParallel(),
        "attn.out": RowwiseParallel(output_layouts=Shard(1) if sp else Replicate()),
        "mlp.fc1": ColwiseParallel(),
        "mlp.fc2": RowwiseParallel(output_layouts=Shard(1) if sp else Replicate()),
    }
    if sp:
        plan.update({
            "attn_norm": SequenceParallel(),
            "attn": PrepareModuleInput(input_layouts=(Shard(1), None),
                                       desired_input_layouts=(Replicate(), None)),
            "mlp_norm": SequenceParallel(),
            "mlp": PrepareModuleInput(input_layouts=(Shard(1),),
                                      desired_input_layouts=(Replicate(),)),
        })
    parallelize_module(block, tp_mesh, plan)


def apply_fsdp(model: Transformer, dp_mesh: Any, zero_stage: int, env: Env,
               reduce_bf16: bool = False) -> None:
    """FSDP2 over the dp mesh; on a GPU bf16 parameters and gradients reduced in fp32, or in
    bf16 with ``reduce_bf16`` (``training.grad_reduce_dtype: bf16``)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    reduce = torch.bfloat16 if reduce_bf16 else torch.float32
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=reduce) \
        if env.is_cuda else MixedPrecisionPolicy()
    reshard = zero_stage >= 3
    for block in model.layers.values():
        fully_shard(block, mesh=dp_mesh, mp_policy=mp, reshard_after_forward=reshard)
    fully_shard(model, mesh=dp_mesh, mp_policy=mp, reshard_after_forward=reshard)


def apply_ddp(model: nn.Module, dp_group: Any, dp: int, env: Env) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel as DDP

    bucket_bytes = max(MEGATRON_BUCKET_PARAMS, 1_000_000 * dp) * 4
    # gradients live in the buckets (Megatron's contiguous gradient buffer): no copies
    return DDP(model, process_group=dp_group, bucket_cap_mb=bucket_bytes / 2**20,
               device_ids=[env.device.index] if env.is_cuda else None,
               broadcast_buffers=False, gradient_as_bucket_view=True)


def build(env: Env, spec: ModelSpec, seq_len: int, plan: ParallelPlan, stages: StageSplit,
          micro_batches: int, schedule_csv: str | None = None, seed: int = 0,
          recompute: str = "none", reduce_bf16: bool = False) -> Layout:
    """This rank's stages of ``spec``, laid out per ``plan`` (see the module docstring)."""
    mesh = make_mesh(env, plan)
    pp_rank = mesh["pp"].get_local_rank() if mesh is not None else 0
    mine = stages.stages_of(pp_rank)
    n_stages = len(stages.layers)
    dtype = torch.float32
    autocast = env.is_cuda and plan.zero_stage == 0
    modules: list[nn.Module] = []
    raw: list[Transformer] = []
    for s in mine:
        m = build_model(spec, seq_len, plan.tp)
        set_recompute(m, recompute, plan.recompute_num_layers)
        split_for_stage(m, list(stages.block_range(s)), first=s == 0, last=s == n_stages - 1)
        materialize(m, env.device, dtype, seed)
        if plan.tp > 1:
            apply_tp(m, mesh["tp"], plan.sequence_parallel)
        wrapped: nn.Module = m
        if plan.dp > 1:
            if plan.zero_stage == 0:
                wrapped = apply_ddp(m, mesh["dp"].get_group(), plan.dp, env)
            else:
                apply_fsdp(m, mesh["dp"], plan.zero_stage, env, reduce_bf16)
                autocast = False
        elif env.is_cuda:
            autocast = True
        raw.append(m)
        modules.append(wrapped)
    layout = Layout(env, plan, modules, mesh, stage_ids=mine, autocast=autocast,
                    loss_parallel=plan.tp > 1)
    if plan.pp > 1:
        layout.schedule = _schedule(env, mesh, plan, modules, mine, n_stages, micro_batches,
                                    schedule_csv, layout)
    return layout


def _schedule(env: Env, mesh: Any, plan: ParallelPlan, modules: list[nn.Module],
              mine: list[int], n_stages: int, micro_batches: int, schedule_csv: str | None,
              layout: Layout) -> Any:
    from torch.distributed.pipelining import PipelineStage
    from torch.distributed.pipelining.schedules import (
        PipelineScheduleSingle,
        _PipelineScheduleRuntime,
        get_schedule_class,
    )

    group = mesh["pp"].get_group()
    pstages = [PipelineStage(mod, s, n_stages, env.device, group=group)
               for mod, s in zip(modules, mine, strict=True)]
    loss_fn = _loss_fn(layout)
    if schedule_csv is not None:
        sched = _PipelineScheduleRuntime(pstages, micro_batches, loss_fn=loss_fn)
        sched._load_csv(schedule_csv)
        return sched
    cls = get_schedule_class(plan.schedule)
    if issubclass(cls, PipelineScheduleSingle):
        return cls(pstages[0], micro_batches, loss_fn=loss_fn)
    return cls(pstages, micro_batches, loss_fn=loss_fn)


def _loss_fn(layout: Layout) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return causal_lm_loss


def global_grad_norm_clip(layout: Layout, max_norm: float = 1.0) -> float:
    """Clip gradients by their global norm over all parameters of the model (every pipeline
    rank's, every tensor-parallel and FSDP shard's), as Megatron and torchtitan do: the
    gradient-norm pass the cost model's optimizer step includes.

    Gradients are grouped by kind (plain tensors, and DTensors per device mesh: foreach kernels
    do not mix them); each group's norm is complete over its mesh (DTensor reduces it), plain
    tensors are replicated across tensor-parallel ranks; the pipeline ranks' squares are summed
    over the pp group."""
    groups: dict[Any, list[torch.Tensor]] = {}
    for p in layout.parameters():
        if p.grad is not None:
            g = p.grad
            key = id(g.device_mesh) if hasattr(g, "device_mesh") else None
            groups.setdefault(key, []).append(g)
    sq = torch.zeros((), dtype=torch.float32, device=layout.env.device)
    for grads in groups.values():
        n = torch.nn.utils.get_total_norm(grads, foreach=True)
        if hasattr(n, "full_tensor"):
            n = n.full_tensor()
        sq = sq + n.detach().float() ** 2
    if layout.plan.pp > 1 and layout.mesh is not None:
        dist.all_reduce(sq, group=layout.mesh["pp"].get_group())
    norm = float(sq.sqrt())
    coef = min(1.0, max_norm / (norm + 1e-6))
    if coef < 1.0:
        for grads in groups.values():
            torch._foreach_mul_(grads, coef)
    return norm
