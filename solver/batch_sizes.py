"""Searching the global batch size too (``training.global_batch_sizes``), as Galvatron does.

The batch size changes the micro-batch counts, and with them every simulated step, so each
acceptable size is its own space: the search runs once per size (ascending, each with an
equal share of the time that is left) and merges the results. The objectives compare across
sizes — tokens/s, $ per M tokens and time/cost to train are all per token — so the merged
ranking is by objective value, the k best distinct (batch size, layout) pairs; every plan
names its batch size (``RankedPlan.global_batch_size``). The certificate holds for the union:
optimal when every size's search was, and the bound is the best of the sizes' bounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from solver.request import SearchRequest
from solver.results import Optimality, RankedPlan, SearchResult, SearchStats


def search_sizes(req: SearchRequest, run: Callable[[SearchRequest], SearchResult]
                 ) -> SearchResult:
    """``run`` (the single-size search) for each of ``req.training.batch_sizes``, merged."""
    sizes = req.training.batch_sizes
    t0 = time.perf_counter()
    parts: list[tuple[int, SearchResult]] = []
    for n, gbs in enumerate(sizes):
        left = req.time_limit_s - (time.perf_counter() - t0)
        share = max(0.5, left / (len(sizes) - n))
        sub = req.model_copy(update={
            "training": req.training.model_copy(update={"global_batch_size": gbs,
                                                        "global_batch_sizes": None}),
            "time_limit_s": share})
        parts.append((gbs, run(sub)))
    return _merge(req, parts, time.perf_counter() - t0)


def _better(objective: str) -> Callable[[float], float]:
    """Sort key: objective values ascending from best (throughput is maximised)."""
    return (lambda v: -v) if objective == "throughput" else (lambda v: v)


def _merge(req: SearchRequest, parts: list[tuple[int, SearchResult]], elapsed: float
           ) -> SearchResult:
    from solver.search import layout_key, non_dominated

    key = _better(req.objective)
    ranked = [(key(rp.objective_value), gbs, rp) for gbs, res in parts for rp in res.plans]
    ranked.sort(key=lambda t: (t[0], t[1]))
    seen: set[tuple[object, ...]] = set()
    plans: list[RankedPlan] = []
    for _, gbs, rp in ranked:
        k = (gbs, *layout_key(rp.plan))
        if k in seen:
            continue
        seen.add(k)
        explanation = rp.explanation.model_copy(update={"notes": [
            *rp.explanation.notes, f"global batch size {gbs} sequences, chosen among "
            f"{', '.join(str(g) for g in req.training.batch_sizes)}"]})
        plans.append(rp.model_copy(update={"rank": len(plans) + 1, "global_batch_size": gbs,
                                           "explanation": explanation}))
        if len(plans) == req.top_k:
            break
    pareto = non_dominated([p.model_copy(update={"global_batch_size": gbs})
                            for gbs, res in parts for p in res.pareto])
    per_pool: dict[str, Any] = {}
    for gbs, res in parts:
        for pb in res.best_per_pool:
            mine = per_pool.get(pb.pool)
            if mine is None or key(pb.objective_value) < key(mine.objective_value):
                per_pool[pb.pool] = pb.model_copy(update={"global_batch_size": gbs})
    stats = [res.stats for _, res in parts]
    merged_stats = SearchStats(
        candidates=sum(s.candidates for s in stats), valid=sum(s.valid for s in stats),
        fitting=sum(s.fitting for s in stats), simulated=sum(s.simulated for s in stats),
        partitions_solved=sum(s.partitions_solved for s in stats),
        placements_solved=sum(s.placements_solved for s in stats),
        schedules_synthesized=sum(s.schedules_synthesized for s in stats),
        elapsed_s=elapsed, timed_out=any(s.timed_out for s in stats),
        skipped_pools=[k for s in stats for k in s.skipped_pools])
    return SearchResult(plans=plans, pareto=pareto, best_per_pool=list(per_pool.values()),
                        optimality=_optimality(req, parts, plans), stats=merged_stats,
                        infeasible_reason=None if plans else "; ".join(
                            f"global_batch_size {gbs}: {res.infeasible_reason}"
                            for gbs, res in parts if res.infeasible_reason))


def _optimality(req: SearchRequest, parts: list[tuple[int, SearchResult]],
                plans: list[Any]) -> Optimality:
    opts = [res.optimality for _, res in parts]
    if not plans:
        return Optimality(status="infeasible", objective=req.objective)
    key = _better(req.objective)
    value = plans[0].objective_value
    # a size without plans adds nothing (proven infeasible or not: an infeasible size whose
    # search timed out leaves the union unproven)
    proven = all(o.status == "optimal" or (o.status == "infeasible" and not res.stats.timed_out)
                 for o, (_, res) in zip(opts, parts, strict=True))
    bounds = [o.bound for o in opts if o.status != "infeasible"]
    bound = None if any(b is None for b in bounds) else min(bounds, key=key)  # type: ignore[arg-type]
    if proven:
        return Optimality(status="optimal", objective=req.objective, value=value, bound=value,
                          gap=0.0)
    gap = (abs(value - bound) / abs(bound)) if bound not in (None, 0.0) else None
    return Optimality(status="feasible", objective=req.objective, value=value, bound=bound,
                      gap=gap)
