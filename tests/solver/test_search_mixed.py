"""The search builds pipelines whose stages run on different GPU types (Metis/AMP-style)."""

from __future__ import annotations

from typing import Any

import solver

TWO_POOLS: dict[str, Any] = {
    "model": {"preset": "llama3-70b"},
    "training": {"global_batch_size": 64, "seq_len": 4096},
    "cluster": {"pools": [
        {"name": "h100", "gpu": "H100", "nodes": 2, "price_per_gpu_hour": 2.5},
        {"name": "a100", "gpu": "A100-SXM-80GB", "nodes": 2, "price_per_gpu_hour": 1.3}]},
    "top_k": 2, "time_limit_s": 20,
}


def test_a_job_that_fits_only_across_pools_gets_a_mixed_pipeline() -> None:
    """Llama-3-70B does not fit on 16 GPUs of one pool (18 B/param of state with nothing to
    shard over), but a pipeline over both pools' 32 GPUs does: the search returns it (status
    feasible: mixed plans carry no certificate), it fits on every rank's own GPU, and the
    faster H100 stages carry more layers than the A100 ones."""
    result = solver.search(TWO_POOLS)
    assert result.optimality.status == "feasible"
    best = result.plans[0]
    stages = best.plan.stages
    assert stages is not None and {s.pool for s in stages} == {"h100", "a100"}
    assert sum(s.layers for s in stages) == 80
    assert best.estimate.fits
    assert all(sm.total_gib <= 0.9 * sm.capacity_gib for sm in best.estimate.memory.per_stage)
    # at equal tensor parallelism the faster H100 stages carry more layers than A100 ones
    tps = best.plan.stage_tps
    for t in set(tps):
        h = [s.layers for s, u in zip(stages, tps, strict=True) if s.pool == "h100" and u == t]
        a = [s.layers for s, u in zip(stages, tps, strict=True) if s.pool == "a100" and u == t]
        if h and a:
            assert min(h) > max(a)
    assert best.estimate.gpu == "A100-SXM-80GB+H100-SXM-80GB" or "+" in best.estimate.gpu
    assert "pools" in best.explanation.binding_constraint


def test_single_pool_requests_never_get_mixed_plans() -> None:
    req = {**TWO_POOLS, "cluster": {"pools": [TWO_POOLS["cluster"]["pools"][0]]},
           "model": {"preset": "llama3-8b"}}
    result = solver.search(req)
    assert result.plans and all(p.plan.stages is None for p in result.plans)
