"""Mixed-pool pipelines in the search: stages of one pipeline on different GPU types.

For a finalist's degrees (tp, cp, dp, micro-batch, recompute, sequence parallelism, ZeRO),
each pool's per-layer time and memory come from the cost model's own per-block functions;
:mod:`solver.hetero` then assigns every stage a pool and a layer count with CP-SAT (slowest
stage minimised under GPU counts and per-stage memory), and the candidate plan is evaluated
by the full estimate, which decides. These plans extend the enumerated (homogeneous) space;
the optimality certificate of the search does not cover them.
"""

from __future__ import annotations

import time

import numpy as np

from costmodel.estimate import plan_shard
from costmodel.layer_cost import block_cost, edge_cost
from costmodel.memory import (
    block_activation_bytes,
    overhead_bytes,
    stack_state_rules,
    state_bytes,
    usable_bytes,
)
from costmodel.ops import Device
from costmodel.profile import default_profile
from costmodel.specs import degrees
from costmodel.specs.cluster import GPUPool
from costmodel.specs.plan import ParallelPlan, StageAssignment
from costmodel.stacks.stack import get_stack
from solver.hetero import HeteroProblem, solve_hetero
from solver.request import SearchRequest

MIXED_SCHEDULES = ("1F1B", "GPipe", "InterleavedZeroBubble")
"""Schedules a mixed pipeline may use (one stage per rank)."""
STAGE_TP = "tp" in StageAssignment.model_fields
"""Whether the cost model takes a tensor-parallel degree per stage."""


def _pool_costs(req: SearchRequest, pool: GPUPool, plan: ParallelPlan
                ) -> tuple[float, float, float, float, float, float]:
    """(layer time, embedding time, head time, activation bytes per layer, state bytes per
    layer, usable bytes) of one stage of ``plan``'s degrees on ``pool``'s GPUs."""
    prof = req.calibration or default_profile()
    dev = Device.from_pool(pool, req.training.precision, prof)
    s = plan_shard(plan, req.training, pool)
    model = req.model
    dense = block_cost(model, s, dev, moe=False)
    per_layer = float(np.asarray(dense.fwd + dense.bwd_input + dense.bwd_weight))
    edge = edge_cost(model, s, dev)
    emb = float(np.asarray(edge.embed_fwd + edge.embed_bwd))
    head = float(np.asarray(edge.head_fwd + edge.head_bwd_input + edge.head_bwd_weight))
    act = float(np.asarray(block_activation_bytes(model, s, moe=False)))
    d = float(plan.dp * plan.cp)
    p_layer = np.asarray(model.block_param_split()[0] / plan.tp)
    stack = get_stack(req.training.framework, req.training.framework_version)
    rules = stack_state_rules(req.training.precision, req.training.grad_buffer_bytes, stack,
                              plan.zero_stage, plan.pp)
    st = state_bytes(p_layer, np.zeros_like(p_layer), np.asarray(plan.zero_stage),
                     np.asarray(d), np.asarray(d), req.training.optimizer,
                     req.training.precision, np.zeros_like(p_layer), rules.held_grad_bytes,
                     rules.stage_unsharded)
    state = float(np.asarray(st.weights + st.grads + st.optimizer))
    usable = usable_bytes(pool.gpu_type.memory_bytes, prof, stack) - float(
        np.asarray(overhead_bytes(prof, np.asarray(4.0))))
    return per_layer, emb, head, act, state, usable


def _tp_options(req: SearchRequest, pool: GPUPool, seed: ParallelPlan) -> list[int]:
    """Tensor-parallel degrees a stage on ``pool`` may take: the seed's, and the others that
    divide the model's heads, KV heads and FFN within one node (and keep sequence
    parallelism meaningful); a fixed tp allows only itself."""
    if "tp" in req.constraints.fixed or not STAGE_TP:
        return [seed.tp] if seed.tp <= pool.gpus_per_node else []
    out = [t for t in (1, 2, 4, 8, 16) if t <= pool.gpus_per_node
           and degrees.holds(degrees.tensor_parallel(req.model, t))
           and (t > 1 or not seed.sequence_parallel)]
    return sorted(set(out) | ({seed.tp} if seed.tp <= pool.gpus_per_node else set()))


def mixed_candidates(req: SearchRequest, seeds: list[ParallelPlan], deadline: float,
                     max_candidates: int = 12) -> list[ParallelPlan]:
    """Mixed-pool plans built from the degrees of ``seeds`` (the homogeneous finalists), for
    every pipeline depth that needs GPUs of more than one pool. Each stage may also take its
    own tensor-parallel degree (options (pool, tp), Metis/AMP-style)."""
    pools = [p for p in req.cluster.pools
             if (not req.constraints.pools or p.name in req.constraints.pools)
             and req.training.precision in p.gpu_type.peak_tflops]
    if len(pools) < 2 or req.model.is_moe:
        return []
    cons = req.constraints
    out: list[ParallelPlan] = []
    seen: set[tuple[object, ...]] = set()
    L = req.model.num_hidden_layers
    allowed = [s for s in MIXED_SCHEDULES if not cons.schedules or s in cons.schedules]
    fixed = cons.fixed
    if not allowed or fixed.get("virtual_stages", 1) != 1:
        return []
    depths = [fixed["pp"]] if "pp" in fixed else [2, 4, 8, 16, 32, 64]
    for seed in seeds:
        if time.perf_counter() > deadline:
            return out
        other = seed.cp * seed.dp
        options = [(p, t) for p in pools for t in _tp_options(req, p, seed)]
        if len({p.name for p, _ in options}) < 2:
            continue
        costs = [_pool_costs(req, p, seed.model_copy(update={"tp": t})) for p, t in options]
        smallest = {p.name: min(t for q, t in options if q.name == p.name) for p, _ in options}
        stages_avail = sum(p.num_gpus // (smallest[p.name] * other) for p in pools
                           if p.name in smallest)
        m = req.training.global_batch_size // (seed.dp * seed.micro_batch_size)
        for pp in depths:
            if time.perf_counter() > deadline or len(out) >= max_candidates:
                return out
            if pp > min(L, stages_avail) or pp > m:
                continue
            if cons.max_gpus and pp * min(smallest.values()) * other > cons.max_gpus:
                continue
            key = (seed.tp, seed.cp, seed.dp, seed.micro_batch_size, seed.recompute,
                   seed.sequence_parallel, seed.zero_stage, pp)
            if key in seen:
                continue
            seen.add(key)
            inflight = [min(pp - s, m) for s in range(pp)]  # 1F1B (Narayanan et al. 2021)
            problem = HeteroProblem(
                num_layers=L, pp=pp, gpus_per_stage=seed.tp * other,
                pools=tuple(p.name for p, _ in options),
                pool_gpus=tuple(p.num_gpus for p, _ in options),
                stage_gpus=tuple(t * other for _, t in options),
                tps=tuple(t for _, t in options),
                layer_time=tuple(c[0] for c in costs), first_time=tuple(c[1] for c in costs),
                last_time=tuple(c[2] for c in costs),
                layer_bytes=tuple(tuple(c[3] * inflight[s] + c[4] for s in range(pp))
                                  for c in costs),
                fixed_bytes=tuple(tuple(0.0 for _ in range(pp)) for _ in costs),
                capacity_bytes=tuple(c[5] * cons.max_memory_fraction for c in costs),
                min_pools=2)
            budget = max(0.05, min(1.0, deadline - time.perf_counter()))
            res = solve_hetero(problem, time_limit_s=budget, seed=req.seed)
            if res.pools is None or res.layers is None or res.tps is None:
                continue
            if cons.max_gpus and sum(t * other for t in res.tps) > cons.max_gpus:
                continue
            uniform = len(set(res.tps)) == 1
            stages = [{"pool": p, "layers": n} | ({} if uniform else {"tp": t})
                      for p, n, t in zip(res.pools, res.layers, res.tps, strict=True)]
            for schedule in allowed:  # the estimate judges which schedule runs it best
                out.append(ParallelPlan.model_validate({
                    **seed.model_dump(), "pool": res.pools[0], "tp": res.tps[0], "pp": pp,
                    "schedule": schedule, "virtual_stages": 1, "layers_per_stage": None,
                    "node_order": None, "stages": stages,
                    # the stage costs above are those of the seed's recompute for every layer:
                    # a partial recompute seed gives a plain full-recompute mixed pipeline
                    "recompute_num_layers": None}))
    return out
