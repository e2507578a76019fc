"""The estimate request and the consistency rules between its parts.

``model`` accepts the three forms of the contract: ``{"preset": name}``, ``{"hf_config": {...}}``
or explicit fields. Cross-field rules (divisibility of heads and FFN by tp, batch by dp ×
micro-batch, layers per stage, schedule constraints, ...) are checked together and reported all
at once as a :class:`~costmodel.errors.SpecError` naming each field and its rule.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from costmodel.errors import FieldProblem, ProblemCollector, SpecError
from costmodel.pipeline.custom import check_custom, custom_stage_ranks
from costmodel.profile import CalibrationProfile
from costmodel.specs import degrees
from costmodel.specs.cluster import Cluster, GPUPool
from costmodel.specs.model import ModelSpec
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.presets import get_preset
from costmodel.specs.reliability import check_reliability_pools
from costmodel.specs.training import TrainingSpec

MAX_PIPELINE_ACTIONS = 3_000_000
"""Upper bound on simulated pipeline actions (~1 s of simulation); real jobs need far fewer
(1024 micro-batches × 64 stages × 3 = 196,608)."""


def resolve_model(value: Any) -> Any:
    """Turn ``{"preset": ...}`` / ``{"hf_config": ...}`` into a :class:`ModelSpec`."""
    if isinstance(value, dict):
        if "preset" in value:
            extra = set(value) - {"preset"}
            if extra:
                raise ValueError(f"a preset model takes no other fields (got {sorted(extra)})")
            return get_preset(str(value["preset"]))
        if "hf_config" in value:
            cfg = value["hf_config"]
            return ModelSpec.from_hf_config(cfg, name=value.get("name"))
    return value


class ModelField(BaseModel):
    """Mixin: a ``model`` field resolved from any of the contract's three forms."""

    model: ModelSpec = Field(description='{"preset": "llama3-70b"} | {"hf_config": {...}} | fields')

    @field_validator("model", mode="before")
    @classmethod
    def _resolve(cls, v: Any) -> Any:
        return resolve_model(v)


def attach_measured_device(data: Any) -> Any:
    """Give every cluster pool whose ``gpu`` names the measured device of the request's
    ``calibration`` (``calibration.device.name``, e.g. ``"cpu"``) that device description, so
    the pool validates and costs like a catalog GPU (see
    :mod:`costmodel.specs.measured_device`). Works on the raw request dict, before validation;
    anything else is returned unchanged and left to the validators."""
    if not isinstance(data, dict):
        return data
    cal, cluster = data.get("calibration"), data.get("cluster")
    if isinstance(cal, CalibrationProfile):
        device: Any = cal.device
        name = device.name if device is not None else None
    elif isinstance(cal, dict) and isinstance(cal.get("device"), dict):
        device = cal["device"]
        name = device.get("name")
    else:
        return data
    if not isinstance(name, str) or not isinstance(cluster, dict):
        return data
    pools = cluster.get("pools")
    if not isinstance(pools, list):
        return data
    new_pools = [
        {**p, "device": device} if isinstance(p, dict) and p.get("device") is None
        and isinstance(p.get("gpu"), str) and p["gpu"].strip() == name else p
        for p in pools]
    return {**data, "cluster": {**cluster, "pools": new_pools}}


class EstimateRequest(ModelField):
    model_config = ConfigDict(extra="forbid")

    training: TrainingSpec
    cluster: Cluster
    plan: ParallelPlan
    calibration: CalibrationProfile | None = Field(
        None, description="A calibration profile to use instead of the default efficiency "
        "model. When it defines a measured device (calibration.device), a pool's 'gpu' may "
        "name it.")

    @model_validator(mode="before")
    @classmethod
    def _measured_device(cls, data: Any) -> Any:
        return attach_measured_device(data)


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def parse(model: type[BaseModel], data: Any) -> Any:
    """Validate ``data`` as ``model``; pydantic errors become a :class:`SpecError` whose
    problems carry the dotted field path and pydantic's message."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except SpecError:
        raise
    except ValidationError as exc:
        problems: list[FieldProblem] = []
        for e in exc.errors():
            inner = (e.get("ctx") or {}).get("error")
            if isinstance(inner, SpecError):
                # raised by a spec's own consistency check: it knows the field path; prefix it
                # with where that spec sits in the request when it is nested deeper
                loc = _loc(e["loc"])
                for p in inner.problems:
                    field = p.field
                    head = field.split(".", 1)[0]
                    if loc != "body" and not field.startswith(loc) and head != loc.split(".")[0]:
                        field = f"{loc}.{field}"
                    problems.append(FieldProblem(field, p.rule))
            else:
                problems.append(FieldProblem(_loc(e["loc"]), _clean(e["msg"])))
        raise SpecError(problems) from None


def _clean(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg


def check_plan(model: ModelSpec, training: TrainingSpec, cluster: Cluster,
               plan: ParallelPlan) -> GPUPool:
    """All cross-field rules of one plan; returns the pool it runs on.

    Rules (framework source in brackets): heads and KV heads divisible by tp, FFN divisible by
    tp [Megatron ``ColumnParallelLinear`` divide()]; sequence parallel only with tp > 1
    [Megatron arguments.py]; pp ≤ layers and each stage ≥ 1 layer; ``layers_per_stage`` has
    pp·virtual_stages entries summing to the layer count; global batch divisible by dp ×
    micro-batch [Megatron/torchtitan]; seq_len divisible by 2·cp [Megatron-Core load-balanced
    CP]; ep divides experts and dp·cp [Megatron-Core expert data parallel]; enough GPUs in the
    pool; the precision's tensor cores exist on the GPU. A heterogeneous pipeline
    (``plan.stages``) is checked per pool instead, and a stage's own tp
    (``plan.stages.N.tp``) like ``plan.tp``: see :func:`_check_stages`.
    """
    c = ProblemCollector()
    check_reliability_pools(training, cluster, c)
    if plan.stages is not None:
        pool = _check_stages(c, model, training, cluster, plan)
    else:
        pool = _single_pool(cluster, plan)
        _check_pool(c, training, plan, pool)
    _check_rules(c, "plan.tp", degrees.tensor_parallel(model, plan.tp))
    L = model.num_hidden_layers
    stages = plan.num_stages
    c.check(plan.pp <= L, "plan.pp", f"pp={plan.pp} exceeds num_hidden_layers={L}")
    if plan.stages is not None:
        pass  # the stages' layers: checked in _check_stages
    elif plan.layers_per_stage is not None:
        lps = plan.layers_per_stage
        if c.check(len(lps) == stages, "plan.layers_per_stage",
                   f"needs pp·virtual_stages = {stages} entries, got {len(lps)}"):
            c.check(sum(lps) == L, "plan.layers_per_stage",
                    f"entries sum to {sum(lps)} but num_hidden_layers={L}")
            c.check(all(x >= 1 for x in lps), "plan.layers_per_stage",
                    "every stage needs at least one layer")
    else:
        c.check(stages <= L, "plan.virtual_stages",
                f"pp·virtual_stages = {stages} stages exceed num_hidden_layers={L}")
        if plan.pp > 1 and plan.num_stages <= L:
            c.check(min(rank_layer_split(L, plan.pp)) >= plan.virtual_stages,
                    "plan.virtual_stages",
                    f"an even split of {L} layers over pp={plan.pp} leaves a rank fewer layers "
                    f"than virtual_stages={plan.virtual_stages}")
    per_step = plan.dp * plan.micro_batch_size
    actions = training.global_batch_size // max(1, per_step) * stages * 3
    c.check(actions <= MAX_PIPELINE_ACTIONS, "training.global_batch_size",
            f"the schedule would have {actions:,} actions (micro-batches × stages × 3); the "
            f"simulator takes at most {MAX_PIPELINE_ACTIONS:,}: raise micro_batch_size or dp")
    _check_rules(c, "training.global_batch_size",
                 degrees.batch(training.global_batch_size, plan.dp, plan.micro_batch_size))
    _check_rules(c, "plan.cp", degrees.context_parallel(training.seq_len, plan.cp))
    _check_rules(c, "plan.activation_offload_layers", degrees.activation_offload_layers(
        model, plan.pp, plan.recompute, plan.activation_offload_layers))
    _check_rules(c, "plan.ep", degrees.expert_parallel(model, plan.dp, plan.cp, plan.ep))
    if plan.node_order is not None and plan.stages is None:
        units = pipeline_node_units(plan, pool.gpus_per_node)
        order = plan.node_order
        if units is None:
            c.add("plan.node_order", f"tp·cp·dp = {plan.tp * plan.cp * plan.dp} GPUs per stage "
                  f"neither fill whole nodes of {pool.gpus_per_node} GPUs nor share them evenly")
        else:
            c.check(len(order) == units, "plan.node_order",
                    f"needs {units} entries (one per node the pipeline occupies), got {len(order)}")
            c.check(len(set(order)) == len(order), "plan.node_order", "nodes must be distinct")
            c.check(all(0 <= n < pool.nodes for n in order), "plan.node_order",
                    f"nodes must be in 0..{pool.nodes - 1} (pool {pool.name!r})")
    if plan.stages is None:
        c.check(plan.num_gpus <= pool.num_gpus, "plan",
                f"tp·pp·dp·cp = {plan.num_gpus} GPUs exceed pool {pool.name!r} with "
                f"{pool.num_gpus}")
    if plan.schedule in ("GPipe", "1F1B"):
        c.check(plan.virtual_stages == 1, "plan.virtual_stages",
                f"{plan.schedule} runs one stage per rank; virtual_stages must be 1")
    if plan.schedule == "Interleaved1F1B":
        c.check(plan.virtual_stages >= 2, "plan.virtual_stages",
                "Interleaved1F1B needs virtual_stages >= 2")
    if plan.schedule in ("ZBVZeroBubble", "DualPipeV"):
        c.check(plan.virtual_stages == 2, "plan.virtual_stages",
                f"{plan.schedule} places exactly 2 stages per rank in a V")
    if plan.schedule in BIDIRECTIONAL:
        _check_bidirectional(c, training, plan)
    if plan.schedule == "custom":
        if c.check(plan.custom_schedule is not None, "plan.custom_schedule",
                   "required with schedule 'custom': per pipeline rank, its compute actions "
                   "in order, e.g. [['0F0', '0F1', '0B0', '0B1'], ...]"):
            assert plan.custom_schedule is not None
            if actions <= MAX_PIPELINE_ACTIONS:
                for rule in check_custom(plan.custom_schedule, plan.pp, plan.virtual_stages,
                                         num_microbatches(training, plan)):
                    c.add("plan.custom_schedule", rule)
    elif plan.custom_schedule is not None:
        c.add("plan.custom_schedule", f"only with schedule 'custom' (the plan's schedule is "
              f"{plan.schedule!r}); leave it null")
    if plan.recompute_num_layers is not None:
        _check_recompute_layers(c, model, plan)
    c.raise_if_any()
    return pool


def _check_recompute_layers(c: ProblemCollector, model: ModelSpec, plan: ParallelPlan) -> None:
    """``plan.recompute_num_layers`` (partial recompute): only with ``recompute`` 'full'
    (Megatron-Core ``TransformerConfig.__post_init__``: recompute_num_layers must be None for
    selective recompute, and with full recompute it sets how many layers), and from 1 to the
    layers of the largest stage (virtual chunk): Megatron's 'block' method recomputes
    min(N, layers) of each TransformerBlock (``megatron/core/recompute.py``, NVIDIA/Megatron-LM
    d98e8a64ddf34856e74b24714e3bedb2f5a39553), so a larger N recomputes no more and is the
    plain full recompute (null)."""
    k = plan.recompute_num_layers
    field = "plan.recompute_num_layers"
    if not c.check(plan.recompute == "full", field,
                   f"recompute_num_layers={k} only with recompute 'full' (the plan's recompute "
                   f"is {plan.recompute!r}): it is how many layers of each stage full recompute "
                   "covers; leave it null"):
        return
    if c.problems:
        return  # the stages are not well defined yet: their layers are checked first
    assert k is not None
    largest = max(stage_layers(model, plan))
    c.check(k <= largest, field,
            f"recompute_num_layers={k} must be at most the {largest} layers of the largest "
            "pipeline stage (virtual chunk): a stage recomputes min(recompute_num_layers, its "
            "layers), so more is the same as null (every layer)")


BIDIRECTIONAL = ("Chimera", "BitPipe")
"""Schedules that run two model replicas in one pipeline group
(:mod:`costmodel.pipeline.bidirectional`)."""


def _check_bidirectional(c: ProblemCollector, training: TrainingSpec,
                         plan: ParallelPlan) -> None:
    """Rules of Chimera (Li & Hoefler 2021, §3.2, §3.5) and BitPipe (Wu et al. 2024): an even
    number of pipeline ranks (the two replicas' pipelines merge without conflicts only then),
    whole basic units of pp micro-batches (pp/2 per replica), one stage per rank and replica
    for Chimera and a V of two for BitPipe; the vocabulary layers stay on the end stages."""
    name, pp = plan.schedule, plan.pp
    v_need = 1 if name == "Chimera" else 2
    c.check(plan.virtual_stages == v_need, "plan.virtual_stages",
            f"{name} places {v_need} stage(s) per rank of each of its two model replicas; "
            f"virtual_stages must be {v_need}")
    c.check(pp >= 2 and pp % 2 == 0, "plan.pp",
            f"{name} needs an even pp >= 2 (its two replicas' pipelines run in opposite "
            f"directions and merge without conflicts only for an even depth); got pp={pp}")
    per_step = plan.dp * plan.micro_batch_size
    if pp >= 2 and training.global_batch_size % per_step == 0:
        m = training.global_batch_size // per_step
        c.check(m % pp == 0, "training.global_batch_size",
                f"{name} runs basic units of pp={pp} micro-batches (pp/2 per replica): the "
                f"{m} micro-batches (global_batch_size / (dp × micro_batch_size)) must be a "
                f"multiple of pp")
    c.check(plan.vocab_placement == "end_stages", "plan.vocab_placement",
            f"{name} keeps the vocabulary layers on each replica's end stages; "
            "vocab_placement must be 'end_stages'")


def _single_pool(cluster: Cluster, plan: ParallelPlan) -> GPUPool:
    try:
        return cluster.pool(plan.pool)
    except KeyError:
        names = ", ".join(p.name for p in cluster.pools)
        rule = (f"unknown pool {plan.pool!r}; pools: {names}" if plan.pool is not None
                else f"the cluster has several pools ({names}); name one")
        raise SpecError(FieldProblem("plan.pool", rule)) from None


def _check_pool(c: ProblemCollector, training: TrainingSpec, plan: ParallelPlan,
                pool: GPUPool) -> None:
    gpu = pool.gpu_type
    if training.precision not in gpu.peak_tflops:
        c.add("training.precision", f"{gpu.name} has no {training.precision} tensor cores "
              f"(supported: {', '.join(sorted(gpu.peak_tflops))})")


HETERO_SCHEDULES = ("GPipe", "1F1B", "InterleavedZeroBubble", "custom")
"""Schedules a heterogeneous pipeline (``plan.stages``) may use: one stage per rank (a custom
one with ``virtual_stages`` 1)."""


def _check_stages(c: ProblemCollector, model: ModelSpec, training: TrainingSpec,
                  cluster: Cluster, plan: ParallelPlan) -> GPUPool:
    """Rules of a heterogeneous pipeline (``plan.stages``); returns the first stage's pool.
    Unknown pools are reported at once (the other rules need the pools)."""
    assert plan.stages is not None
    stages = plan.stages
    names = ", ".join(p.name for p in cluster.pools)
    known = {p.name: p for p in cluster.pools}
    unknown = [FieldProblem(f"plan.stages.{i}.pool", f"unknown pool {st.pool!r}; pools: {names}")
               for i, st in enumerate(stages) if st.pool not in known]
    if not stages:
        unknown.append(FieldProblem("plan.stages", "needs at least one stage"))
    if unknown:
        raise SpecError(unknown)
    L = model.num_hidden_layers
    total = sum(st.layers for st in stages)
    c.check(total == L, "plan.stages",
            f"the stages' layers sum to {total} but num_hidden_layers={L}")
    c.check(len(stages) == plan.pp, "plan.pp",
            f"pp={plan.pp} must equal the number of stages ({len(stages)})")
    c.check(plan.virtual_stages == 1, "plan.virtual_stages",
            "a heterogeneous pipeline (plan.stages) runs one stage per rank; virtual_stages "
            "must be 1")
    c.check(plan.schedule in HETERO_SCHEDULES, "plan.schedule",
            f"a heterogeneous pipeline (plan.stages) needs one of {', '.join(HETERO_SCHEDULES)}")
    c.check(plan.node_order is None, "plan.node_order",
            "node_order is not supported with plan.stages")
    for i, st in enumerate(stages):
        if st.tp is not None:
            _check_stage_tp(c, model, plan, st.tp, f"plan.stages.{i}.tp", known[st.pool])
    used: dict[str, list[int]] = {}
    for st, tp in zip(stages, plan.stage_tps, strict=True):
        used.setdefault(st.pool, []).append(tp)
    for name, tps in used.items():
        p = known[name]
        if all(tp == plan.tp for tp in tps):
            per_stage, count = plan.tp * plan.cp * plan.dp, len(tps)
            c.check(per_stage * count <= p.num_gpus, "plan.stages",
                    f"{count} stage(s) of tp·cp·dp = {per_stage} GPUs need {per_stage * count} "
                    f"GPUs of pool {name!r} with {p.num_gpus}")
        else:
            need = sum(tps) * plan.cp * plan.dp
            c.check(need <= p.num_gpus, "plan.stages",
                    f"{len(tps)} stage(s) of tp_s·cp·dp GPUs (tp_s = {tps}) need {need} GPUs "
                    f"of pool {name!r} with {p.num_gpus}")
        if plan.tp in tps:
            c.check(plan.tp <= p.gpus_per_node, "plan.tp",
                    f"tp={plan.tp} exceeds gpus_per_node={p.gpus_per_node} of pool {name!r}")
        _check_pool(c, training, plan, p)
    return known[stages[0].pool]


def _check_rules(c: ProblemCollector, field: str, rules: list[degrees.Rule]) -> None:
    """Report each broken rule of :mod:`costmodel.specs.degrees` on ``field``."""
    for ok, why in rules:
        if not ok:
            c.add(field, why())


def _check_stage_tp(c: ProblemCollector, model: ModelSpec, plan: ParallelPlan, tp: int,
                    field: str, pool: GPUPool) -> None:
    """Rules of one stage's own tensor-parallel degree (``plan.stages.N.tp``): those of
    ``plan.tp`` (heads, KV heads, FFN), within one node of the stage's pool, and > 1 with
    sequence parallelism."""
    _check_rules(c, field, degrees.tensor_parallel(model, tp))
    c.check(tp <= pool.gpus_per_node, field,
            f"tp={tp} exceeds gpus_per_node={pool.gpus_per_node} of pool {pool.name!r}")
    if plan.sequence_parallel:
        c.check(tp > 1, field, "sequence parallelism needs every stage's tp > 1")


def stage_pools(cluster: Cluster, plan: ParallelPlan) -> list[GPUPool]:
    """The pool of every global stage: ``plan.stages``' pools, or the plan's one pool for all
    ``pp·virtual_stages`` stages. Assumes :func:`check_plan` passed."""
    if plan.stages is not None:
        known = {p.name: p for p in cluster.pools}
        return [known[st.pool] for st in plan.stages]
    return [cluster.pool(plan.pool)] * plan.num_stages


def pipeline_node_units(plan: ParallelPlan, gpus_per_node: int) -> int | None:
    """Nodes a plan's pipeline occupies in Megatron's rank order (pp outermost): pp·k when
    each stage fills k whole nodes, ceil(pp/g) when g stages share a node; None when the
    stage size does neither."""
    stride = plan.tp * plan.cp * plan.dp
    if stride % gpus_per_node == 0:
        return plan.pp * (stride // gpus_per_node)
    if gpus_per_node % stride == 0:
        g = gpus_per_node // stride
        return -(-plan.pp // g)
    return None


def num_microbatches(training: TrainingSpec, plan: ParallelPlan) -> int:
    return training.global_batch_size // (plan.dp * plan.micro_batch_size)


def rank_layer_split(num_layers: int, pp: int) -> list[int]:
    """Layers per pipeline rank, as even as possible; the remainder goes to the middle ranks
    first (the end ranks also carry the vocabulary layers)."""
    return list(_rank_layer_split(num_layers, pp))


@cache
def _rank_layer_split(num_layers: int, pp: int) -> tuple[int, ...]:
    base, extra = divmod(num_layers, pp)
    out = [base] * pp
    order = sorted(range(pp), key=lambda i: (abs(i - (pp - 1) / 2), i))
    for i in order[:extra]:
        out[i] += 1
    return tuple(out)


def plan_stage_ranks(plan: ParallelPlan) -> list[int]:
    """The pipeline rank of every global stage: the named schedule's placement
    (:func:`costmodel.pipeline.schedules.stage_to_rank`: one per rank, loop or V), or for a
    custom schedule the rank whose action list holds the stage. With two model replicas
    (Chimera, BitPipe) the second replica's stages follow the first's. Assumes
    :func:`check_plan` passed."""
    if plan.schedule == "custom":
        assert plan.custom_schedule is not None
        return custom_stage_ranks(plan.custom_schedule)
    from costmodel.pipeline.schedules import stage_to_rank

    return stage_to_rank(plan.schedule, plan.pp, plan.virtual_stages)


def stage_layers(model: ModelSpec, plan: ParallelPlan) -> list[int]:
    """Layers of each global stage: the plan's own ``layers_per_stage``, or an even split of
    the layers over the pipeline ranks (:func:`rank_layer_split`) and of each rank's layers
    over its chunks, earlier chunks first (placement from the schedule: loop or V)."""
    if plan.stages is not None:
        return [st.layers for st in plan.stages]
    if plan.layers_per_stage is not None:
        return list(plan.layers_per_stage)
    # the first model replica's placement (Chimera and BitPipe lay out a second one mirrored)
    ranks = plan_stage_ranks(plan)[:plan.num_stages]
    return list(_even_stage_layers(model.num_hidden_layers, plan.pp, tuple(ranks)))


@cache
def _even_stage_layers(num_layers: int, pp: int, ranks: tuple[int, ...]) -> tuple[int, ...]:
    """:func:`stage_layers` for an even split, by stage placement (``ranks``: the pipeline
    rank of each stage). Cached: a search asks for the same few splits for every plan it
    checks."""
    per_rank = rank_layer_split(num_layers, pp)
    mine: list[list[int]] = [[] for _ in range(pp)]
    for j, r in enumerate(ranks):
        mine[r].append(j)
    out = [0] * len(ranks)
    for r in range(pp):
        base, extra = divmod(per_rank[r], len(mine[r]))
        for k, j in enumerate(mine[r]):
            out[j] = base + (1 if k < extra else 0)
    return tuple(out)


SP_AT_TP1 = ("plan.sequence_parallel: disabled because tp = 1 (sequence parallelism splits "
             "the tensor-parallel group's activations; Megatron-LM turns it off with a warning "
             "in the same case: megatron/training/arguments.py validate_args)")


def lenient_plan(plan: ParallelPlan) -> tuple[ParallelPlan, list[str]]:
    """The plan as Megatron-LM would run it, with a note for each setting it drops:
    ``sequence_parallel`` with ``tp = 1`` (and no per-stage tp) is disabled, not refused."""
    if plan.sequence_parallel and plan.tp == 1 and plan.stages is None:
        return plan.model_copy(update={"sequence_parallel": False}), [SP_AT_TP1]
    return plan, []
