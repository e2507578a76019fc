"""A tensor-parallel degree per pipeline stage (``plan.stages.N.tp``, as Metis and AMP allow):
each stage's shard, parameters, DP groups and memory use its own tp; GPUs and cost sum
tp_s·cp·dp over the stages; p2p between stages of different tp reshards."""

from __future__ import annotations

from typing import Any

import pytest

from costmodel import SpecError, estimate
from costmodel.layer_cost import ELEM
from costmodel.ops import Device, collective_time
from costmodel.profile import default_profile
from costmodel.specs.request import EstimateRequest, parse

H100 = {"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8, "nodes": 4,
        "price_per_gpu_hour": 2.49}
A100 = {"name": "a100", "gpu": "A100-SXM-80GB", "gpus_per_node": 8, "nodes": 4,
        "price_per_gpu_hour": 1.29}
SEQ, HIDDEN = 4096, 4096  # llama3-8b


def _req(stages: list[tuple[str, int, int | None]], *, cluster: dict[str, Any] | None = None,
         **plan_kw: Any) -> dict[str, Any]:
    plan: dict[str, Any] = {"tp": 4, "pp": len(stages), "dp": 2, "schedule": "1F1B",
                            "sequence_parallel": True, "recompute": "selective"}
    plan["stages"] = [{"pool": p, "layers": n} | ({} if t is None else {"tp": t})
                      for p, n, t in stages]
    plan.update(plan_kw)
    return {"model": {"preset": "llama3-8b"},
            "training": {"global_batch_size": 64, "seq_len": SEQ, "precision": "bf16"},
            "cluster": cluster or {"pools": [H100, A100]}, "plan": plan}


def _numbers(body: dict[str, Any]) -> dict[str, Any]:
    d = estimate(body).model_dump(mode="json")
    d.pop("plan")
    return d


MIXED = [("h100", 8), ("h100", 8), ("h100", 8), ("a100", 8)]


# (1) every stage at the plan's tp is the plan without per-stage tp, exactly
@pytest.mark.parametrize("pools", [MIXED, [("h100", 8)] * 4, [("a100", 10), ("h100", 22)]])
@pytest.mark.parametrize("extra", [{}, {"zero_stage": 3}, {"activation_offload": 0.5},
                                   {"vocab_placement": "split"},
                                   {"sequence_parallel": False, "zero_stage": 0},
                                   {"schedule": "GPipe", "tp": 2}])
def test_stage_tp_equal_to_plan_tp_changes_nothing(pools: list[tuple[str, int]],
                                                   extra: dict[str, Any]) -> None:
    tp = extra.get("tp", 4)
    plain = _numbers(_req([(p, n, None) for p, n in pools], **extra))
    explicit = _numbers(_req([(p, n, tp) for p, n in pools], **extra))
    assert explicit == plain


# (2) a wider A100 stage: faster and lighter per GPU, more GPUs and cost
def test_wider_a100_stage_is_faster_lighter_and_costs_its_gpus() -> None:
    base = estimate(_req([(p, n, None) for p, n in MIXED]))
    wide = estimate(_req([(p, n, 8 if p == "a100" else None) for p, n in MIXED]))
    bp, wp = base.pipeline, wide.pipeline
    assert wp.stage_forward_s[3] < bp.stage_forward_s[3]
    assert wp.stage_backward_input_s[3] < bp.stage_backward_input_s[3]
    assert wp.stage_forward_s[:3] == bp.stage_forward_s[:3]  # H100 stages untouched
    bm, wm = base.memory.per_stage, wide.memory.per_stage
    assert wm[3].total_gib < bm[3].total_gib
    assert wm[3].weights_gib == pytest.approx(bm[3].weights_gib / 2)  # params / tp_s
    assert [sm.total_gib for sm in wm[:3]] == [sm.total_gib for sm in bm[:3]]
    dp, cp = 2, 1
    assert base.num_gpus == 4 * 4 * dp * cp
    assert wide.num_gpus == (3 * 4 + 8) * dp * cp == 40
    assert wide.cost_per_hour == pytest.approx(dp * cp * (3 * 4 * 2.49 + 8 * 1.29))
    assert wide.cost_per_hour > base.cost_per_hour
    assert wide.plan.num_gpus == 40
    # MFU against the GPU-count-weighted peak: 24 H100s and 16 A100s
    prof = default_profile()
    parsed = parse(EstimateRequest, _req([(p, n, None) for p, n in MIXED]))
    peaks = {name: Device.from_pool(parsed.cluster.pool(name), "bf16", prof).peak
             for name in ("h100", "a100")}
    peak = (24 * peaks["h100"] + 16 * peaks["a100"]) / 40
    assert wide.mfu == pytest.approx(wide.model_flops_per_step
                                     / (wide.step_time_s * 40 * peak))


# (3) p2p between stages of different tp: a send of T·h·2/min(tp_a, tp_b) per GPU pair, plus
# an all-gather over the receiver's tp when the receiver's tp is the smaller
def _devices() -> dict[str, Device]:
    parsed = parse(EstimateRequest, _req([("h100", 32, None)]))
    prof = default_profile()
    return {n: Device.from_pool(parsed.cluster.pool(n), "bf16", prof) for n in ("h100", "a100")}


def _pool_nics() -> tuple[float, float]:
    parsed = parse(EstimateRequest, _req([("h100", 32, None)]))
    pools = parsed.cluster
    return (pools.pool("h100").nic_GBps * 1e9, pools.pool("a100").nic_GBps * 1e9)


def test_p2p_to_a_wider_stage_is_one_send_of_the_narrower_shard() -> None:
    est = estimate(_req([("h100", 16, 4), ("a100", 16, 8)]))
    dev = _devices()["h100"]
    nic = min(_pool_nics())
    full = SEQ * HIDDEN * ELEM
    want = float(collective_time("send_recv", 2.0, full / 4, 1.0, dev, nic=nic))
    assert est.pipeline.p2p_s == [pytest.approx(want, rel=1e-12)]


def test_p2p_to_a_narrower_stage_adds_the_receivers_all_gather() -> None:
    est = estimate(_req([("a100", 16, 8), ("h100", 16, 4)]))
    devs = _devices()
    nic = min(_pool_nics())
    full = SEQ * HIDDEN * ELEM
    send = float(collective_time("send_recv", 2.0, full / 4, 1.0, devs["a100"], nic=nic))
    gather = float(collective_time("all_gather", 4, full, 4, devs["h100"]))
    assert gather > 0
    assert est.pipeline.p2p_s == [pytest.approx(send + gather, rel=1e-12)]
    # and it is not the equal-tp charge (a send of T·h·2/tp, no gather with SP)
    same = estimate(_req([("a100", 16, 4), ("h100", 16, 4)]))
    assert est.pipeline.p2p_s[0] > same.pipeline.p2p_s[0]


def test_p2p_within_one_pool_uses_nvlink_when_both_stages_share_a_node() -> None:
    # tp 2 and tp 4 with dp 1: stage 0 on GPUs 0-1, stage 1 on GPUs 2-5 of node 0
    est = estimate(_req([("h100", 16, 2), ("h100", 16, 4)], dp=1))
    dev = _devices()["h100"]
    full = SEQ * HIDDEN * ELEM
    want = float(collective_time("send_recv", 2.0, full / 2, 2.0, dev))
    assert est.pipeline.p2p_s == [pytest.approx(want, rel=1e-12)]


# (4) check_plan rules of plan.stages.N.tp
def _problems(body: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as exc:
        estimate(body)
    return [(p.field, p.rule) for p in exc.value.problems]


def test_stage_tp_must_divide_heads_kv_heads_and_ffn() -> None:
    probs = _problems(_req([("h100", 16, None), ("a100", 16, 3)], sequence_parallel=False))
    rules = [r for f, r in probs if f == "plan.stages.1.tp"]
    assert any("num_attention_heads" in r for r in rules)
    assert any("num_key_value_heads" in r for r in rules)
    assert any("intermediate_size" in r for r in rules)


def test_stage_tp_fits_in_a_node_of_its_pool() -> None:
    probs = _problems(_req([("h100", 16, None), ("a100", 16, 16)], dp=1))
    assert any(f == "plan.stages.1.tp" and "gpus_per_node" in r for f, r in probs)


def test_sequence_parallel_needs_every_stage_tp_above_one() -> None:
    probs = _problems(_req([("h100", 16, None), ("a100", 16, 1)]))
    assert any(f == "plan.stages.1.tp" and "sequence parallelism" in r for f, r in probs)
    # without sequence parallelism tp 1 is fine
    estimate(_req([("h100", 16, None), ("a100", 16, 1)], sequence_parallel=False))


def test_pool_needs_gpus_for_the_sum_of_its_stages_tp() -> None:
    one_node = A100 | {"nodes": 1}
    cluster = {"pools": [H100, one_node]}
    # tp_s 2 and 4 (the plan's) with dp 2: (2 + 4)·2 = 12 GPUs > the pool's 8
    probs = _problems(_req([("h100", 16, None), ("a100", 8, 2), ("a100", 8, None)],
                           cluster=cluster, dp=2))
    assert any(f == "plan.stages" and "tp_s" in r and "'a100'" in r for f, r in probs)
    # (2 + 2)·2 = 8 GPUs fit its one node
    estimate(_req([("h100", 16, None), ("a100", 8, 2), ("a100", 8, 2)], cluster=cluster))
