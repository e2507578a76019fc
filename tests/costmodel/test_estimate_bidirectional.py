"""Estimates of plans with Chimera and BitPipe (two model replicas per pipeline)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import costmodel
from costmodel.data_parallel import grad_comm_bytes
from costmodel.errors import SpecError
from costmodel.estimate import _context, _Evaluation, pipeline_simulation
from costmodel.ops import collective_time
from costmodel.pipeline.simulator import simulate_named
from costmodel.specs.request import EstimateRequest


def request(schedule: str, v: int, **plan: Any) -> dict[str, Any]:
    base = {"tp": 8, "pp": 4, "dp": 2, "micro_batch_size": 1, "schedule": schedule,
            "virtual_stages": v, "recompute": "selective", "sequence_parallel": True,
            "zero_stage": 1}
    base.update(plan)
    return {"model": {"preset": "llama3-70b"},
            "training": {"global_batch_size": 64, "seq_len": 4096},
            "cluster": {"pools": [{"name": "h100", "gpu": "H100", "nodes": 16,
                                   "price_per_gpu_hour": 2.0}]},
            "plan": base}


def evaluation(req: dict[str, Any]) -> _Evaluation:
    r = EstimateRequest.model_validate(req)
    return _Evaluation(_context(r.model, r.training, r.cluster, r.plan, None))


@pytest.mark.parametrize(("schedule", "v"), [("Chimera", 1), ("BitPipe", 2)])
def test_each_rank_holds_both_replicas_stages(schedule: str, v: int) -> None:
    """Weights, gradients and optimizer states of rank r are those of its stage copies of both
    replicas: the single-replica plan's ranks r and pp−1−r together (same layer split)."""
    pp = 4
    bi = costmodel.estimate(request(schedule, v))
    single = costmodel.estimate(request("1F1B" if v == 1 else "ZBVZeroBubble", v))
    for r in range(pp):
        a, b, c = bi.memory.per_stage[r], single.memory.per_stage[r], \
            single.memory.per_stage[pp - 1 - r]
        for field in ("weights_gib", "grads_gib", "optimizer_gib"):
            assert getattr(a, field) == pytest.approx(getattr(b, field) + getattr(c, field))
        assert a.layers == b.layers + c.layers
        assert len(a.stages) == 2 * v


@pytest.mark.parametrize(("schedule", "v"), [("Chimera", 1), ("BitPipe", 2)])
def test_inflight_activations_come_from_the_simulation(schedule: str, v: int) -> None:
    req = request(schedule, v)
    est = costmodel.estimate(req)
    sim = pipeline_simulation(EstimateRequest.model_validate(req))
    assert [s.inflight_microbatches for s in est.memory.per_stage] == \
        sim.peak_inflight.astype(float).tolist()
    assert sim.replicas == 2
    # the estimate's makespan is the simulation of its own stage and p2p times
    p = est.pipeline
    again = simulate_named(schedule, 4, p.num_microbatches, v, np.array(p.stage_forward_s),
                           np.array(p.stage_backward_input_s),
                           np.array(p.stage_backward_weight_s), np.array(p.p2p_s))
    assert again.step_time == pytest.approx(p.makespan_s)
    assert len(p.p2p_s) == 2 * 4 * v - 1  # boundaries of both replicas' stages


@pytest.mark.parametrize(("schedule", "v"), [("Chimera", 1), ("BitPipe", 2)])
def test_replica_pair_allreduce(schedule: str, v: int) -> None:
    """The two copies of each stage (ranks r and pp−1−r) all-reduce their gradients: one
    all-reduce of the rank's gradient bytes over 2 GPUs (Chimera §3.2), added to the tail;
    single-replica schedules have none."""
    ev = evaluation(request(schedule, v))
    st = ev.step()
    pp = 4
    for r in range(pp):
        nbytes = sum(ev._rank_params(r)) * grad_comm_bytes("fp32")
        same = ev._rank_nodes(r) == ev._rank_nodes(pp - 1 - r)
        assert not same  # tp·cp·dp = 16 GPUs per rank: two nodes each
        expected = float(collective_time("all_reduce", 2.0, nbytes, 1.0, ev.c.dev))
        assert st.pair[r] == pytest.approx(expected)
        assert st.pair[r] > 0
    tail = st.dp_exposed + st.opt + st.pair
    assert st.step == pytest.approx(st.makespan + tail.max() + st.tied)
    assert np.all(evaluation(request("1F1B", 1)).step().pair == 0)
    est = costmodel.estimate(request(schedule, v))
    assert est.breakdown.dp_comm_exposed_s >= st.pair[st.crit]


def test_pair_inside_a_node_is_cheaper() -> None:
    """tp=2, dp=1: the 4 ranks' 8 GPUs share one node, so each pair talks over NVLink."""
    ev = evaluation(request("Chimera", 1, tp=2, dp=1, sequence_parallel=False))
    assert ev._rank_nodes(0) == ev._rank_nodes(3)
    pair = ev.step().pair
    nbytes = sum(ev._rank_params(0)) * grad_comm_bytes("fp32")
    inside = float(collective_time("all_reduce", 2.0, nbytes, 2.0, ev.c.dev))
    across = float(collective_time("all_reduce", 2.0, nbytes, 1.0, ev.c.dev))
    assert pair[0] == pytest.approx(inside)
    assert inside < across


@pytest.mark.parametrize(
    ("schedule", "v", "plan", "field", "fragment"),
    [
        ("Chimera", 1, {"pp": 5, "dp": 1}, "plan.pp", "even pp"),
        ("BitPipe", 2, {"pp": 1, "dp": 1}, "plan.pp", "even pp"),
        ("Chimera", 2, {}, "plan.virtual_stages", "virtual_stages must be 1"),
        ("BitPipe", 1, {}, "plan.virtual_stages", "virtual_stages must be 2"),
        ("Chimera", 1, {"micro_batch_size": 16},  # 64 / (2 × 16) = 2 micro-batches, pp = 4
         "training.global_batch_size", "multiple of pp"),
        ("BitPipe", 2, {"vocab_placement": "split"}, "plan.vocab_placement", "end_stages"),
    ],
)
def test_plan_rules(schedule: str, v: int, plan: dict[str, Any], field: str,
                    fragment: str) -> None:
    with pytest.raises(SpecError) as info:
        costmodel.estimate(request(schedule, v, **plan))
    hits = [p for p in info.value.problems if p.field == field]
    assert hits and fragment in hits[0].rule


def test_bidirectional_estimate_is_complete() -> None:
    for schedule, v in (("Chimera", 1), ("BitPipe", 2)):
        est = costmodel.estimate(request(schedule, v))
        assert est.plan.schedule == schedule
        assert est.pipeline.schedule == schedule
        assert 0 < est.mfu < 1
        assert est.breakdown.forward_s > 0
        peaks = [s.total_gib for s in est.memory.per_stage]
        assert est.memory.peak_gib == pytest.approx(max(peaks))
