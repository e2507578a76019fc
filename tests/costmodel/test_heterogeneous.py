"""Heterogeneous pipelines: ``plan.stages`` places each pipeline stage on its own pool's GPUs
(as Metis, AMP and Sailor do), through the one estimate code path."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from costmodel import SpecError, estimate
from costmodel.bulk import Candidates
from costmodel.estimate import step_time
from costmodel.memory import GIB, usable_bytes
from costmodel.profile import default_profile
from costmodel.specs.gpus import get_gpu
from costmodel.specs.request import EstimateRequest, parse

H100 = {"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8, "nodes": 4,
        "price_per_gpu_hour": 2.49}
A100 = {"name": "a100", "gpu": "A100-SXM-80GB", "gpus_per_node": 8, "nodes": 4,
        "price_per_gpu_hour": 1.29}
A100_40 = {"name": "a100-40", "gpu": "A100-SXM-40GB", "gpus_per_node": 8, "nodes": 4,
           "price_per_gpu_hour": 0.99}
POOLS = [H100, A100, A100_40]
EVEN = [8, 8, 8, 8]  # llama3-8b: 32 layers


def _req(stages: list[tuple[str, int]] | None = None, *, pool: str | None = None,
         layers: list[int] | None = None, cluster: dict[str, Any] | None = None,
         precision: str = "bf16", **plan_kw: Any) -> dict[str, Any]:
    plan: dict[str, Any] = {"tp": 4, "pp": len(stages) if stages else 4, "dp": 2,
                            "schedule": "1F1B", "sequence_parallel": True,
                            "recompute": "selective"}
    if stages is not None:
        plan["stages"] = [{"pool": p, "layers": n} for p, n in stages]
    else:
        plan["pool"] = pool
        plan["layers_per_stage"] = layers
    plan.update(plan_kw)
    return {"model": {"preset": "llama3-8b"},
            "training": {"global_batch_size": 64, "seq_len": 4096, "precision": precision},
            "cluster": cluster or {"pools": POOLS}, "plan": plan}


def _mixed(layers: list[int] = EVEN, last: str = "a100", **kw: Any) -> dict[str, Any]:
    pools = ["h100"] * (len(layers) - 1) + [last]
    return _req(list(zip(pools, layers, strict=True)), **kw)


# (1) one pool through `stages` is the homogeneous plan
@pytest.mark.parametrize("schedule", ["1F1B", "GPipe", "InterleavedZeroBubble"])
@pytest.mark.parametrize("extra", [{}, {"zero_stage": 3}, {"activation_offload": 0.5},
                                   {"vocab_placement": "split"},
                                   {"sequence_parallel": False, "zero_stage": 0}])
def test_stages_on_one_pool_equal_the_homogeneous_plan(schedule: str,
                                                       extra: dict[str, Any]) -> None:
    layers = [7, 9, 9, 7]
    het = estimate(_req([("h100", n) for n in layers], schedule=schedule, **extra))
    hom = estimate(_req(pool="h100", layers=layers, schedule=schedule, **extra))
    a = het.model_dump(mode="json")
    b = hom.model_dump(mode="json")
    a.pop("plan")
    b.pop("plan")
    assert a == b  # exact: step time, breakdown, memory, cost, MFU
    assert het.gpu == "H100-SXM-80GB"


# (2) a slower last stage
def test_slower_last_stage_is_slower_and_uses_its_own_memory() -> None:
    hom = estimate(_req([("h100", n) for n in EVEN]))
    mixed = estimate(_mixed(last="a100"))
    f_h, f_m = hom.pipeline.stage_forward_s, mixed.pipeline.stage_forward_s
    assert f_m[:3] == f_h[:3]
    assert f_m[3] > f_h[3]
    assert mixed.pipeline.stage_backward_input_s[3] > hom.pipeline.stage_backward_input_s[3]
    assert mixed.pipeline.stage_backward_weight_s[3] > hom.pipeline.stage_backward_weight_s[3]
    assert mixed.step_time_s > hom.step_time_s
    assert step_time(**_parsed(_mixed(last="a100"))) == mixed.step_time_s

    small = estimate(_mixed(last="a100-40"))
    prof = default_profile()
    caps = [sm.capacity_gib for sm in small.memory.per_stage]
    h_cap = get_gpu("H100-SXM-80GB").memory_bytes
    a_cap = get_gpu("A100-SXM-40GB").memory_bytes
    assert caps == [h_cap / GIB] * 3 + [a_cap / GIB]
    last = small.memory.per_stage[3]
    assert last.usable_gib == usable_bytes(a_cap, prof) / GIB
    assert last.fits == (last.total_gib <= last.usable_gib)
    # the report's fraction is that of the rank nearest its own capacity
    assert small.memory.peak_fraction == max(sm.total_gib / sm.capacity_gib
                                             for sm in small.memory.per_stage)


def _parsed(body: dict[str, Any]) -> dict[str, Any]:
    req: EstimateRequest = parse(EstimateRequest, body)
    return {"model": req.model, "training": req.training, "cluster": req.cluster,
            "plan": req.plan}


# (3) rebalancing layers off the slow GPU (Metis's point)
def test_fewer_layers_on_the_slower_pool_beat_the_even_split() -> None:
    even = estimate(_mixed(EVEN))
    rebalanced = estimate(_mixed([9, 9, 9, 5]))
    assert rebalanced.step_time_s < even.step_time_s
    assert rebalanced.pipeline.layers_per_stage == [9, 9, 9, 5]


# (4) cost and GPU accounting
def test_cost_is_the_sum_over_stages_of_gpus_times_price() -> None:
    e = estimate(_mixed(last="a100"))
    per_stage = 4 * 1 * 2  # tp·cp·dp
    assert e.num_gpus == 4 * per_stage
    assert e.cost_per_hour == pytest.approx(3 * per_stage * 2.49 + per_stage * 1.29, rel=1e-12)
    assert e.gpu == "H100-SXM-80GB+A100-SXM-80GB"
    tps = e.tokens_per_s
    assert e.cost_per_million_tokens == pytest.approx(e.cost_per_hour / 3600 / tps * 1e6)
    # MFU against the GPU-count-weighted mean peak of the stages' GPUs
    peaks = [get_gpu(g).peak_flops("bf16") for g in ["H100-SXM-80GB"] * 3 + ["A100-SXM-80GB"]]
    mean_peak = float(np.mean(peaks))
    assert e.mfu == pytest.approx(e.model_flops_per_step / (e.step_time_s * e.num_gpus
                                                            * mean_peak), rel=1e-12)


# (5) cross-pool send/recv
def test_cross_pool_p2p_uses_inter_pool_bandwidth() -> None:
    def p2p(gbps: float | None, **pool_kw: Any) -> list[float]:
        pools = [{**H100, **pool_kw}, A100]
        body = _mixed(cluster={"pools": pools, "inter_pool_Gbps": gbps})
        return estimate(body).pipeline.p2p_s

    fast, slow = p2p(400.0), p2p(25.0)
    assert slow[2] > fast[2]  # the h100 → a100 boundary
    assert slow[:2] == fast[:2]  # boundaries inside the h100 pool are unchanged
    # null = the slower of the two pools' NIC rates
    assert p2p(None, inter_node_Gbps=50.0)[2] == p2p(50.0, inter_node_Gbps=50.0)[2]
    assert p2p(None, inter_node_Gbps=50.0)[2] > p2p(400.0, inter_node_Gbps=50.0)[2]


# (6) check_plan rules, each naming its field
def _fields(body: dict[str, Any]) -> list[str]:
    with pytest.raises(SpecError) as exc:
        estimate(body)
    return [p.field for p in exc.value.problems]


def test_unknown_stage_pool_names_the_stage() -> None:
    assert "plan.stages.1.pool" in _fields(_req([("h100", 16), ("nope", 16)]))


def test_stage_layers_must_sum_to_the_model() -> None:
    assert "plan.stages" in _fields(_req([("h100", 16), ("a100", 15)]))


def test_pp_must_equal_the_number_of_stages() -> None:
    assert "plan.pp" in _fields(_req([("h100", 16), ("a100", 16)], pp=4))


def test_each_pool_needs_gpus_for_its_stages() -> None:
    small = {**A100, "nodes": 1}  # 8 GPUs; each stage needs tp·cp·dp = 8
    body = _req([("h100", 8), ("a100", 8), ("a100", 8), ("h100", 8)],
                cluster={"pools": [H100, small]})
    assert "plan.stages" in _fields(body)
    ok = _req([("h100", 8), ("a100", 8), ("h100", 8), ("h100", 8)],
              cluster={"pools": [H100, small]})
    assert estimate(ok).num_gpus == 32


def test_precision_must_be_supported_by_every_pool() -> None:
    assert "training.precision" in _fields(_mixed(precision="fp8"))
    assert estimate(_req([("h100", n) for n in EVEN], precision="fp8")).fits in (True, False)


def test_tp_fits_in_a_node_of_every_pool() -> None:
    four = {**A100, "gpus_per_node": 4, "nodes": 8}
    assert "plan.tp" in _fields(_mixed(cluster={"pools": [H100, four]}, tp=8, dp=1))


def test_one_stage_per_rank_and_a_supported_schedule() -> None:
    assert "plan.virtual_stages" in _fields(_mixed(schedule="Interleaved1F1B",
                                                   virtual_stages=2))
    assert "plan.schedule" in _fields(_mixed(schedule="ZBVZeroBubble", virtual_stages=2))
    assert "plan.schedule" in _fields(_mixed(schedule="DualPipeV", virtual_stages=2))


# (7) the bulk path is untouched: its candidates are homogeneous plans
def test_bulk_candidates_are_homogeneous() -> None:
    grid = Candidates.grid(tp=[2, 4], pp=[1, 2], dp=[1, 2], mbs=[1], v=[1],
                           schedule=["1F1B"], recompute=["selective"], sp=[True], zero=[1])
    assert all(grid.plan(i).stages is None for i in range(len(grid)))


# every per-stage and per-rank quantity is its own pool's
@pytest.mark.parametrize("extra", [{}, {"zero_stage": 3}, {"activation_offload": 0.5},
                                   {"vocab_placement": "split"}, {"zero_stage": 0}])
def test_each_stage_and_rank_is_computed_on_its_own_pool(extra: dict[str, Any]) -> None:
    from costmodel.estimate import _context, _Evaluation

    slow_net = {**A100_40, "inter_node_Gbps": 50.0}
    cluster = {"pools": [H100, slow_net]}
    mixed = _mixed(last="a100-40", cluster=cluster, **extra)
    all_h = _req([("h100", n) for n in EVEN], cluster=cluster, **extra)
    all_a = _req([("a100-40", n) for n in EVEN], cluster=cluster, **extra)
    em, eh, ea = estimate(mixed), estimate(all_h), estimate(all_a)
    for attr in ("stage_forward_s", "stage_backward_input_s", "stage_backward_weight_s"):
        m, h, a = (getattr(e.pipeline, attr) for e in (em, eh, ea))
        assert m[:3] == h[:3]
        assert m[3] == a[3]
    ms, hs, as_ = (e.memory.per_stage for e in (em, eh, ea))
    assert [x.model_dump() for x in ms[:3]] == [x.model_dump() for x in hs[:3]]
    assert ms[3].model_dump() == as_[3].model_dump()

    def dp_opt(body: dict[str, Any]) -> tuple[np.ndarray, ...]:
        p = _parsed(body)
        ev = _Evaluation(_context(p["model"], p["training"], p["cluster"], p["plan"], None))
        st = ev.step()
        return st.dp_total, st.dp_exposed, st.opt

    for m, h, a in zip(dp_opt(mixed), dp_opt(all_h), dp_opt(all_a), strict=True):
        assert list(m[:3]) == list(h[:3])
        assert m[3] == a[3]
