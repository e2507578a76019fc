"""Explanations: what binds each plan, why the next one ranks lower, why nothing fits."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from costmodel.errors import SpecError
from costmodel.results import Estimate
from costmodel.specs.plan import ParallelPlan
from solver.results import Explanation

if TYPE_CHECKING:
    from solver.request import SearchRequest

NEAR = 0.9
"""A limit 'binds' when a plan uses at least this fraction of it."""

_BREAKDOWN_LABELS = {
    "forward_s": "forward compute", "backward_input_s": "input-gradient compute",
    "backward_weight_s": "weight-gradient compute", "recompute_s": "recompute",
    "pp_comm_s": "pipeline send/recv", "dp_comm_exposed_s": "exposed data-parallel traffic",
    "optimizer_s": "optimizer step", "pipeline_bubble_s": "pipeline bubble",
    "tp_comm_s": "tensor-parallel collectives", "cp_comm_s": "context-parallel exchange",
    "ep_comm_s": "expert all-to-all",
}


_ADDITIVE = ("forward_s", "backward_input_s", "backward_weight_s", "recompute_s",
             "pipeline_bubble_s", "dp_comm_exposed_s", "optimizer_s")
"""Breakdown parts that sum to the step time on the critical rank."""


def describe(plan: ParallelPlan) -> str:
    """A plan in one line."""
    sched = plan.schedule + (f"×{plan.virtual_stages}" if plan.virtual_stages > 1 else "")
    parts = [f"tp={plan.tp}", f"pp={plan.pp}", f"dp={plan.dp}"]
    if plan.cp > 1:
        parts.append(f"cp={plan.cp}")
    if plan.ep > 1:
        parts.append(f"ep={plan.ep}")
    parts += [f"mbs={plan.micro_batch_size}", sched, f"recompute={plan.recompute}"
              + (f"[{plan.recompute_num_layers}]" if plan.recompute_num_layers else ""),
              f"ZeRO-{plan.zero_stage}"]
    if plan.sequence_parallel:
        parts.append("SP")
    if plan.layers_per_stage is not None:
        parts.append(f"layers {plan.layers_per_stage}")
    if plan.node_order is not None:
        parts.append(f"nodes {plan.node_order}")
    if plan.stages:
        parts.append("stages " + " ".join(f"{s.pool}:{s.layers}" for s in plan.stages))
    return f"{plan.pool}: " + " ".join(parts)


def binding_constraint(req: SearchRequest, est: Estimate, cap_gib: float) -> tuple[str, list[str]]:
    """The limit closest to binding, and notes on the others."""
    cons = req.constraints
    pool = req.cluster.pool(est.plan.pool)
    notes: list[str] = []
    worst = max(est.memory.per_stage, key=lambda s: s.total_gib)
    mem_use = worst.total_gib / cap_gib
    share = 100 * worst.total_gib / worst.capacity_gib
    mem = (f"pipeline rank {worst.rank} memory at {share:.0f}% "
           f"of {worst.capacity_gib:.0f} GiB ({worst.total_gib:.1f} GiB; the limit is "
           f"{cap_gib:.1f} GiB = {cons.max_memory_fraction:.2f} of it)")
    candidates: list[tuple[float, str]] = [(mem_use, mem)]
    if est.plan.stages:
        names = sorted({s.pool for s in est.plan.stages})
        total = sum(req.cluster.pool(n).num_gpus for n in names)
        gpu_limit = min(total, cons.max_gpus or total)
        where = "pools " + "+".join(repr(n) for n in names)
    else:
        gpu_limit = min(pool.num_gpus, cons.max_gpus or pool.num_gpus)
        where = f"pool {pool.name!r}"
    candidates.append((est.num_gpus / gpu_limit,
                       f"uses {est.num_gpus} of the {gpu_limit} GPUs allowed in {where}"))
    if cons.max_cost_per_hour:
        candidates.append((est.cost_per_hour / cons.max_cost_per_hour,
                           f"costs ${est.cost_per_hour:,.2f}/hour of the "
                           f"${cons.max_cost_per_hour:,.2f} budget"))
    candidates.sort(key=lambda c: -c[0])
    if candidates[0][0] >= NEAR:
        head = candidates[0][1]
        notes += [c[1] for c in candidates[1:] if c[0] >= NEAR]
    else:
        head = "no hard limit binds; " + _time_profile(est)
    notes.append(_time_profile(est))
    return head, notes


def _time_profile(est: Estimate) -> str:
    b = est.breakdown.model_dump()
    step = est.step_time_s
    comp = b["forward_s"] + b["backward_input_s"] + b["backward_weight_s"] + b["recompute_s"]
    parts = [f"compute {100 * comp / step:.0f}% of the {step:.2f} s step"]
    for key in ("pipeline_bubble_s", "dp_comm_exposed_s", "optimizer_s"):
        if b[key] / step >= 0.01:
            parts.append(f"{_BREAKDOWN_LABELS[key]} {100 * b[key] / step:.0f}%")
    return ", ".join(parts) + f", MFU {100 * est.mfu:.1f}%"


_PER_STEP_COST = ("cost", "cost_to_train")
"""Objectives proportional to step time × GPUs × price: two plans on different GPU counts or
prices compare in the objective's own unit, not in seconds per step."""


def objective_parts(objective: str, value: float, est: Estimate) -> dict[str, float]:
    """Each :data:`_ADDITIVE` breakdown part of ``est`` in the unit the two plans of
    :func:`runner_up` are compared in. ``cost`` and ``cost_to_train`` are proportional to the
    step time at a plan's GPU count and price (``$/h / 3600 · step / tokens per step``; to
    train, over the goodput share too), so a part's share of the objective is
    ``part_s · |value| / step_time_s``, its seconds' share of the step: a plan on twice the
    GPUs pays each of its seconds twice. ``throughput`` and ``time_to_train`` fix the tokens
    per step, whatever the GPUs: seconds per step."""
    b = est.breakdown.model_dump()
    if objective in _PER_STEP_COST and est.step_time_s > 0:
        scale = abs(value) / est.step_time_s
        return {k: b[k] * scale for k in _ADDITIVE}
    return {k: b[k] for k in _ADDITIVE}


def _part_text(objective: str, d: float) -> str:
    """A difference of :func:`objective_parts`, three significant digits with its unit."""
    if objective == "cost":
        return f"${d:.3g}/M tokens"
    if objective == "cost_to_train":
        return f"${d:,.0f} to train" if d >= 100 else f"${d:.3g} to train"
    if d >= 0.1:
        return f"{d:.3f} s per step"
    return f"{d * 1e3:.3g} ms per step" if d >= 1e-3 else f"{d * 1e6:.3g} µs per step"


def runner_up(req: SearchRequest, a: tuple[float, ParallelPlan, Estimate],
              b: tuple[float, ParallelPlan, Estimate]) -> str:
    """Why plan b ranks below plan a: objective difference and the component that differs
    most, plus what differs in the plans."""
    (va, pa, ea), (vb, pb, eb) = a, b
    name = req.objective
    rel = abs(vb - va) / max(abs(va), 1e-30)
    worse = {"throughput": "lower throughput", "cost": "higher cost per token",
             "time_to_train": "longer time to train", "cost_to_train": "higher cost to train"}[
        name]
    ca, cb = objective_parts(name, va, ea), objective_parts(name, vb, eb)
    diffs = sorted(((cb[k] - ca[k], k) for k in _ADDITIVE), reverse=True)
    reason = ""
    if diffs and diffs[0][0] > 0:
        d, k = diffs[0]
        reason = f"; most of it is {_BREAKDOWN_LABELS[k]} (+{_part_text(name, d)})"
    if name in _PER_STEP_COST and eb.cost_per_hour != ea.cost_per_hour:
        reason += f"; ${eb.cost_per_hour:,.2f}/hour against ${ea.cost_per_hour:,.2f}"
    changed = [f"{k} {getattr(pa, k)}→{getattr(pb, k)}" for k in (
        "pool", "tp", "pp", "dp", "cp", "ep", "micro_batch_size", "schedule", "virtual_stages",
        "recompute", "recompute_num_layers", "sequence_parallel", "zero_stage")
        if getattr(pa, k) != getattr(pb, k)]
    if pa.layers_per_stage != pb.layers_per_stage:
        changed.append("layer split")
    if pa.node_order != pb.node_order:
        changed.append("node placement")
    return (f"the next plan ({', '.join(changed) or 'same degrees'}) has {100 * rel:.2g}% "
            f"{worse}{reason}")


def explain_plans(req: SearchRequest, ranked: list[tuple[float, ParallelPlan, Estimate]],
                  caps: dict[str, float], deadline: float | None = None) -> list[Explanation]:
    """Each plan's binding constraint, comparison with the next, and straggler sensitivity;
    a sensitivity whose re-simulations (pp + 1 of them, priced by one timed simulation) would
    end past ``deadline`` (``time.perf_counter()``) is left out with a note."""
    from solver.robustness import describe_sensitivity, is_measured, sensitivity

    out = []
    for i, (v, plan, est) in enumerate(ranked):
        head, notes = binding_constraint(req, est, caps[str(plan.pool)])
        nxt = runner_up(req, (v, plan, est), ranked[i + 1]) if i + 1 < len(ranked) else None
        # re-simulates the plan pp + 1 times: done for the returned plans only (cached when
        # constraints.max_straggler_sensitivity already measured it)
        sens = None
        if deadline is None or is_measured(plan) or _sensitivity_fits(req, plan, deadline):
            sens = sensitivity(req, plan)
        else:
            notes.append("straggler sensitivity not computed: its re-simulations would end "
                         "past time_limit_s")
        if sens is not None:
            notes.append(describe_sensitivity(sens))
        out.append(Explanation(binding_constraint=head, vs_runner_up=nxt, notes=notes,
                               straggler_sensitivity=sens))
    return out


def _sensitivity_fits(req: SearchRequest, plan: ParallelPlan, deadline: float) -> bool:
    """Whether pp + 1 simulations of ``plan`` (one timed here) end before ``deadline``."""
    from costmodel.estimate import step_time

    start = time.perf_counter()
    if start >= deadline:
        return False
    try:
        step_time(req.model, req.training, req.cluster, plan, req.calibration)
    except SpecError:
        return True  # the what-if will say it cannot simulate it, at no cost
    one = time.perf_counter() - start
    return time.perf_counter() + one * (plan.pp + 1) <= deadline


def infeasibility(req: SearchRequest, summary: list[dict[str, Any]],
                  empty: Sequence[tuple[Any, str]] = ()) -> str:
    """Why no plan qualifies, with the numbers of the closest miss."""
    cons = req.constraints
    model = req.model.name
    lines = [f"pool {pool.name!r}: {why}" for pool, why in empty]
    if not summary:
        return f"no pool can run {model}: " + "; ".join(lines) + "."
    fitting_costs = [s["cheapest_fitting_cost"] for s in summary
                     if s.get("cheapest_fitting_cost") is not None]
    if cons.max_cost_per_hour is not None and fitting_costs and min(fitting_costs) > (
            cons.max_cost_per_hour):
        return (f"the cheapest plan of {model} that fits costs ${min(fitting_costs):,.2f}/hour, "
                f"over max_cost_per_hour ${cons.max_cost_per_hour:,.2f}")
    for s in summary:
        pool = s["pool"]
        cap = pool.gpu_type.memory_gib * cons.max_memory_fraction
        if s["plan"] is None:
            lines.append(f"pool {pool.name!r}: no plan satisfies the parallelism rules with "
                         f"fixed degrees {cons.fixed or 'none'} and at most "
                         f"{min(pool.num_gpus, cons.max_gpus or pool.num_gpus)} GPUs")
            continue
        p: ParallelPlan = s["plan"]
        n = min(pool.num_gpus, cons.max_gpus or pool.num_gpus)
        lines.append(
            f"{model} needs at least {s['peak_gib']:.1f} GiB per GPU on the {n} GPUs of pool "
            f"{pool.name!r}: its leanest plan is tp={p.tp}, pp={p.pp}, dp={p.dp}, cp={p.cp}, "
            f"recompute={p.recompute_text}, ZeRO-{p.zero_stage}, micro-batch {p.micro_batch_size}; "
            f"{pool.gpu} has {pool.gpu_type.memory_gib:.0f} GiB (limit {cap:.1f} GiB at "
            f"max_memory_fraction {cons.max_memory_fraction:.2f})")
    largest = max(p.gpu_type.memory_gib for p in req.cluster.pools)
    return "; ".join(lines) + f". The largest GPU in the inventory has {largest:.0f} GiB."
