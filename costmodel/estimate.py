"""Evaluate one explicit plan: step time with its breakdown, throughput, MFU, cost, memory.

Pipeline of the computation:

1. per-block and vocabulary-layer costs of one micro-batch on one rank (:mod:`layer_cost`);
2. per-stage forward / input-gradient / weight-gradient times, with ZeRO-3 and activation
   offload exposure folded in, and send/recv times per stage boundary;
3. the schedule's actual per-rank order simulated (:mod:`costmodel.pipeline.simulator`);
4. data-parallel gradient reduction and parameter gathering, overlapped with the last
   micro-batch's backward and the first one's forward as Megatron-LM's DDP does
   (``megatron/core/distributed``: buckets of max(40M, 1M·dp) parameters, the first/last
   bucket exposed), then the optimizer step (memory-bound);
5. memory per pipeline rank (:mod:`memory`) with the simulated in-flight micro-batches.

A heterogeneous pipeline (``plan.stages``: each stage on its own pool, as Metis, AMP and Sailor
place them) goes through the same steps: the device, shard and block costs are built once per
pool used, and every per-stage or per-rank quantity (stage times, ZeRO-3 and offload exposure,
DP communication and optimizer, memory against the rank's own capacity) uses its stage's pool.
Send/recv between stages on different pools runs at ``cluster.inter_pool_Gbps`` per GPU (null:
the slower of the two pools' NICs). Totals: GPUs and price summed over the stages, MFU against
the GPU-count-weighted mean peak, ``Estimate.gpu`` the distinct GPU names joined by ``+``.

A stage may have its own tensor-parallel degree (``plan.stages.N.tp``, as Metis and AMP allow;
cp and dp stay common): the shard and block costs are then built once per (pool, tp), and the
stage's compute, TP collectives, activations, logits, parameters per rank (÷ tp_s), DP/ZeRO
groups (stride tp_s), memory and ZeRO-3 gathers use tp_s; stage s holds tp_s·cp·dp GPUs of its
pool (GPUs, price and the MFU peak weights follow); send/recv between stages of different tp
reshards the activation (see :meth:`_Evaluation._p2p_stages`). Stages at the plan's tp take
exactly the formulas of a plan without per-stage tp.

Chimera and BitPipe (``plan.schedule``; :mod:`costmodel.pipeline.bidirectional`) run two
replicas of the model in one pipeline group: every rank holds one (Chimera) or two (BitPipe)
stages of *each* replica, so its weights, gradients and optimizer states are those of all its
stage copies; half of the micro-batches go through each replica, and the in-flight
activations per rank come from the simulation as for every schedule. The two copies of each
stage sit on ranks ``r`` and ``pp−1−r`` and all-reduce their gradients with each other before
the optimizer step (Chimera §3.2, "communication scheme": each stage's gradients are
synchronized among the workers holding its replicas), on top of the plan's data-parallel
reduction; modelled as one all-reduce of the rank's gradient bytes over that pair, not
overlapped with the pipeline (an upper bound: Chimera's eager synchronization hides part of
it in the bubbles).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from costmodel import __version__
from costmodel.data_parallel import dp_comm, grad_comm_bytes, optimizer_time, zero3_per_microbatch
from costmodel.errors import FieldProblem, SpecError
from costmodel.flops import model_flops_per_token
from costmodel.goodput import (
    GoodputModel,
    goodput,
    goodput_model,
    gpu_failures_per_hour,
    plan_nodes,
    preemptions_per_hour,
)
from costmodel.kernels import attention_rates, best_published_mfu
from costmodel.layer_cost import (
    ELEM,
    RECOMPUTE_CODES,
    BlockCost,
    EdgeCost,
    Shard,
    block_cost,
    edge_cost,
)
from costmodel.memory import (
    GIB,
    block_activation_bytes,
    block_working_bytes,
    embedding_activation_bytes,
    logits_bytes,
    memory_band,
    memory_verdict,
    overhead_bytes,
    stack_state_rules,
    state_bytes,
    usable_bytes,
    zero3_gathered_params,
)
from costmodel.ops import Device, collective_time
from costmodel.pipeline.custom import as_rows, encoded_custom
from costmodel.pipeline.schedules import ScheduleError, replicas
from costmodel.pipeline.simulator import SimResult, simulate, simulate_named
from costmodel.profile import CalibrationProfile, default_profile
from costmodel.results import (
    Breakdown,
    Estimate,
    MemoryReport,
    PipelineReport,
    StageMemory,
)
from costmodel.specs.cluster import Cluster, GPUPool
from costmodel.specs.model import ModelSpec
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.reliability import ReliabilitySpec
from costmodel.specs.request import (
    EstimateRequest,
    check_plan,
    lenient_plan,
    num_microbatches,
    parse,
    plan_stage_ranks,
    stage_layers,
    stage_pools,
)
from costmodel.specs.training import TrainingSpec
from costmodel.stacks.stack import execution

SPLIT_BACKWARD = ("InterleavedZeroBubble", "ZBVZeroBubble", "DualPipeV")
"""Schedules whose backward runs as separate input- and weight-gradient passes (I and W
actions; torch's ``stage_backward_input`` / ``stage_backward_weight``)."""


def splits_backward(plan: ParallelPlan) -> bool:
    """Whether the plan's schedule runs split backward passes: a named zero-bubble schedule,
    or a custom schedule with any input-gradient-only (``I``) action."""
    if plan.schedule == "custom":
        return any("I" in a for row in plan.custom_schedule or () for a in row)
    return plan.schedule in SPLIT_BACKWARD

SCHEDULE_FIELDS = {"name": "plan.schedule", "n_microbatches": "training.global_batch_size",
                   "pp": "plan.pp", "virtual_stages": "plan.virtual_stages"}
"""Simulator argument names → the request fields they come from."""
CUSTOM_FIELDS = {"schedule": "plan.custom_schedule", "stage_ranks": "plan.custom_schedule"}
"""The same for a custom schedule (``plan.custom_schedule``)."""


@dataclass
class _Ctx:
    model: ModelSpec
    training: TrainingSpec
    cluster: Cluster
    plan: ParallelPlan
    pool: GPUPool
    dev: Device
    profile: CalibrationProfile
    shard: Shard
    m: int
    stage_pools: list[GPUPool] | None = None
    """Pool of every global stage (``plan.stages``); None = every stage on ``pool``."""
    stack: str = ""
    """Which stack, release, attention kernel and FP8 recipe the estimate assumed."""
    notes: list[str] = field(default_factory=list)
    """Warnings found while checking (settings dropped, unmeasured kernels)."""


def plan_shard(plan: ParallelPlan, training: TrainingSpec, pool: GPUPool,
               tp: int | None = None, recompute: str | None = None) -> Shard:
    """The per-rank shard of a stage on ``pool`` with tensor-parallel degree ``tp`` (null =
    the plan's), with the stack's attention kernel and FP8 recipe for the pool's GPU;
    ``recompute`` (null = the plan's) costs layers under another recompute mode (the layers a
    partial recompute leaves unrecomputed are 'none')."""
    ex = execution(training, plan.attention, pool.gpu_type)
    return Shard.for_stack(
        training.seq_len, pool.gpus_per_node, ex,
        b=float(plan.micro_batch_size), tp=float(plan.tp if tp is None else tp),
        cp=float(plan.cp), ep=float(plan.ep),
        sp=bool(plan.sequence_parallel),
        rc=RECOMPUTE_CODES[plan.recompute if recompute is None else recompute],
        flash=ex.kernel != "unfused",
        tp_overlap=bool(ex.overlaps(False, False, plan.tp_comm_overlap, plan.pp)[2]),
        torch_compile=plan.torch_compile,
    )


def _f(x: Any) -> float:
    return float(np.asarray(x))


def estimate(request: EstimateRequest | dict[str, Any]) -> Estimate:
    """Predict one plan (the ``POST /v1/estimates`` body, as a dict or the pydantic model).

    Raises :class:`~costmodel.errors.SpecError` (field + rule) for invalid input.
    """
    req: EstimateRequest = parse(EstimateRequest, request)
    return evaluate(req.model, req.training, req.cluster, req.plan, req.calibration)


def evaluate(model: ModelSpec, training: TrainingSpec, cluster: Cluster, plan: ParallelPlan,
             profile: CalibrationProfile | None = None) -> Estimate:
    ev = _Evaluation(_context(model, training, cluster, plan, profile))
    est = ev.run()
    used = ev.gpus_by_pool()
    if training.reliability is None:
        spot = [p.name for p, _ in used if p.preemption_per_hour > 0]
        if not spot:
            return est
        return est.model_copy(update={"warnings": [*est.warnings, (
            f"pool{'s' if len(spot) > 1 else ''} {', '.join(spot)} set preemption_per_hour but "
            "training.reliability is not given: preemptions are not counted (give it for "
            "goodput and the time to train with failures and preemptions)")]})
    return est.model_copy(update={"goodput": goodput(
        model, training, training.reliability,
        **_goodput_plan(training.reliability, est, plan, used),
        tokens_per_s=est.tokens_per_s, cost_per_hour=est.cost_per_hour)})


def _goodput_plan(rel: ReliabilitySpec, est: Estimate, plan: ParallelPlan,
                  used: list[tuple[GPUPool, int]]) -> dict[str, Any]:
    """What the goodput model takes of a plan: its GPUs, whole nodes, stages, the slowest
    node's NIC rate, step time, and its pools' GPU failures and node preemptions."""
    return {"num_gpus": est.num_gpus, "nodes": int(plan_nodes(used)), "pp": plan.pp,
            "nic_GBps_per_node": min(p.nic_GBps * p.gpus_per_node for p, _ in used),
            "step_time_s": est.step_time_s,
            "preemptions_per_hour": float(preemptions_per_hour(used)),
            "failures_per_hour": float(gpu_failures_per_hour(rel, used))}


def plan_goodput_model(model: ModelSpec, training: TrainingSpec, cluster: Cluster,
                       plan: ParallelPlan, profile: CalibrationProfile | None = None
                       ) -> GoodputModel:
    """The failure model :func:`evaluate` applies to ``plan`` (``training.reliability``
    required), for drawing goodput against the checkpoint interval."""
    assert training.reliability is not None
    ev = _Evaluation(_context(model, training, cluster, plan, profile))
    est = ev.run()
    return goodput_model(model, training, training.reliability,
                         **_goodput_plan(training.reliability, est, plan,
                                         ev.gpus_by_pool()))


def pipeline_simulation(req: EstimateRequest) -> SimResult:
    """The simulated pipeline schedule of ``req``'s plan, with the stage times, send/recv
    times and micro-batches that :func:`estimate` computes and simulates (the same call
    chain; nothing after the simulation). What the timeline SVG draws."""
    ctx = _context(req.model, req.training, req.cluster, req.plan, req.calibration)
    return _Evaluation(ctx).step().sim


def scaled_evaluation(req: EstimateRequest, scale: StepScale | None = None) -> _Evaluation:
    """The evaluation of ``req`` with what-if multipliers (:class:`StepScale`): its
    ``step()`` is the estimate's step with the scenario's compute and link slowdowns, its
    ``all_ranks`` / ``rank_nodes`` the placement the scenario refers to."""
    ctx = _context(req.model, req.training, req.cluster, req.plan, req.calibration)
    return _Evaluation(ctx, scale=scale)


def _context(model: ModelSpec, training: TrainingSpec, cluster: Cluster, plan: ParallelPlan,
             profile: CalibrationProfile | None) -> _Ctx:
    """Checked inputs of one evaluation; ``pool``/``dev``/``shard`` are those of the first
    stage (of the plan's one pool when it has no ``stages``)."""
    plan, notes = lenient_plan(plan)
    notes += list(model.notes)  # what a Hugging Face import left out (costmodel/specs/hf.py)
    pool = check_plan(model, training, cluster, plan)
    prof = profile or default_profile()
    dev = Device.from_pool(pool, training.precision, prof)
    pools = stage_pools(cluster, plan) if plan.stages is not None else None
    ex = execution(training, plan.attention, pool.gpu_type)
    if plan.torch_compile is not None:  # null is the stack's default, always valid
        why = ex.stack.compile_problem(
            plan.torch_compile, ex.overlaps(False, False, plan.tp_comm_overlap, plan.pp)[2],
            plan.tp)
        if why is not None:
            raise SpecError(FieldProblem("plan.torch_compile", why))
    tp_note = ex.stack.tp_overlap_note(plan.tp_comm_overlap, plan.tp, plan.sequence_parallel)
    if tp_note is not None:
        notes.append(tp_note)
    for p in pools or []:
        if p.gpu != pool.gpu:
            execution(training, plan.attention, p.gpu_type)  # refuses a kernel a pool lacks
    notes += list(dev.warnings)
    head_dim = (model.q_width + model.v_width) / (2 * model.num_attention_heads)
    measured_attention = dev.measured and bool(prof.measurements.attention)
    if ex.kernel != "unfused" and not measured_attention and dev.attention_fractions is None:
        rates = attention_rates(ex.kernel, pool.gpu_type, head_dim,
                                training.seq_len / plan.cp)
        if rates.warning:
            notes.append(rates.warning)
    shard = plan_shard(plan, training, pool)
    return _Ctx(model, training, cluster, plan, pool, dev, prof, shard,
                num_microbatches(training, plan), pools,
                stack=ex.describe(bool(np.all(shard.compiled))), notes=notes)


@dataclass
class _Step:
    step: float
    makespan: float
    sim: SimResult
    tf: np.ndarray
    ti: np.ndarray
    tw: np.ndarray
    extra: dict[str, np.ndarray]
    p2p: np.ndarray
    dp_total: np.ndarray
    dp_exposed: np.ndarray
    opt: np.ndarray
    tied: float
    crit: int
    pair: np.ndarray
    """Per rank: the all-reduce between the two replicas' copies of its stages (Chimera,
    BitPipe; zeros otherwise)."""


def step_time(model: ModelSpec, training: TrainingSpec, cluster: Cluster, plan: ParallelPlan,
              profile: CalibrationProfile | None = None,
              memo: dict[tuple[object, ...], Any] | None = None) -> float:
    """The estimate's step time alone (same computation, no memory report or result object):
    what a search needs for the many plans it only ranks.

    ``memo`` (optional) caches per-block costs across calls; share one only between calls with
    the same model, training spec, cluster and profile (one search request)."""
    return _Evaluation(_context(model, training, cluster, plan, profile), memo).step().step


@dataclass
class _PoolCosts:
    """Device, shard and per-block costs of one (pool, tp) pair (a heterogeneous pipeline has
    several)."""

    pool: GPUPool
    dev: Device
    shard: Shard
    dense: BlockCost | None
    moe: BlockCost | None
    edge: EdgeCost
    tp: int
    kept: _PoolCosts | None = None
    """With partial recompute (``plan.recompute_num_layers``): the costs of the layers that
    keep their activations (recompute 'none'); None otherwise."""


@dataclass
class StepScale:
    """Multipliers a what-if scenario (:mod:`costmodel.what_if`) puts on one evaluation's step.

    ``compute``: per pipeline rank, on the compute time of every stage it runs and on its
    optimizer step (the slowest GPU of the rank's tp·cp·dp group sets it: the group's
    collectives wait for it). ``p2p``: per global stage boundary, on the send/recv time.
    ``dp``: per pipeline rank, on its data-parallel communication. None of them = 1."""

    compute: np.ndarray | None = None
    p2p: np.ndarray | None = None
    dp: np.ndarray | None = None


class _Evaluation:
    def __init__(self, ctx: _Ctx, memo: dict[tuple[object, ...], Any] | None = None,
                 scale: StepScale | None = None) -> None:
        self.c = ctx
        self.scale = scale
        """What-if multipliers (None: the plan as estimated)."""
        # per-(pool, tp, shard) block costs; a caller may share the dict across evaluations
        # of one request (see step_time)
        self._pools: dict[tuple[object, ...], Any] = {} if memo is None else memo
        first = self._pool_costs(ctx.pool, ctx.plan.tp)
        # the first stage's costs (the plan's one pool's costs when it has no stages)
        self.dense: BlockCost | None = first.dense
        self.moe: BlockCost | None = first.moe
        self.edge: EdgeCost = first.edge
        model = ctx.model
        self.layers = stage_layers(model, ctx.plan)
        self.tps: list[int] = ctx.plan.stage_tps
        """Tensor-parallel degree of every global stage."""
        self.uniform_tp = all(t == ctx.plan.tp for t in self.tps)
        """Whether every stage has the plan's tp (no ``plan.stages.N.tp`` differs)."""
        self.stage_pc: list[_PoolCosts] = (
            [self._pool_costs(p, t) for p, t in zip(ctx.stage_pools, self.tps, strict=True)]
            if ctx.stage_pools is not None else [first] * len(self.layers))
        starts = list(itertools.accumulate(self.layers, initial=0))
        # MoE layers before each layer index: a stage's count is a difference of two
        moe_before = list(itertools.accumulate((int(x) for x in model.moe_layer_mask),
                                               initial=0))
        self.n_moe = [moe_before[starts[j + 1]] - moe_before[starts[j]]
                      for j in range(len(self.layers))]
        self.n_dense = [n - k for n, k in zip(self.layers, self.n_moe, strict=True)]
        # partial recompute: the first recomputed_layers of each stage (Megatron's 'block'
        # method recomputes the first N layers of each chunk) take the plan's recompute costs,
        # the rest the costs of recompute 'none' (_PoolCosts.kept)
        rc_n = [ctx.plan.recomputed_layers(n) if ctx.plan.recompute_num_layers is not None
                else n for n in self.layers]
        self.rc_moe = [moe_before[starts[j] + rc_n[j]] - moe_before[starts[j]]
                       for j in range(len(self.layers))]
        """MoE layers of each stage costed with the plan's recompute (all of them unless
        ``plan.recompute_num_layers`` leaves some of the stage's layers unrecomputed)."""
        self.rc_dense = [k - e for k, e in zip(rc_n, self.rc_moe, strict=True)]
        """Dense layers of each stage costed with the plan's recompute (see ``rc_moe``)."""
        sched = ctx.plan.schedule
        self.n_rep = 1 if sched == "custom" else replicas(sched)
        """Model replicas in the pipeline group: 2 for Chimera and BitPipe, else 1."""
        self.all_ranks = plan_stage_ranks(ctx.plan)
        """Rank of every global stage (``n_rep`` copies of the model stages, replica-major)."""
        n_model = len(self.layers)
        self.ranks = self.all_ranks[:n_model]
        """Rank of every model stage in the first replica (which covers every rank)."""
        self.rank_stages: list[list[int]] = [[] for _ in range(ctx.plan.pp)]
        """Model stages whose copies each rank holds (two copies' stages with two replicas)."""
        for g, r in enumerate(self.all_ranks):
            self.rank_stages[r].append(g % n_model)
        self.warnings: list[str] = list(ctx.notes)
        self._params_cache: dict[int, tuple[float, float]] = {}
        self._values: dict[tuple[int, str], float] = {}  # see _value
        # (dense, MoE shared, routed) parameters of one block: the same for every stage
        self._block_split = ctx.model.block_param_split()
        self._act_cache: dict[tuple[int, bool], float] = {}

    def _pool_costs(self, pool: GPUPool, tp: int, recompute: str | None = None) -> _PoolCosts:
        """Device, shard and block costs of ``pool`` at tensor-parallel degree ``tp`` (and
        ``recompute``, null = the plan's), built once per (pool name, tp, recompute); with
        partial recompute the costs of the unrecomputed layers ride along as ``kept``."""
        plan = self.c.plan
        rc = plan.recompute if recompute is None else recompute
        partial = recompute is None and plan.recompute_num_layers is not None
        key = (pool.name, tp, plan.micro_batch_size, plan.cp, plan.ep, plan.sequence_parallel,
               rc, plan.attention, plan.tp_comm_overlap, partial)
        if key not in self._pools:
            c = self.c
            dev = (c.dev if pool.name == c.pool.name
                   else Device.from_pool(pool, c.training.precision, c.profile))
            s = (c.shard if pool.name == c.pool.name and tp == c.plan.tp and rc == plan.recompute
                 else plan_shard(c.plan, c.training, pool, tp, rc))
            model = c.model
            self._pools[key] = _PoolCosts(
                pool, dev, s,
                block_cost(model, s, dev, moe=False) if model.num_dense_layers else None,
                block_cost(model, s, dev, moe=True) if model.is_moe else None,
                edge_cost(model, s, dev), tp,
                self._pool_costs(pool, tp, "none") if partial else None)
        return self._pools[key]

    def _rank_pc(self, rank: int) -> _PoolCosts:
        """Costs of pipeline rank ``rank``'s pool (a heterogeneous pipeline has one stage per
        rank)."""
        return self.stage_pc[self.ranks.index(rank)]

    @property
    def hetero(self) -> bool:
        """Whether the stages run on more than one pool."""
        return len({pc.pool.name for pc in self.stage_pc}) > 1

    # ------------------------------------------------------------------ per stage
    def _block_counts(self, j: int) -> list[tuple[BlockCost | None, int]]:
        """(block costs, layers of stage j they cost): the plan's recompute for its recomputed
        layers, recompute 'none' for the rest of a partial recompute's stage."""
        pc = self.stage_pc[j]
        out = [(pc.dense, self.rc_dense[j]), (pc.moe, self.rc_moe[j])]
        if pc.kept is not None:
            out += [(pc.kept.dense, self.n_dense[j] - self.rc_dense[j]),
                    (pc.kept.moe, self.n_moe[j] - self.rc_moe[j])]
        return out

    def _sum(self, attr: str, j: int) -> float:
        t = 0.0
        for cost, count in self._block_counts(j):
            if cost is not None and count:
                t += count * self._value(cost, attr)
        return t

    def _value(self, cost: BlockCost, attr: str) -> float:
        """One block's ``attr`` seconds as a float, once per evaluation (the stages of a
        pipeline share a few block costs; pp 32 sums them ~100 times a step)."""
        key = (id(cost), attr)
        v = self._values.get(key)
        if v is None:
            value = getattr(cost, attr)
            if value is None:  # no measured split backward: the unsplit figures
                value = getattr(cost, attr.removesuffix("_split"))
            v = self._values[key] = _f(value)
        return v

    def _stage_times(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        c = self.c
        n = len(self.layers)
        last = n - 1
        e0, e = self.stage_pc[0].edge, self.stage_pc[last].edge
        tf = np.array([self._sum("fwd", j) for j in range(n)])
        split = splits_backward(c.plan)
        ti = np.array([self._sum("bwd_input_split" if split else "bwd_input", j)
                       for j in range(n)])
        tw = np.array([self._sum("bwd_weight_split" if split else "bwd_weight", j)
                       for j in range(n)])
        extra = {k: np.zeros(n) for k in ("zero3_f", "zero3_b", "zero3_exposed", "offload_f",
                                           "offload_b", "vocab")}
        if c.plan.vocab_placement == "split" and c.plan.pp > 1:
            # Vocabulary parallelism (Yeung et al. 2024): every pipeline rank computes V/pp of the
            # logits; the last hidden state is broadcast to, and softmax statistics reduced over,
            # the pipeline group.
            share = 1.0 / c.plan.pp
            per_rank_last = {self.ranks[j]: j for j in range(n)}
            for j in per_rank_last.values():
                pc = self.stage_pc[j]
                ej = pc.edge
                bcast = collective_time("all_gather", c.plan.pp,
                                        c.shard.tokens * self._h() * pc.dev.elem_bytes, 1.0, pc.dev)
                tf[j] += share * _f(ej.head_fwd) + _f(bcast)
                ti[j] += share * _f(ej.head_bwd_input) + _f(bcast)
                tw[j] += share * _f(ej.head_bwd_weight)
                extra["vocab"][j] = 2 * _f(bcast)
            tf[0] += _f(e0.embed_fwd)
            ti[0] += _f(e0.embed_bwd)
        else:
            tf[0] += _f(e0.embed_fwd)
            ti[0] += _f(e0.embed_bwd)
            tf[last] += _f(e.head_fwd)
            ti[last] += _f(e.head_bwd_input)
            tw[last] += _f(e.head_bwd_weight)
        if c.plan.zero_stage >= 3 and c.plan.dp * c.plan.cp > 1:
            self._zero3_exposure(tf, ti, extra)
        if c.plan.activation_offload > 0 or c.plan.activation_offload_layers:
            self._offload_exposure(tf, ti, extra)
        return tf, ti, tw, extra

    def _h(self) -> float:
        return float(self.c.model.hidden_size)

    # ------------------------------------------------------------------ parameters per stage
    def _stage_params(self, j: int) -> tuple[float, float]:
        """(dense, routed-expert) parameters of global stage j on one rank."""
        if j not in self._params_cache:
            self._params_cache[j] = self._compute_stage_params(j)
        return self._params_cache[j]

    def _compute_stage_params(self, j: int) -> tuple[float, float]:
        model, plan = self.c.model, self.c.plan
        p_dense, p_moe_shared, p_routed = self._block_split
        dense = float(self.n_dense[j] * p_dense + self.n_moe[j] * p_moe_shared)
        expert = float(self.n_moe[j] * p_routed)
        n = len(self.layers)
        emb = model.embedding_params()
        out = model.output_params()
        if plan.vocab_placement == "split" and plan.pp > 1:
            dense += (emb + out) / n  # each stage holds a 1/n slice of both vocabulary layers
        else:
            if j == 0:
                dense += emb
            if j == n - 1:
                dense += out
                if model.tie_word_embeddings and plan.pp > 1:
                    dense += model.vocab_size * model.hidden_size  # Megatron keeps a copy
        tp = self.tps[j]
        return dense / tp, expert / (tp * plan.ep)

    def _zero3_exposure(self, tf: np.ndarray, ti: np.ndarray, extra: dict[str, np.ndarray]) -> None:
        """Fold FSDP / ZeRO-3 per-micro-batch collectives into the stage times (see
        :func:`costmodel.data_parallel.zero3_per_microbatch`)."""
        c = self.c
        n = len(self.layers)
        params = np.array([sum(self._stage_params(j)) for j in range(n)])
        layers = np.array(self.layers, dtype=float)
        # sharding units: the blocks, plus the vocabulary layers where the stage holds them
        split = c.plan.vocab_placement == "split" and c.plan.pp > 1
        units = layers + np.array([1.0 if split or j in (0, n - 1) else 0.0 for j in range(n)])
        ef, eb = np.zeros(n), np.zeros(n)
        for idx, pc in self._groups(list(range(n)), self.stage_pc):
            ef[idx], eb[idx], extra["zero3_f"][idx], extra["zero3_b"][idx] = zero3_per_microbatch(
                params[idx], layers[idx], np.asarray(float(c.plan.dp * c.plan.cp)),
                np.asarray(float(pc.tp)), tf[idx], ti[idx], c.training.grad_dtype, pc.dev,
                units[idx])
        tf += ef
        ti += eb
        extra["zero3_exposed"] = ef + eb

    @staticmethod
    def _groups(items: list[int], pcs: list[_PoolCosts]) -> list[tuple[np.ndarray, _PoolCosts]]:
        """``items`` (stage or rank indices) grouped by (pool, tp), as index arrays, in order of
        first appearance: the vectorized per-device formulas run once per group."""
        out: dict[tuple[str, int], tuple[list[int], _PoolCosts]] = {}
        for i, pc in zip(items, pcs, strict=True):
            out.setdefault((pc.pool.name, pc.tp), ([], pc))[0].append(i)
        return [(np.array(ix, dtype=int), pc) for ix, pc in out.values()]

    def _offload_exposure(self, tf: np.ndarray, ti: np.ndarray,
                          extra: dict[str, np.ndarray]) -> None:
        """The offloaded part of a micro-batch's stash goes to host memory during its forward and
        returns before its backward over the GPU's host link (PCIe, or NVLink-C2C on Grace
        superchips), overlapped with the stage's compute; the excess is exposed. The part is
        PipeOffload's fraction (Wan et al. 2025, ``plan.activation_offload``) plus the layers
        of a layer-wise offload (``plan.activation_offload_layers``, Megatron-Core's CPU
        offloading: each layer's activations leave while the next layer computes)."""
        for j in range(len(self.layers)):
            link = self.stage_pc[j].pool.gpu_type.host_GBps_per_direction * 1e9
            stash = self._stash_bytes(j) * self._offloaded_share(j)
            t = stash / link
            ef = max(0.0, t - tf[j])
            eb = max(0.0, t - ti[j])
            tf[j] += ef
            ti[j] += eb
            extra["offload_f"][j] = ef
            extra["offload_b"][j] = eb

    def _offloaded_share(self, j: int) -> float:
        """Share of stage j's stash of one micro-batch that travels to host memory."""
        plan = self.c.plan
        n = plan.activation_offload_layers or 0
        return min(1.0, plan.activation_offload + min(n, self.layers[j]) / max(1, self.layers[j]))

    def _block_activation(self, s: Shard, moe: bool) -> float:
        """:func:`block_activation_bytes` of one shard, once per (shard, block kind): stages on
        one (pool, tp) share their shard."""
        key = (id(s), moe)
        value = self._act_cache.get(key)
        if value is None:
            value = self._act_cache[key] = _f(block_activation_bytes(self.c.model, s, moe=moe))
        return value

    def _shard_counts(self, j: int) -> list[tuple[_PoolCosts, tuple[int, int]]]:
        """(costs, (dense, MoE) layers of stage j) for the plan's recompute and, with partial
        recompute, for the stage's unrecomputed layers (``_PoolCosts.kept``)."""
        pc = self.stage_pc[j]
        out = [(pc, (self.rc_dense[j], self.rc_moe[j]))]
        if pc.kept is not None:
            out.append((pc.kept, (self.n_dense[j] - self.rc_dense[j],
                                  self.n_moe[j] - self.rc_moe[j])))
        return out

    def _stash_bytes(self, j: int) -> float:
        """Activation bytes one micro-batch leaves stashed on global stage j: with partial
        recompute the recomputed layers' inputs plus the other layers' full stash (the module
        docstring of :mod:`costmodel.memory`, per layer)."""
        model = self.c.model
        total = 0.0
        for pc, (dense, moe) in self._shard_counts(j):
            if dense:
                total += dense * self._block_activation(pc.shard, moe=False)
            if moe:
                total += moe * self._block_activation(pc.shard, moe=True)
        if j == 0:
            total += _f(embedding_activation_bytes(model, self.stage_pc[j].shard))
        return total

    # ------------------------------------------------------------------ p2p per boundary
    def rank_nodes(self, rank: int) -> list[int]:
        """Public name of :meth:`_rank_nodes` (what-if scenarios place ranks on nodes)."""
        return self._rank_nodes(rank)

    def rank_pool(self, rank: int) -> GPUPool:
        """The pool pipeline rank ``rank`` runs on."""
        return self._rank_pc(rank).pool

    def rank_width(self, rank: int) -> int:
        """GPUs of pipeline rank ``rank``: its tp·cp·dp."""
        return self._rank_pc(rank).tp * self.c.plan.cp * self.c.plan.dp

    def gpus_by_pool(self) -> list[tuple[GPUPool, int]]:
        """The plan's GPUs on each pool it uses (one pool unless ``plan.stages``)."""
        plan = self.c.plan
        if plan.stages is None:
            return [(self.c.pool, plan.num_gpus)]
        out: dict[str, tuple[GPUPool, int]] = {}
        for r in range(plan.pp):
            pool = self.rank_pool(r)
            n = out.get(pool.name, (pool, 0))[1]
            out[pool.name] = (pool, n + self.rank_width(r))
        return list(out.values())

    def _rank_nodes(self, rank: int) -> list[int]:
        """Nodes (pool indices) hosting pipeline rank ``rank``, in GPU order (plan.node_order,
        or index order; Megatron's rank order puts pp outermost)."""
        c = self.c
        gpn = c.pool.gpus_per_node
        stride = c.plan.tp * c.plan.cp * c.plan.dp
        order = c.plan.node_order
        if stride >= gpn:
            k = -(-stride // gpn)  # the nodes a rank spans
            lo, hi = rank * k, rank * k + k
        else:
            lo = rank * stride // gpn
            hi = lo + 1
        # (ranges and slices: a search's 4,096-GPU plans span 64 nodes per rank)
        if order is None:
            return list(range(lo, hi))
        if hi <= len(order):
            return list(order[lo:hi])
        return [order[i] if i < len(order) else i for i in range(lo, hi)]

    def _p2p(self) -> np.ndarray:
        """Send/recv time per stage boundary: NVLink inside a node, else the NIC or, where the
        cluster gives a measured node-to-node bandwidth matrix, the slowest measured link
        between the two stages' nodes (the slower direction of each pair), capped by the NIC.
        Nodes come from ``plan.node_order`` (or index order), pipeline outermost. With two
        model replicas (Chimera, BitPipe) one entry per boundary of the global stages (replica
        0's, then replica 1's; the entry between the replicas is unused and 0)."""
        c = self.c
        n = len(self.all_ranks)
        per_replica = len(self.layers)
        # Megatron scatter/gather: T·h/tp elements per GPU pair
        nbytes = c.shard.tokens * self._h() * c.dev.elem_bytes / c.plan.tp
        if c.stage_pools is not None:
            return self._p2p_stages(nbytes)
        matrix = c.cluster.node_bandwidth_Gbps
        offset = 0
        for p in c.cluster.pools:
            if p.name == c.pool.name:
                break
            offset += p.nodes
        gpn = c.pool.gpus_per_node
        out = np.zeros(max(n - 1, 0))
        gather = 0.0
        if not c.plan.sequence_parallel and c.plan.tp > 1:
            gather = _f(collective_time("all_gather", c.plan.tp, nbytes * c.plan.tp,
                                        min(c.plan.tp, gpn), c.dev))
        memo: dict[tuple[bool, float | None], float] = {}
        nodes: dict[int, list[int]] = {}  # per pipeline rank: its chunks' boundaries share it
        for j in range(n - 1):
            ra, rb = self.all_ranks[j], self.all_ranks[j + 1]
            if ra == rb or (j + 1) % per_replica == 0:
                continue
            for r in (ra, rb):
                if r not in nodes:
                    nodes[r] = self._rank_nodes(r)
            na, nb = nodes[ra], nodes[rb]
            same = na == nb
            nic = None
            if matrix is not None and not same:
                links = [min(matrix[offset + a][offset + b], matrix[offset + b][offset + a])
                         for a, b in zip(na, nb, strict=True)]
                measured = min(links) / 8 * 1e9
                nic = min(c.dev.nic, measured) if measured > 0 else c.dev.nic
            key = (same, nic)
            if key not in memo:
                memo[key] = _f(collective_time("send_recv", 2.0, nbytes, 2.0 if same else 1.0,
                                               c.dev, nic=nic)) + gather
            out[j] = memo[key]
        return out

    def _p2p_stages(self, nbytes: Any) -> np.ndarray:
        """Send/recv per boundary of a pipeline given by ``plan.stages`` (one stage per rank).
        Inside one pool as :meth:`_p2p` without a bandwidth matrix: the stages' GPUs are laid
        out in pipeline order within their pool, stage s taking tp_s·cp·dp GPUs (NVLink when
        both stages sit on one node, else the pool's NIC). Across pools: the cluster's
        ``inter_pool_Gbps`` per GPU, or when null the slower of the two pools' NIC rates.

        Between stages of equal tp: ``nbytes`` = T·h·2/tp per GPU pair (Megatron's
        scatter/gather), plus the sending stage's tp all-gather without sequence parallelism.
        Between stages of different tp (tp_a sending, tp_b receiving) every receiving rank
        needs the full T·h activation gathered from the sender's tp_a shards; modelled, as the
        resharding between stages of different tensor-parallel degree in Metis (Um et al. 2024)
        and AMP (Li et al. 2022), by a send of T·h·2/min(tp_a, tp_b) bytes per GPU pair, and
        when tp_b < tp_a an intra-node all-gather of the full T·h·2 bytes over the receiver's
        tp_b ranks on the receiver's GPUs; when tp_b > tp_a nothing more. An approximation: the
        exact resharding traffic depends on the rank mapping and on sequence parallelism."""
        c = self.c
        n = len(self.layers)
        full = c.shard.tokens * self._h() * c.dev.elem_bytes  # T·h·2 B of one micro-batch
        strides = [t * c.plan.cp * c.plan.dp for t in self.tps]
        offset = []  # first GPU of each stage among the GPUs of its pool
        seen: dict[str, int] = {}
        for pc, w in zip(self.stage_pc, strides, strict=True):
            offset.append(seen.get(pc.pool.name, 0))
            seen[pc.pool.name] = offset[-1] + w
        out = np.zeros(max(n - 1, 0))
        for j in range(n - 1):
            a, b = self.stage_pc[j], self.stage_pc[j + 1]
            ta, tb = a.tp, b.tp
            gather = 0.0
            if ta == tb:
                nb = nbytes if ta == c.plan.tp else full / ta
                if not c.plan.sequence_parallel and ta > 1:
                    gather = _f(collective_time("all_gather", ta, nb * ta,
                                                min(ta, a.pool.gpus_per_node), a.dev))
            else:
                nb = full / min(ta, tb)
                if tb < ta and tb > 1:
                    gather = _f(collective_time("all_gather", tb, full,
                                                min(tb, b.pool.gpus_per_node), b.dev))
            nic: float | None = None
            if a.pool.name == b.pool.name:
                gpn = a.pool.gpus_per_node
                same = (strides[j] < gpn and strides[j + 1] < gpn
                        and offset[j] // gpn == offset[j + 1] // gpn)
            else:
                same = False
                nic = self._inter_pool_nic(a.pool, b.pool)
            out[j] = _f(collective_time("send_recv", 2.0, nb, 2.0 if same else 1.0, a.dev,
                                        nic=nic)) + gather
        return out

    def _inter_pool_nic(self, a: GPUPool, b: GPUPool) -> float:
        """Per-GPU B/s between two pools: the cluster's ``inter_pool_Gbps``, or when null the
        slower of the two pools' NIC rates."""
        gbps = self.c.cluster.inter_pool_Gbps
        return gbps / 8 * 1e9 if gbps is not None else min(a.nic_GBps, b.nic_GBps) * 1e9

    # ------------------------------------------------------------------ data parallel
    def _rank_params(self, rank: int) -> tuple[float, float]:
        """(dense, expert) parameters one GPU of pipeline rank ``rank`` holds: all its stage
        copies (both replicas' with Chimera and BitPipe)."""
        pd = pe = 0.0
        for j in self.rank_stages[rank]:
            a, b = self._stage_params(j)
            pd, pe = pd + a, pe + b
        return pd, pe

    def _dp_and_optimizer(self, window_f: np.ndarray, window_b: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(DP comm total, DP comm exposed, optimizer step) seconds of every pipeline rank,
        each rank on its own pool's device and network."""
        c = self.c
        plan = c.plan
        params = np.array([self._rank_params(r) for r in range(plan.pp)])
        a = {k: np.asarray(float(v)) for k, v in (
            ("zero", plan.zero_stage), ("dp", plan.dp), ("cp", plan.cp), ("ep", plan.ep))}
        shape = (plan.pp,)
        out_t, out_e, out_o = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        ranks = list(range(plan.pp))
        for idx, pc in self._groups(ranks, [self._rank_pc(r) for r in ranks]):
            grad_ov, gather_ov, _ = execution(c.training, plan.attention, pc.pool.gpu_type
                                              ).overlaps(plan.overlap_grad_reduce,
                                                         plan.overlap_param_gather, False,
                                                         plan.pp)
            total, exposed = dp_comm(
                params[idx, 0], params[idx, 1], a["zero"], a["dp"], a["cp"], a["ep"],
                np.asarray(float(pc.tp)),  # the rank's own tp: DP groups stride tp_s
                window_f[idx], window_b[idx], grad_ov, gather_ov, c.training.grad_dtype,
                pc.dev)
            opt = optimizer_time(params[idx, 0], params[idx, 1], a["zero"], a["dp"], a["cp"],
                                 a["ep"], c.training.optimizer, pc.dev)
            sub = (len(idx),)
            out_t[idx] = np.broadcast_to(total, sub)
            out_e[idx] = np.broadcast_to(exposed, sub)
            out_o[idx] = np.broadcast_to(opt, sub)
        return out_t, out_e, out_o

    # ------------------------------------------------------------------ run
    def step(self) -> _Step:
        """The step time and the intermediate values the report needs."""
        c = self.c
        plan, model, training = c.plan, c.model, c.training
        tf, ti, tw, extra = self._stage_times()
        p2p = self._p2p()
        sched = plan.schedule
        sf, si, sw, sp = tf, ti, tw, p2p  # what the simulator runs
        gscale = np.ones(len(self.all_ranks))  # per global stage compute multiplier
        sc = self.scale
        if sc is not None:
            if sc.compute is not None:
                gscale = np.asarray(sc.compute, dtype=float)[self.all_ranks]
                reps = len(self.all_ranks) // len(tf)
                sf, si, sw = (np.tile(a, reps) * gscale for a in (tf, ti, tw))
            if sc.p2p is not None and len(p2p):
                sp = p2p * np.asarray(sc.p2p, dtype=float)
        try:
            if sched == "custom":
                # the plan's own order (checked by check_plan), simulated like a named one
                assert plan.custom_schedule is not None
                sim = simulate(encoded_custom(as_rows(plan.custom_schedule)), None, sf, si, sw,
                               sp if len(sp) else 0.0)
            else:
                sim = simulate_named(sched, plan.pp, c.m, plan.virtual_stages, sf, si, sw,
                                     sp if len(sp) else 0.0)
        except ScheduleError as exc:
            fields = CUSTOM_FIELDS if sched == "custom" else SCHEDULE_FIELDS
            raise SpecError([FieldProblem(fields.get(p.field, f"plan.{p.field}"), p.rule)
                             for p in exc.problems]) from None
        makespan = sim.step_time
        pp = plan.pp
        per_rank_f = np.zeros(pp)
        per_rank_b = np.zeros(pp)
        for r, mine in enumerate(self.rank_stages):
            for j in mine:
                per_rank_f[r] += tf[j]
                per_rank_b[r] += ti[j] + tw[j]
        if sc is not None and sc.compute is not None:
            rscale = np.asarray(sc.compute, dtype=float)
            per_rank_f, per_rank_b = per_rank_f * rscale, per_rank_b * rscale
        dp_total, dp_exposed, opt = self._dp_and_optimizer(per_rank_f, per_rank_b)
        if sc is not None:
            if sc.compute is not None:
                opt = opt * np.asarray(sc.compute, dtype=float)
            if sc.dp is not None:
                dscale = np.asarray(sc.dp, dtype=float)
                # the exposed part grows by the whole slowdown of the communication
                dp_exposed = np.maximum(0.0, dp_exposed + dp_total * (dscale - 1.0))
                dp_total = dp_total * dscale
        pair = self._replica_pair_allreduce()
        tied = 0.0
        if model.tie_word_embeddings and pp > 1 and plan.vocab_placement == "end_stages":
            first, last = self.stage_pc[0].pool, self.stage_pc[-1].pool
            nic = None if first.name == last.name else self._inter_pool_nic(first, last)
            # the two end stages' shards of the tied matrix (the smaller tp's, the larger shard,
            # when their tp differ)
            tp_tied = min(self.tps[0], self.tps[-1])
            tied = _f(collective_time("all_reduce", 2.0, model.vocab_size * self._h() / tp_tied
                                      * grad_comm_bytes(training.grad_dtype), 1.0, c.dev,
                                      nic=nic))
        tail = dp_exposed + opt + pair
        crit = int(np.argmax(tail))
        step = makespan + float(tail[crit]) + tied
        return _Step(step, makespan, sim, tf, ti, tw, extra, p2p, dp_total, dp_exposed, opt,
                     tied, crit, pair)

    def _replica_pair_allreduce(self) -> np.ndarray:
        """Seconds per rank of the all-reduce between the two replicas' copies of its stages
        (Chimera §3.2): rank ``r``'s copies pair with those on rank ``pp−1−r`` (true of
        Chimera's and BitPipe's placements), one all-reduce of the rank's gradient bytes
        (:func:`~costmodel.data_parallel.grad_comm_bytes` per parameter held) over the two
        GPUs of each pair, inside a node when both ranks are on one, else over the NIC."""
        c = self.c
        pp = c.plan.pp
        out = np.zeros(pp)
        if self.n_rep == 1:
            return out
        gb = grad_comm_bytes(c.training.grad_dtype)
        for r in range(pp):
            partner = pp - 1 - r
            same = self._rank_nodes(r) == self._rank_nodes(partner)
            nbytes = sum(self._rank_params(r)) * gb
            out[r] = _f(collective_time("all_reduce", 2.0, nbytes, 2.0 if same else 1.0,
                                        self._rank_pc(r).dev))
        return out

    def run(self) -> Estimate:
        c = self.c
        plan, model, training = c.plan, c.model, c.training
        st = self.step()
        step, makespan, sim, crit, tied = st.step, st.makespan, st.sim, st.crit, st.tied
        tf, ti, tw, extra, p2p = st.tf, st.ti, st.tw, st.extra, st.p2p
        dp_total, dp_exposed, opt = st.dp_total, st.dp_exposed, st.opt
        sched = plan.schedule

        # ---- throughput and MFU
        n_gpus = plan.num_gpus
        tokens = training.tokens_per_step
        mflops = model_flops_per_token(model, training.seq_len) * tokens
        peak = c.dev.peak
        if self.hetero and self.uniform_tp:
            # GPU-count-weighted mean peak of the stages' GPUs (every stage has tp·cp·dp)
            peak = sum(pc.dev.peak for pc in self.stage_pc) / len(self.stage_pc)
        elif self.hetero:
            # stage s has tp_s·cp·dp GPUs: weight its peak by tp_s
            peak = sum(pc.dev.peak * pc.tp for pc in self.stage_pc) / sum(self.tps)
        mfu = mflops / (step * n_gpus * peak)
        # per-rank recompute FLOPs of each stage (its recomputed layers only) times its own
        # tp_s ranks
        rc_total = sum(self._sum("flops_recompute", j) * self.tps[j]
                       for j in range(len(self.layers))) \
            * plan.cp * training.global_batch_size / plan.micro_batch_size
        hfu = (mflops + rc_total) / (step * n_gpus * peak)

        # ---- breakdown on the busiest rank
        busy = sim.per_rank_busy
        br = int(np.argmax(busy))
        mine = self.rank_stages[br]
        m = c.m
        m_copy = m / self.n_rep  # micro-batches through each stage copy

        def per_mb(attr: str) -> float:
            return sum(self._sum(attr, j) for j in mine)

        zero3_exposed = float(sum(extra["zero3_exposed"][j] for j in mine))
        z3_total = float(sum(extra["zero3_b"][j] + extra["zero3_f"][j] for j in mine))
        offload = float(sum(extra["offload_f"][j] + extra["offload_b"][j] for j in mine))

        def comm(attr: str) -> float:
            tot = 0.0
            for j in mine:
                pc = self.stage_pc[j]
                if pc.dense is not None:
                    tot += self.n_dense[j] * _f(getattr(pc.dense, attr))
                if pc.moe is not None:
                    tot += self.n_moe[j] * _f(getattr(pc.moe, attr))
            return tot * m_copy

        pp_comm = float(sum(extra["vocab"][j] for j in mine))  # vocabulary-split broadcast
        for g in range(len(p2p)):
            if self.all_ranks[g] == br or self.all_ranks[g + 1] == br:
                pp_comm += p2p[g]
        pair = float(st.pair[crit])
        split = "_split" if splits_backward(plan) else ""
        breakdown = Breakdown(
            forward_s=per_mb("fwd") * m_copy,
            backward_input_s=(per_mb("bwd_input" + split) - per_mb("recompute")) * m_copy,
            backward_weight_s=per_mb("bwd_weight" + split) * m_copy,
            recompute_s=per_mb("recompute") * m_copy,
            tp_comm_s=comm("tp_comm"), cp_comm_s=comm("cp_comm"), ep_comm_s=comm("ep_comm"),
            pp_comm_s=pp_comm * m_copy,
            dp_comm_s=float(dp_total[crit]) + z3_total * m_copy + tied + pair,
            dp_comm_exposed_s=float(dp_exposed[crit]) + zero3_exposed * m_copy + tied + pair,
            dp_comm_overlapped_s=max(0.0, float(dp_total[crit] - dp_exposed[crit]))
            + max(0.0, z3_total - zero3_exposed) * m_copy,
            optimizer_s=float(opt[crit]),
            pipeline_bubble_s=max(0.0, makespan - float(busy[br])),
            offload_exposed_s=offload * m_copy,
        )

        # ---- memory per pipeline rank
        memory = self._memory(sim.peak_inflight)
        price = c.pool.price_per_gpu_hour * n_gpus
        gpu = c.pool.gpu
        if self.hetero or not self.uniform_tp:
            # stage s has tp_s·cp·dp GPUs of its pool
            price = sum(pc.pool.price_per_gpu_hour * (pc.tp * plan.cp * plan.dp)
                        for pc in self.stage_pc)
        if self.hetero:
            gpu = "+".join(dict.fromkeys(pc.pool.gpu for pc in self.stage_pc))
        tps = tokens / step
        cost_per_m = price / 3600.0 / tps * 1e6 if tps > 0 else math.inf
        if memory.fit != "fits":
            worst = max(memory.per_stage, key=lambda sm: sm.total_gib - sm.usable_gib)
            what = ("does not fit" if memory.fit == "does_not_fit" else
                    f"is tight (within the model's memory error of -{memory.band[0]:.0%} / "
                    f"+{memory.band[1]:.0%})")
            self.warnings.append(
                f"memory {what}: pipeline rank {worst.rank} needs {worst.total_gib:.1f} GiB of "
                f"{worst.usable_gib:.1f} GiB usable on {self._rank_pc(worst.rank).pool.gpu}")
        return Estimate(
            step_time_s=step, tokens_per_s=tps, tokens_per_s_per_gpu=tps / n_gpus,
            mfu=mfu, hfu=hfu, model_flops_per_step=mflops,
            fits=all(sm.fits for sm in memory.per_stage), memory=memory, breakdown=breakdown,
            pipeline=PipelineReport(
                schedule=sched, num_microbatches=m, virtual_stages=plan.virtual_stages,
                bubble_fraction=sim.bubble_fraction, stage_forward_s=tf.tolist(),
                stage_backward_input_s=ti.tolist(), stage_backward_weight_s=tw.tolist(),
                p2p_s=p2p.tolist(), layers_per_stage=self.layers, makespan_s=makespan),
            cost_per_hour=price, cost_per_million_tokens=cost_per_m, num_gpus=n_gpus,
            gpu=gpu, plan=plan, warnings=self.warnings + self._mfu_warning(mfu),
            stack=c.stack, calibration=c.profile.name,
            cost_model_version=__version__,
        )

    def _mfu_warning(self, mfu: float) -> list[str]:
        """A warning when the estimate's MFU exceeds the best published one for the GPU
        architecture and precision (``costmodel/data/published_mfu.json``)."""
        c = self.c
        best = best_published_mfu(c.pool.gpu_type.arch, c.training.precision)
        if best is None or mfu <= best[0]:
            return []
        return [f"predicted MFU {mfu:.1%} exceeds the best published {best[0]:.0%} for "
                f"{c.pool.gpu_type.arch} {c.training.precision} ({best[1][:120]}): treat the "
                "estimate as optimistic until measured"]

    def _memory(self, inflight: np.ndarray) -> MemoryReport:
        c = self.c
        model, plan = c.model, c.plan
        n = len(self.layers)
        d = plan.dp * plan.cp
        ctx_b = c.profile.eff.memory.cuda_context_gib * GIB
        act_scale = c.dev.elem_bytes / ELEM
        out: list[StageMemory] = []
        for r in range(plan.pp):
            # each rank against its own pool's device, with its own tp
            pc = self._rank_pc(r)
            groups = sum(1 for g in (pc.tp, plan.pp, plan.dp, plan.cp, plan.ep) if g > 1) + 1
            over = _f(overhead_bytes(c.profile, np.asarray(float(groups))))
            s = pc.shard
            cap = pc.dev.memory_bytes
            stack = execution(c.training, plan.attention, pc.pool.gpu_type).stack
            usable = usable_bytes(cap, c.profile, stack)
            mine = self.rank_stages[r]
            # the transient peak of the widest block the rank runs backward: recomputed layers
            # rebuild their activations, the unrecomputed ones of a partial recompute do not
            costed = [pc]
            if pc.kept is not None and any(sum(self._shard_counts(j)[-1][1]) for j in mine):
                costed.append(pc.kept)
            per_block_full = max([0.0] + [
                _f(block_working_bytes(model, cp.shard, moe=moe)) for cp in costed
                for moe, cost in ((False, cp.dense), (True, cp.moe)) if cost is not None])
            pd = sum(self._stage_params(j)[0] for j in mine)
            pe = sum(self._stage_params(j)[1] for j in mine)
            gathered = (_f(zero3_gathered_params(model, plan.zero3_unit, np.asarray(pc.tp)))
                        if plan.zero_stage >= 3 else 0.0)
            rules = stack_state_rules(c.training.precision, c.training.grad_buffer_bytes,
                                      stack, plan.zero_stage, plan.pp)
            st = state_bytes(np.asarray(pd), np.asarray(pe), np.asarray(plan.zero_stage),
                             np.asarray(float(d)), np.asarray(max(1.0, d / plan.ep)),
                             c.training.optimizer, c.training.precision, np.asarray(gathered),
                             rules.held_grad_bytes, rules.stage_unsharded)
            # gradients made in the optimizer step (DeepSpeed fp16 without ZeRO)
            step_grads = rules.step_grad_bytes * (pd + pe)
            chunks = [self._stash_bytes(j) for j in mine]
            per_chunk = sum(chunks) / len(chunks) if chunks else 0.0
            held = float(inflight[r]) if r < len(inflight) else 0.0
            keep = 1.0 - plan.activation_offload
            if plan.activation_offload_layers:
                # layer-wise offload: every micro-batch's offloaded layers are on the host but
                # the one being copied (Transformer Engine double-buffers one layer)
                rank_layers = max(1, sum(self.layers[j] for j in mine))
                away = max(0, min(plan.activation_offload_layers, rank_layers) - 1)
                per_chunk *= 1.0 - away / rank_layers
            acts = per_chunk * (max(0.0, held - 1.0) * keep + min(held, 1.0)) + per_block_full
            logits = 0.0
            if plan.vocab_placement == "split" and plan.pp > 1:
                logits = _f(logits_bytes(model, s)) / plan.pp
            elif (n - 1) in mine:
                logits = _f(logits_bytes(model, s))
            # the activation formulas count bf16 elements; fp32 keeps twice the bytes
            acts *= act_scale
            logits *= act_scale
            weights, grads, optb = _f(st.weights), _f(st.grads), _f(st.optimizer)
            # what the stack keeps beyond the textbook accounting (DeepSpeed's 16-bit gradient
            # buffer), counted with the gradients
            grads += (pd + pe) * stack.memory.extra_bytes_per_param
            # the peak: forward/backward with the activations, or the optimizer step with
            # the gradients it makes
            total = weights + grads + optb + over + max(acts + logits, step_grads)
            verdict, margin = memory_verdict(total, usable)
            out.append(StageMemory(
                rank=r, stages=mine, layers=sum(self.layers[j] for j in mine),
                weights_gib=weights / GIB, grads_gib=grads / GIB, optimizer_gib=optb / GIB,
                activations_gib=acts / GIB, inflight_microbatches=held,
                inflight_gib_per_microbatch=per_chunk * keep / GIB,
                logits_gib=logits / GIB, comm_buffers_gib=(over - ctx_b) / GIB,
                cuda_context_gib=ctx_b / GIB, total_gib=total / GIB, usable_gib=usable / GIB,
                capacity_gib=cap / GIB, fits=verdict != "does_not_fit", fit=verdict,
                margin_gib=margin / GIB,
            ))
        peak = max(sm.total_gib for sm in out)
        # the rank nearest its own capacity (all ranks share one device without plan.stages)
        tight = max(out, key=lambda sm: sm.total_gib / sm.capacity_gib)
        order = ("fits", "tight", "does_not_fit")
        worst = max(out, key=lambda sm: (order.index(sm.fit), -sm.margin_gib))
        band = memory_band()
        return MemoryReport(peak_gib=peak, capacity_gib=tight.capacity_gib,
                            usable_gib=tight.usable_gib,
                            peak_fraction=tight.total_gib / tight.capacity_gib, per_stage=out,
                            fit=worst.fit, margin_gib=min(sm.margin_gib for sm in out),
                            band=(band.under, band.over))
