"""``constraints.framework``: every plan a search returns renders for that framework without a
refusal (property test over random jobs), the constraint defaults to ``training.framework``,
and it changes the answer where the unconstrained best plan cannot be launched."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import solver
from costmodel.specs.request import EstimateRequest
from runtime.launch import FRAMEWORK_FORMATS, refusals, render
from service.launch_check import framework_refusals

ROOT = Path(__file__).resolve().parents[2]
FRAMEWORKS = ("megatron", "torchtitan", "deepspeed", "fsdp")


def _job(model: str, gpus_per_node: int, nodes: int, batch: int, seq: int) -> dict[str, Any]:
    return {"model": {"preset": model},
            "training": {"global_batch_size": batch, "seq_len": seq},
            "cluster": {"pools": [{"name": "p", "gpu": "H100-SXM-80GB",
                                   "gpus_per_node": gpus_per_node, "nodes": nodes,
                                   "price_per_gpu_hour": 2.0}]},
            "top_k": 3, "time_limit_s": 10}


def _renders(body: dict[str, Any], framework: str, plan: Any) -> list[str]:
    req = EstimateRequest(model=body["model"], training=body["training"],
                          cluster=body["cluster"], plan=plan)
    found = refusals(framework, req)
    if not found:  # and the emitter itself renders it
        render(FRAMEWORK_FORMATS[framework], req)
    return found


@settings(max_examples=12, deadline=None)
@given(framework=st.sampled_from(FRAMEWORKS),
       model=st.sampled_from(["llama3-8b", "mistral-7b", "mixtral-8x7b", "llama3-70b"]),
       nodes=st.sampled_from([1, 2, 4]), batch=st.sampled_from([32, 128, 512]),
       seq=st.sampled_from([2048, 8192]), via_training=st.booleans())
def test_every_plan_returned_launches_on_the_framework(
        framework: str, model: str, nodes: int, batch: int, seq: int,
        via_training: bool) -> None:
    body = _job(model, 8, nodes, batch, seq)
    if via_training:  # training.framework is the default constraint
        body["training"]["framework"] = framework
    else:
        body["constraints"] = {"framework": framework}
    result = solver.search(body, launchable=framework_refusals)
    for ranked in result.plans:
        assert _renders(body, framework, ranked.plan) == [], ranked.plan
        for v in ranked.variants:  # listed as alternatives to launch: the same rule holds
            assert _renders(body, framework, v.plan) == [], v.plan
    for best in result.best_per_pool:
        assert _renders(body, framework, best.plan) == []
    for point in result.pareto:
        assert _renders(body, framework, point.plan) == [], point.plan


def test_the_variants_of_a_megatron_plan_are_plans_megatron_runs() -> None:
    """The README's mixed-pool example for Megatron-LM: its plans' variants (other schedules
    of the same layout) listed InterleavedZeroBubble, ZBVZeroBubble and DualPipeV, which
    Megatron-LM does not have; now the search never simulates a plan the framework refuses,
    so none is a variant either."""
    body = json.loads((ROOT / "examples" / "search-llama3-70b-mixed.json").read_text())
    body["training"]["framework"] = "megatron"
    result = solver.search(body, launchable=framework_refusals)
    variants = [v.plan for ranked in result.plans for v in ranked.variants]
    assert variants, "no variants: the test no longer covers them"
    assert all(_renders(body, "megatron", p) == [] for p in variants)


def test_the_constraint_changes_a_plan_the_framework_refuses() -> None:
    # Llama-3-70B on 32 H100 at 8k: the unconstrained best plan uses tensor parallelism,
    # which a plain FSDP trainer does not have
    body = _job("llama3-70b", 8, 4, 128, 8192)
    free = solver.search(body, launchable=framework_refusals)
    assert free.plans and _renders(body, "fsdp", free.plans[0].plan)
    fsdp = solver.search({**body, "constraints": {"framework": "fsdp"}},
                         launchable=framework_refusals)
    for ranked in fsdp.plans:
        p = ranked.plan
        assert (p.tp, p.pp, p.cp, p.ep) == (1, 1, 1, 1)
    if not fsdp.plans:
        assert fsdp.optimality.status == "infeasible"


def test_a_framework_constraint_without_a_launch_check_is_refused() -> None:
    body = {**_job("llama3-8b", 8, 1, 64, 2048), "constraints": {"framework": "deepspeed"}}
    with pytest.raises(RuntimeError, match="launch check"):
        solver.search(body)
