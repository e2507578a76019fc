"""The search over partial recompute (``plan.recompute_num_layers``): it returns a partial
plan where that is the best, lists the other N of its layout as variants, and adds partial
candidates only where no recompute does not fit and full recompute does."""

from __future__ import annotations

from typing import Any

import numpy as np

from costmodel.bulk import evaluate_bulk
from solver import search
from solver.request import SearchRequest
from solver.space import enumerate_pool, partial_recompute_candidates
from tests.solver.test_search import body

TIGHT = body(top_k=3, constraints={"max_memory_fraction": 0.3, "fixed": {
    "tp": 1, "pp": 1, "dp": 16, "zero_stage": 3}})
"""Llama-3-8B on 16 H100 at ZeRO-3 under 24 GiB: no recompute needs 30.8 GiB, full recompute
15.1 GiB; half of the 32 layers recomputed 23.1 GiB and 12 % faster than full."""


def _with(cons: dict[str, Any]) -> dict[str, Any]:
    return {**TIGHT, "constraints": {**TIGHT["constraints"], **cons}}


def test_a_partial_recompute_plan_wins_where_none_does_not_fit() -> None:
    """Checks: the best plan recomputes 16 of 32 layers (the fewest of the quarters that
    fits), certified optimal, faster than plain full recompute; the other N of the same
    layout (24 and all) are its variants, with their figures, not plans of their own (they
    would fill the top k with one layout)."""
    r = search(TIGHT)
    assert r.optimality.status == "optimal"
    best = r.plans[0]
    assert (best.plan.recompute, best.plan.recompute_num_layers) == ("full", 16)
    keys = [(p.plan.tp, p.plan.pp, p.plan.dp, p.plan.cp, p.plan.micro_batch_size,
             p.plan.recompute) for p in r.plans]
    assert len(set(keys)) == len(keys)  # distinct layouts
    others = {v.recompute_num_layers: v for v in best.variants}
    assert {24, None} <= set(others)
    assert all(v.objective_value < best.objective_value for v in others.values())
    plain = others[None]
    assert best.estimate.tokens_per_s > 1.1 * plain.objective_value
    assert best.estimate.memory.peak_gib <= 0.3 * 80
    off = search(_with({"partial_recompute": False}))
    assert off.plans[0].plan.recompute_num_layers is None
    assert off.plans[0].objective_value < best.objective_value


def test_recompute_constraint_and_switch_keep_partial_plans_out() -> None:
    """Checks: constraints.recompute without 'full' or partial_recompute false give no partial
    candidate; 'full' alone still does."""
    for cons in ({"recompute": ["none", "selective"]}, {"partial_recompute": False}):
        r = search(_with(cons))
        assert all(p.plan.recompute_num_layers is None for p in r.plans), cons
    r = search(_with({"recompute": ["full"]}))
    assert r.plans[0].plan.recompute_num_layers == 16


def test_a_framework_that_cannot_launch_it_never_gets_it() -> None:
    """Checks: constraints.framework torchtitan (whose emitter refuses recompute_num_layers)
    returns no partial plan (the plain full-recompute one instead); Megatron's emitter
    (--recompute-method block) does not refuse the partial winner."""
    from runtime.launch import refusals
    from service.launch_check import framework_refusals

    r = search(_with({"framework": "torchtitan"}), launchable=framework_refusals)
    assert r.plans and all(p.plan.recompute_num_layers is None for p in r.plans)
    assert r.plans[0].plan.recompute == "full"
    best = search(TIGHT).plans[0].plan
    request = {k: TIGHT[k] for k in ("model", "training", "cluster")}
    assert refusals("megatron", {**request, "plan": best.model_copy(
        update={"zero_stage": 1}).model_dump(mode="json")}) == []


def test_partial_candidates_only_where_only_full_recompute_fits() -> None:
    """Checks: the partial copies are of fitting full-recompute plans whose no-recompute twin
    does not fit, at distinct N from 1 to one fewer than the largest chunk; with room for no
    recompute (ZeRO-3 over 16 GPUs, micro-batches of 1, 95 %) there are none."""
    lean = {"micro_batch_size": 1, "dp": 16, "zero_stage": 3}
    for frac, fixed, want_any in ((0.3, {}, True), (0.95, lean, False)):
        req = SearchRequest.model_validate(body(constraints={"max_memory_fraction": frac,
                                                             "fixed": fixed}))
        pool = req.cluster.pools[0]
        cands = enumerate_pool(req.model, req.training, pool, req.constraints)
        bulk = evaluate_bulk(req.model, req.training, pool, cands)
        fit = bulk.fits & (bulk.peak_bytes <= pool.gpu_type.memory_bytes * frac)
        extra = partial_recompute_candidates(req.model, cands, fit, req.constraints)
        assert (len(extra) > 0) == want_any, frac
        if not len(extra):
            continue
        assert np.all(extra.recompute == 2) and np.all(extra.rc_layers >= 1)
        chunk = np.ceil(np.ceil(32 / extra.pp) / extra.v)
        assert np.all(extra.rc_layers < chunk)
        assert evaluate_bulk(req.model, req.training, pool, extra).valid.all()
        # each copy's twin without recompute does not fit
        none = {tuple(int(getattr(cands, f)[i]) for f in ("tp", "pp", "dp", "cp", "ep", "mbs",
                                                          "v", "schedule", "sp", "zero"))
                for i in np.flatnonzero(fit & (cands.recompute == 0))}
        for i in range(len(extra)):
            key = tuple(int(getattr(extra, f)[i]) for f in ("tp", "pp", "dp", "cp", "ep", "mbs",
                                                             "v", "schedule", "sp", "zero"))
            assert key not in none
