"""solver.search: validity of every returned plan, constraints, objectives, infeasibility
explanations, time limit, determinism, explanations, Pareto front and the result's JSON.

Each test names what it checks; the numbers come from the cost model (``costmodel.estimate``)
and the rules from ``costmodel.specs.request.check_plan`` (Megatron / torchtitan's rules).
Defects these tests found (MoE memory in bulk, Pareto points that did not fit, a timed-out
search reporting infeasible, unexplained empty pools) are fixed; their tests stay.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costmodel.errors import SpecError
from costmodel.estimate import evaluate
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.request import check_plan
from solver import SearchResult, search
from solver.request import DEFAULT_MAX_MEMORY_FRACTION, SearchRequest
from solver.results import RankedPlan

REL = 1e-9


def pool(name: str, gpu: str, nodes: int = 1, gpus_per_node: int = 8,
         price: float = 2.0) -> dict[str, Any]:
    return {"name": name, "gpu": gpu, "gpus_per_node": gpus_per_node, "nodes": nodes,
            "price_per_gpu_hour": price}


def body(preset: str = "llama3-8b", pools: list[dict[str, Any]] | None = None,
         gbs: int = 64, seq: int = 4096, **kw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "model": {"preset": preset},
        "training": {"global_batch_size": gbs, "seq_len": seq},
        "cluster": {"pools": pools or [pool("h100", "H100-SXM-80GB", nodes=2)]},
        "top_k": 5, "time_limit_s": 20.0,
    }
    out.update(kw)
    return out


def objective_of(req: SearchRequest, tokens_per_s: float, cost_per_hour: float) -> float:
    """The objective from its definition (ARCHITECTURE.md)."""
    name = req.objective
    if name == "throughput":
        return tokens_per_s
    if name == "cost":
        return cost_per_hour / 3600.0 / tokens_per_s * 1e6
    assert req.training.train_tokens is not None
    seconds = req.training.train_tokens / tokens_per_s
    return seconds if name == "time_to_train" else seconds / 3600.0 * cost_per_hour


def assert_ranked(req: SearchRequest, plans: list[RankedPlan]) -> None:
    """Ranks 1..n, each no better than the one before (a search never returns a plan better
    than its rank says)."""
    assert [p.rank for p in plans] == list(range(1, len(plans) + 1))
    for a, b in itertools.pairwise(plans):
        if req.objective == "throughput":
            assert a.objective_value >= b.objective_value * (1 - REL)
        else:
            assert a.objective_value <= b.objective_value * (1 + REL)


def assert_valid_plan(req: SearchRequest, rp: RankedPlan) -> None:
    """Every rule a returned plan must obey, with the cost model's numbers."""
    plan, est = rp.plan, rp.estimate
    model, training, cons = req.model, req.training, req.constraints
    # check_plan: all of Megatron / torchtitan's cross-field rules at once
    p = check_plan(model, training, req.cluster, plan)
    assert plan.pool == p.name
    # degrees multiply to the GPU count, within the pool and max_gpus
    gpus = plan.tp * plan.pp * plan.dp * plan.cp
    if plan.stages:  # a pipeline across pools: each pool holds the stages placed on it
        tps = plan.stage_tps
        gpus = sum(t * plan.dp * plan.cp for t in tps)
        for name in {s.pool for s in plan.stages}:
            used = sum(t * plan.dp * plan.cp
                       for s, t in zip(plan.stages, tps, strict=True) if s.pool == name)
            assert used <= req.cluster.pool(name).num_gpus
        assert est.num_gpus == gpus
    else:
        assert est.num_gpus == gpus <= p.num_gpus
    if cons.max_gpus is not None:
        assert gpus <= cons.max_gpus
    assert plan.tp <= p.gpus_per_node  # tensor parallelism stays inside a node
    # global batch = dp × micro-batch × micro-batches (torchtitan: n_microbatches =
    # local_batch / microbatch, exact)
    assert training.global_batch_size % (plan.dp * plan.micro_batch_size) == 0
    local_batch = training.global_batch_size // plan.dp
    assert local_batch % plan.micro_batch_size == 0
    assert est.pipeline.num_microbatches == local_batch // plan.micro_batch_size
    # Megatron: --sequence-parallel needs tp > 1; heads (and KV heads) split over tp
    assert not plan.sequence_parallel or plan.tp > 1
    assert model.num_attention_heads % plan.tp == 0
    assert model.kv_heads % plan.tp == 0 or plan.tp % model.kv_heads == 0
    assert model.intermediate_size % plan.tp == 0
    if model.is_moe:
        assert model.num_local_experts is not None
        assert model.num_local_experts % plan.ep == 0 and (plan.dp * plan.cp) % plan.ep == 0
    else:
        assert plan.ep == 1
    # memory: fits the device and the max_memory_fraction ceiling on every pipeline rank
    cap_gib = p.gpu_type.memory_gib * cons.max_memory_fraction
    assert est.fits and all(s.fits for s in est.memory.per_stage)
    assert est.memory.peak_gib <= cap_gib + 1e-9
    assert max(s.total_gib for s in est.memory.per_stage) == pytest.approx(est.memory.peak_gib)
    # budget
    if plan.stages:
        assert est.cost_per_hour == pytest.approx(sum(
            t * plan.dp * plan.cp * req.cluster.pool(s.pool).price_per_gpu_hour
            for s, t in zip(plan.stages, plan.stage_tps, strict=True)))
    else:
        assert est.cost_per_hour == pytest.approx(p.price_per_gpu_hour * gpus)
    if cons.max_cost_per_hour is not None:
        assert est.cost_per_hour <= cons.max_cost_per_hour
    # constraints on the plan's shape
    for key, value in cons.fixed.items():
        assert getattr(plan, key) == value
    if cons.schedules and plan.pp > 1:  # plans without pipelining have no schedule to pick
        assert plan.schedule in cons.schedules
    if cons.recompute:
        assert plan.recompute in cons.recompute
    if cons.pools:
        assert plan.pool in cons.pools
    assert plan.pp <= cons.max_pp and plan.micro_batch_size <= cons.max_micro_batch_size
    # the value is the objective of the estimate it carries, and the estimate is the cost
    # model's for this very plan
    assert rp.objective_value == pytest.approx(
        objective_of(req, est.tokens_per_s, est.cost_per_hour), rel=REL)
    again = evaluate(model, training, req.cluster, plan)
    assert again.step_time_s == pytest.approx(est.step_time_s, rel=REL)


# --------------------------------------------------------------------------------------------
# Every returned plan is valid (property)
# --------------------------------------------------------------------------------------------

PRESETS = ("llama3-8b", "mistral-7b", "mixtral-8x7b", "megatron-gpt-1.7b")
POOL_GPUS = ("H100-SXM-80GB", "A100-SXM-80GB", "A100-SXM-40GB", "L4-24GB", "H200-SXM-141GB",
             "MI300X-192GB")


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    n_pools = draw(st.integers(1, 2))
    pools = [pool(f"p{i}", draw(st.sampled_from(POOL_GPUS)), nodes=draw(st.sampled_from([1, 2])),
                  gpus_per_node=draw(st.sampled_from([4, 8])),
                  price=draw(st.sampled_from([1.0, 2.49]))) for i in range(n_pools)]
    cons: dict[str, Any] = {
        "max_memory_fraction": draw(st.sampled_from([0.6, 0.8, 0.9, 1.0]))}
    if draw(st.booleans()):
        cons["max_gpus"] = draw(st.sampled_from([4, 8, 12]))
    if draw(st.booleans()):
        cons["schedules"] = draw(st.lists(st.sampled_from(
            ["GPipe", "1F1B", "Interleaved1F1B", "InterleavedZeroBubble", "ZBVZeroBubble",
             "DualPipeV"]), min_size=1, max_size=3, unique=True))
    if draw(st.booleans()):
        cons["recompute"] = draw(st.lists(st.sampled_from(["none", "selective", "full"]),
                                          min_size=1, max_size=2, unique=True))
    if draw(st.integers(0, 3)) == 0:
        cons["fixed"] = {draw(st.sampled_from(["tp", "pp", "micro_batch_size"])):
                         draw(st.sampled_from([1, 2, 4]))}
    if n_pools == 2 and draw(st.booleans()):
        cons["pools"] = ["p1"]
    if draw(st.integers(0, 3)) == 0:
        cons["max_cost_per_hour"] = draw(st.sampled_from([10.0, 40.0]))
    return body(draw(st.sampled_from(PRESETS)), pools,
                gbs=draw(st.sampled_from([8, 16, 32, 64, 128])),
                seq=draw(st.sampled_from([1024, 2048, 4096])),
                objective=draw(st.sampled_from(["throughput", "cost"])), top_k=3,
                time_limit_s=10.0, constraints=cons)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(b=requests())
def test_every_returned_plan_is_valid(b: dict[str, Any]) -> None:
    """Checks, for random requests over dense and MoE presets, pools and constraints: every
    plan passes check_plan; tp·pp·dp·cp = its GPUs ≤ the pool and max_gpus; the global batch
    divides by dp × micro-batch and the micro-batch count is local_batch / micro_batch
    (torchtitan); sequence_parallel only with tp > 1 and heads % tp == 0 (Megatron); memory
    fits under max_memory_fraction; every constraint holds; ranks are sorted; values are the
    objective of the carried estimate; Pareto points are valid plans of allowed pools."""
    req = SearchRequest.model_validate(b)
    result = search(req)
    assert len(result.plans) <= req.top_k
    assert_ranked(req, result.plans)
    for rp in result.plans:
        assert_valid_plan(req, rp)
    if result.plans:
        assert result.optimality.status in ("optimal", "feasible")
        assert result.infeasible_reason is None
    else:
        assert result.optimality.status == "infeasible" and result.infeasible_reason
    for q in result.pareto:
        p = check_plan(req.model, req.training, req.cluster, q.plan)
        assert q.gpus == q.plan.num_gpus <= p.num_gpus
        if req.constraints.pools:
            assert q.plan.pool in req.constraints.pools


# --------------------------------------------------------------------------------------------
# Constraints
# --------------------------------------------------------------------------------------------

TWO_POOLS = [pool("h100", "H100-SXM-80GB", nodes=2, price=2.49),
             pool("a100", "A100-SXM-80GB", nodes=2, price=1.29)]


def _pools_of(rp: Any) -> set[str]:
    """Every pool a plan's GPUs come from (a mixed pipeline spans several)."""
    return {s.pool for s in rp.plan.stages} if rp.plan.stages else {rp.plan.pool}


CONSTRAINT_CASES = [
    ({"fixed": {"tp": 8}}, lambda rp: rp.plan.tp == 8 and set(rp.plan.stage_tps) == {8}),
    ({"fixed": {"pp": 8, "micro_batch_size": 1}},
     lambda rp: rp.plan.pp == 8 and rp.plan.micro_batch_size == 1),
    ({"fixed": {"pp": 4}, "schedules": ["1F1B"]},
     lambda rp: rp.plan.pp == 4 and rp.plan.schedule == "1F1B"),
    ({"pools": ["a100"]}, lambda rp: _pools_of(rp) == {"a100"}),
    ({"max_gpus": 4}, lambda rp: rp.estimate.num_gpus <= 4),
    ({"max_cost_per_hour": 12.0}, lambda rp: rp.estimate.cost_per_hour <= 12.0),
    ({"recompute": ["full"]}, lambda rp: rp.plan.recompute == "full"),
]
CASE_IDS = ["fixed-tp8", "fixed-pp8-mbs1", "pp4-schedules-1F1B", "pools-a100", "max_gpus-4",
            "max_cost-12", "recompute-full"]


@pytest.mark.parametrize("constraints,check", CONSTRAINT_CASES, ids=CASE_IDS)
def test_constraints_are_honoured(constraints: dict[str, Any], check: Any) -> None:
    """Checks: each constraint holds on every ranked plan (and Pareto point), the search still
    finds plans, and they are valid."""
    req = SearchRequest.model_validate(body(pools=TWO_POOLS, constraints=constraints))
    result = search(req)
    assert result.optimality.status == "optimal"
    assert len(result.plans) == req.top_k
    for rp in result.plans:
        assert check(rp), rp.plan
        assert_valid_plan(req, rp)
    for q in result.pareto:
        if "pools" in constraints:
            assert q.plan.pool == "a100"
        if "max_gpus" in constraints:
            assert q.gpus <= 4
        if "max_cost_per_hour" in constraints:
            assert q.cost_per_hour <= 12.0


@pytest.mark.parametrize("constraints,check", CONSTRAINT_CASES, ids=CASE_IDS)
def test_constraint_cases_bind(constraints: dict[str, Any], check: Any) -> None:
    """Checks: each case of test_constraints_are_honoured binds — the optimum without that
    constraint (but with its fixed pp, for the schedule case) violates it — so the tests above
    are not vacuous."""
    relaxed = {"fixed": {"pp": 4}} if "schedules" in constraints else {}
    best = search(body(pools=TWO_POOLS, top_k=1, constraints=relaxed)).plans[0]
    assert not check(best), best.plan


def test_lower_max_memory_fraction_lowers_the_peak() -> None:
    """Checks: with max_memory_fraction 0.4 every plan's peak stays under 0.4 × 80 GiB, the
    best plan's peak is lower than with the default 0.9 (which the default plan exceeds), and
    the objective is no better (a smaller feasible set)."""
    loose = search(body(top_k=3))
    tight = search(body(top_k=3, constraints={"max_memory_fraction": 0.4}))
    assert loose.plans and tight.plans
    assert loose.plans[0].estimate.memory.peak_gib > 0.4 * 80
    for rp in loose.plans:
        assert rp.estimate.memory.peak_gib <= DEFAULT_MAX_MEMORY_FRACTION * 80 + 1e-9
    for rp in tight.plans:
        assert rp.estimate.memory.peak_gib <= 0.4 * 80 + 1e-9
    assert tight.plans[0].estimate.memory.peak_gib < loose.plans[0].estimate.memory.peak_gib
    if tight.plans[0].plan.layers_per_stage is None:
        assert tight.plans[0].objective_value <= loose.plans[0].objective_value * (1 + REL)


# --------------------------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------------------------


def test_cost_and_throughput_objectives_trade_off() -> None:
    """Checks: the cost winner's $ per million tokens ≤ the throughput winner's, and the
    throughput winner's tokens/s ≥ the cost winner's; each objective_value is that metric."""
    b = body(pools=TWO_POOLS, top_k=2)
    fast = search({**b, "objective": "throughput"}).plans[0]
    cheap = search({**b, "objective": "cost"}).plans[0]
    assert cheap.estimate.cost_per_million_tokens <= (
        fast.estimate.cost_per_million_tokens * (1 + REL))
    assert fast.estimate.tokens_per_s >= cheap.estimate.tokens_per_s * (1 - REL)
    assert fast.objective_value == pytest.approx(fast.estimate.tokens_per_s, rel=REL)
    assert cheap.objective_value == pytest.approx(cheap.estimate.cost_per_million_tokens,
                                                  rel=REL)


@pytest.mark.parametrize("objective", ["time_to_train", "cost_to_train"])
def test_to_train_objectives_need_train_tokens(objective: str) -> None:
    """Checks: time_to_train / cost_to_train without training.train_tokens is a SpecError that
    names the field training.train_tokens (the API's 422 / the CLI's exit 2)."""
    with pytest.raises(SpecError) as exc:
        search(body(objective=objective))
    assert "training.train_tokens" in [p.field for p in exc.value.problems]
    assert "training.train_tokens" in str(exc.value)


@pytest.mark.parametrize(("schedules", "says"), [
    (["Chimera"], "can be estimated"), (["1F1B", "BitPipe"], "BitPipe"),
    (["custom"], "list at least one")])
def test_schedules_the_search_cannot_walk_are_refused(schedules: list[str], says: str) -> None:
    """Checks: a schedules constraint naming only schedules the enumeration does not walk (the
    bidirectional ones; 'custom' alone, which is synthesized from named finalists) is a
    SpecError on constraints.schedules, not a silent search restricted to pp = 1."""
    b = body()
    b["constraints"] = {"schedules": schedules}
    with pytest.raises(SpecError) as exc:
        search(b)
    problems = exc.value.problems
    assert [p.field for p in problems] == ["constraints.schedules"]
    assert says in problems[0].rule


def test_time_and_cost_to_train_values() -> None:
    """Checks: time_to_train = train_tokens / tokens_per_s, cost_to_train = that time in hours
    × $/hour, for every plan; the time_to_train optimum is the throughput optimum and the
    cost_to_train optimum is the cost optimum × train_tokens / 1e6."""
    tokens = 15 * 10**12
    b = body(top_k=3)
    b["training"]["train_tokens"] = tokens
    fast = search({**b, "objective": "throughput"})
    cheap = search({**b, "objective": "cost"})
    ttt = search({**b, "objective": "time_to_train"})
    ctt = search({**b, "objective": "cost_to_train"})
    for rp in ttt.plans:
        assert rp.objective_value == pytest.approx(tokens / rp.estimate.tokens_per_s, rel=REL)
    for rp in ctt.plans:
        hours = tokens / rp.estimate.tokens_per_s / 3600.0
        assert rp.objective_value == pytest.approx(hours * rp.estimate.cost_per_hour, rel=REL)
    assert ttt.plans[0].objective_value == pytest.approx(
        tokens / fast.plans[0].objective_value, rel=1e-6)
    assert ctt.plans[0].objective_value == pytest.approx(
        cheap.plans[0].objective_value * tokens / 1e6, rel=1e-6)
    assert ttt.optimality.value == pytest.approx(ttt.plans[0].objective_value, rel=REL)
    assert ctt.optimality.status == "optimal"
    # every objective value and bound carries its unit; time_to_train also in days
    for res, unit in ((fast, "tokens/s"), (cheap, "$/M tokens"), (ttt, "s"), (ctt, "$")):
        assert res.optimality.unit == unit
        assert all(rp.objective_unit == unit for rp in res.plans)
    assert ttt.optimality.value_days == pytest.approx(ttt.optimality.value / 86400, rel=REL)
    assert all(rp.objective_days == pytest.approx(rp.objective_value / 86400, rel=REL)
               for rp in ttt.plans)
    assert fast.optimality.value_days is None and fast.plans[0].objective_days is None


# --------------------------------------------------------------------------------------------
# Infeasibility, explained
# --------------------------------------------------------------------------------------------


def assert_infeasible(result: SearchResult) -> str:
    assert result.optimality.status == "infeasible"
    assert result.plans == [] and result.pareto == []
    assert result.optimality.value is None and result.optimality.bound is None
    assert result.infeasible_reason
    assert result.optimality.meaning.startswith("infeasible")  # not "optimal = ..."
    return result.infeasible_reason


def test_model_too_large_for_the_inventory() -> None:
    """Checks: llama3-405b on 2 × 8 L4-24GB is infeasible and the reason gives the least
    memory any plan needs (in GiB, more than the GPU has) and the 24 GiB the GPU has."""
    result = search(body("llama3-405b", [pool("l4", "L4-24GB", nodes=2)]))
    reason = assert_infeasible(result)
    assert "needs at least" in reason and "GiB" in reason and "24" in reason
    needed = float(reason.split("needs at least ")[1].split(" GiB")[0])
    assert needed > 24 * DEFAULT_MAX_MEMORY_FRACTION
    assert result.stats.fitting == 0 and result.stats.valid > 0


def test_impossible_budget() -> None:
    """Checks: max_cost_per_hour 0.01 → infeasible, the reason names max_cost_per_hour, the
    budget and the cheapest fitting plan's $/hour: llama3-8b does not fit one H100 (max_gpus 1
    is infeasible) but fits two, so 2 × $2.00 = $4.00/hour."""
    result = search(body(constraints={"max_cost_per_hour": 0.01}))
    reason = assert_infeasible(result)
    assert "max_cost_per_hour" in reason and "$0.01" in reason
    assert "$4.00/hour" in reason
    assert search(body(top_k=1, constraints={"max_gpus": 1})).plans == []
    two = search(body(top_k=1, constraints={"max_gpus": 2})).plans
    assert two and two[0].estimate.cost_per_hour == pytest.approx(4.0)


def test_unsatisfiable_fixed_degrees() -> None:
    """Checks: tp=3 for llama3-8b (32 heads, 8 KV heads) → infeasible, with a reason that
    names the fixed degree and does not blame memory."""
    result = search(body(constraints={"fixed": {"tp": 3}}))
    reason = assert_infeasible(result)
    assert "tp" in reason and "3" in reason
    assert "needs at least" not in reason


def test_infeasible_when_too_few_gpus_for_the_fixed_degrees() -> None:
    """Checks: fixed tp=8, pp=4 on 8 GPUs → infeasible, the reason names the fixed degrees."""
    result = search(body(pools=[pool("h100", "H100-SXM-80GB")],
                         constraints={"fixed": {"tp": 8, "pp": 4}}))
    reason = assert_infeasible(result)
    assert "'tp': 8" in reason and "'pp': 4" in reason


def test_fixed_degrees_over_the_gpu_count_are_explained() -> None:
    """Checks: fixed tp=8, pp=4 on one 8-GPU node → the reason gives the 8-GPU limit and does
    not blame the precision."""
    result = search(body(pools=[pool("h100", "H100-SXM-80GB")],
                         constraints={"fixed": {"tp": 8, "pp": 4}}))
    reason = assert_infeasible(result)
    assert "8 GPUs" in reason and "bf16" not in reason


def test_moe_model_that_fits_is_not_reported_infeasible() -> None:
    """Checks: when a plan exists that the estimate says fits under the ceiling, the search
    finds a plan."""
    b = body("mixtral-8x7b", gbs=32, seq=2048, top_k=1)
    req = SearchRequest.model_validate(b)
    witness = evaluate(req.model, req.training, req.cluster, ParallelPlan(
        pool="h100", tp=1, pp=2, dp=4, cp=2, ep=8, micro_batch_size=1,
        schedule="ZBVZeroBubble", virtual_stages=2, recompute="none", zero_stage=2))
    assert witness.fits and witness.memory.peak_gib <= 0.9 * 80
    result = search(req)
    assert result.plans, result.infeasible_reason
    assert result.plans[0].estimate.tokens_per_s >= witness.tokens_per_s * (1 - REL)


def test_pareto_points_fit_for_moe() -> None:
    """Checks: every Pareto point fits in memory under max_memory_fraction."""
    req = SearchRequest.model_validate(body("mixtral-8x7b", [pool("h200", "H200-SXM-141GB",
                                                                  nodes=2)], gbs=32, seq=2048,
                                            top_k=3))
    result = search(req)
    assert result.pareto
    cap = 141 * DEFAULT_MAX_MEMORY_FRACTION
    for q in result.pareto:
        est = evaluate(req.model, req.training, req.cluster, q.plan)
        assert est.fits and est.memory.peak_gib <= cap, (q.plan, est.memory.peak_gib)


# --------------------------------------------------------------------------------------------
# Time limit
# --------------------------------------------------------------------------------------------

HANG_GUARD_S = 20.0
"""Wall-clock guard against a search that ignores its limit; generous so that a loaded CI
machine cannot fail it (speed targets live in benchmarks/)."""


def test_time_limit_on_a_large_search() -> None:
    """Checks: llama3-70b on 512 × 8 H100 with time_limit_s 0.3 stops on its limit (a hang
    guard of 20 s only: wall-clock speed is measured by benchmarks/solver_speed.py, not here);
    when it returns plans: stopped early ⇒ status "feasible" with a finite gap ≥ 0 and a bound
    no worse than the value, else "optimal"; ranks sorted by objective."""
    b = body("llama3-70b", [pool("h100", "H100-SXM-80GB", nodes=512)], gbs=1024, seq=8192,
             time_limit_s=0.3)
    req = SearchRequest.model_validate(b)
    t0 = time.perf_counter()
    result = search(req)
    elapsed = time.perf_counter() - t0
    assert elapsed <= 0.3 + HANG_GUARD_S
    assert result.stats.elapsed_s <= elapsed
    if result.stats.elapsed_s > 0.3 * 2:
        assert result.stats.timed_out  # ran past its limit only because it was told to stop
    assert result.stats.candidates > 100_000  # a large search indeed
    assert_ranked(req, result.plans)
    assert result.stats.fitting > 0
    assert result.plans or result.stats.timed_out  # no plan only when stopped by the limit
    opt = result.optimality
    if result.plans:
        if result.stats.timed_out:
            assert opt.status == "feasible"
            assert opt.gap is not None and math.isfinite(opt.gap) and opt.gap >= 0
            assert opt.bound is not None and opt.value is not None
            assert opt.bound >= opt.value * (1 - REL)  # tokens/s: the bound is an upper bound
            assert opt.gap == pytest.approx(abs(opt.value - opt.bound) / abs(opt.bound))
        else:
            assert opt.status == "optimal" and opt.gap == 0.0


def test_timed_out_search_still_returns_a_plan() -> None:
    """Checks: a search stopped by its time limit, with plans that fit, reports status
    "feasible" with at least one plan, not "infeasible"."""
    result = search(body(top_k=3, time_limit_s=1e-6))
    assert result.stats.timed_out and result.stats.fitting > 0
    assert result.optimality.status == "feasible"
    assert result.plans and result.infeasible_reason is None


# --------------------------------------------------------------------------------------------
# Determinism, explanations, Pareto, JSON
# --------------------------------------------------------------------------------------------

PIPELINED = body(top_k=3, constraints={"max_memory_fraction": 0.3})
"""llama3-8b on 16 H100 under 24 GiB: pipeline plans, so CP-SAT re-partitions run."""


def test_deterministic() -> None:
    """Checks: the same request twice gives identical plans, values, Pareto front and
    optimality (CP-SAT runs with the request's seed, single-threaded). Without partial
    recompute: its plans (pp 1, ZeRO-3, half the layers recomputed) take the three finalist
    places of this request's even-split space, and the re-partitioned layouts are not among
    the finalists then."""
    body = {**PIPELINED, "constraints": {**PIPELINED["constraints"],
                                         "partial_recompute": False}}
    a, b = search(body), search(body)
    assert a.stats.partitions_solved > 0
    assert any(p.plan.layers_per_stage is not None for p in a.plans)
    da, db = a.model_dump(mode="json"), b.model_dump(mode="json")
    for key in ("plans", "pareto", "optimality", "infeasible_reason"):
        assert da[key] == db[key]


def test_explanations() -> None:
    """Checks: every plan has a binding_constraint; every plan but the last has vs_runner_up
    (the last none); a GPU-count binding quotes the plan's GPU count."""
    result = search(PIPELINED)
    plans = result.plans
    assert len(plans) == 3
    for rp in plans:
        x = rp.explanation.binding_constraint
        assert isinstance(x, str) and x
        if x.startswith("uses "):
            assert x.startswith(f"uses {rp.estimate.num_gpus} of ")
    for rp in plans[:-1]:
        assert rp.explanation.vs_runner_up
    assert plans[-1].explanation.vs_runner_up is None


def test_memory_tight_plan_is_explained_by_memory() -> None:
    """Checks: mistral-7b on 4 × 8 L4-24GB at minimum cost uses ≥ 85% of the 21.6 GiB
    ceiling and its binding constraint is memory, quoting the GiB and the ceiling."""
    result = search(body("mistral-7b", [pool("l4", "L4-24GB", nodes=4)], gbs=32, seq=2048,
                         objective="cost", top_k=2))
    best = result.plans[0]
    cap = 24 * DEFAULT_MAX_MEMORY_FRACTION
    assert best.estimate.memory.peak_gib >= 0.85 * cap
    x = best.explanation.binding_constraint
    assert "memory" in x and "GiB" in x and f"{cap:.1f}" in x
    assert f"{best.estimate.memory.peak_gib:.1f} GiB" in x


@pytest.mark.parametrize("objective", ["throughput", "cost"])
def test_pareto_front(objective: str) -> None:
    """Checks: Pareto points are non-dominated (tokens/s strictly down ⇒ $/M tokens strictly
    down along the list); $/M tokens = $/hour / 3600 / tokens/s × 1e6; no ranked plan dominates
    a point; the front holds the throughput optimum (its first point) and the cheapest ranked
    plan's cost or better."""
    req = SearchRequest.model_validate(body(pools=TWO_POOLS, objective=objective, top_k=3,
                                            constraints={"max_memory_fraction": 0.5}))
    result = search(req)
    front = result.pareto
    assert front
    by_speed = max(result.plans, key=lambda rp: rp.estimate.tokens_per_s).estimate
    if by_speed.cost_per_million_tokens > min(
            rp.estimate.cost_per_million_tokens for rp in result.plans) * (1 + REL):
        assert len(front) >= 2  # a speed/cost trade-off exists among the ranked plans
    for a, b in itertools.pairwise(front):
        assert a.tokens_per_s > b.tokens_per_s
        assert a.cost_per_million_tokens > b.cost_per_million_tokens
    for q in front:
        assert q.cost_per_million_tokens == pytest.approx(
            q.cost_per_hour / 3600 / q.tokens_per_s * 1e6, rel=REL)
        for rp in result.plans:
            e = rp.estimate
            assert not (e.tokens_per_s > q.tokens_per_s * (1 + REL)
                        and e.cost_per_million_tokens < q.cost_per_million_tokens * (1 - REL))
    fastest = max(rp.estimate.tokens_per_s for rp in result.plans)
    cheapest = min(rp.estimate.cost_per_million_tokens for rp in result.plans)
    assert front[0].tokens_per_s >= fastest * (1 - REL)
    assert front[-1].cost_per_million_tokens <= cheapest * (1 + REL)
    if objective == "throughput":
        assert front[0].tokens_per_s == pytest.approx(result.plans[0].objective_value, rel=REL)


def test_result_json_follows_the_contract() -> None:
    """Checks: model_dump(mode="json") has the contract's keys (plans, pareto,
    optimality{status, bound, gap}, infeasible_reason) and is plain JSON, for a found and an
    infeasible search."""
    for b, status in ((body(top_k=2), "optimal"),
                      (body(constraints={"max_cost_per_hour": 0.01}), "infeasible")):
        out = search(b).model_dump(mode="json")
        json.dumps(out)
        assert {"plans", "pareto", "optimality", "infeasible_reason"} <= set(out)
        assert {"status", "bound", "gap"} <= set(out["optimality"])
        assert out["optimality"]["status"] == status
        if status == "optimal":
            assert out["infeasible_reason"] is None and out["optimality"]["gap"] == 0.0
            plan = out["plans"][0]
            assert {"rank", "plan", "objective_value", "estimate", "explanation"} <= set(plan)
            assert {"pool", "tp", "pp", "dp", "cp", "ep", "micro_batch_size", "schedule",
                    "virtual_stages", "layers_per_stage", "recompute", "sequence_parallel",
                    "zero_stage"} <= set(plan["plan"])
        else:
            assert out["plans"] == [] and isinstance(out["infeasible_reason"], str)


def test_vocabulary_placement_is_searched() -> None:
    """Checks: with a vocabulary large against the layers (Gemma-like 256k tokens on a small
    model, pp fixed), splitting the embedding and LM head over all pipeline ranks (Yeung et al.
    2024) balances the last stage, and the search returns the split placement because its
    estimate is faster than the end-stage placement of the same plan."""
    req = body(pools=[pool("h100", "H100-SXM-80GB", nodes=1, price=2.0)], top_k=1,
               constraints={"fixed": {"pp": 4, "tp": 1}})
    req["model"] = {"name": "wide-vocab", "num_hidden_layers": 8, "hidden_size": 2048,
                    "num_attention_heads": 16, "num_key_value_heads": 4,
                    "intermediate_size": 8192, "vocab_size": 256000}
    best = search(req).plans[0]
    assert best.plan.vocab_placement == "split"
    ends = costmodel_estimate(req, best.plan.model_copy(update={"vocab_placement": "end_stages"}))
    assert best.estimate.step_time_s < ends.step_time_s


def costmodel_estimate(req: dict[str, Any], plan: Any) -> Any:
    import costmodel

    return costmodel.estimate({"model": req["model"], "training": req["training"],
                               "cluster": req["cluster"], "plan": plan.model_dump()})


# --------------------------------------------------------------------------------------------
# Distinct alternatives
# --------------------------------------------------------------------------------------------


def test_top_k_plans_are_pairwise_distinct_layouts() -> None:
    """The k plans differ in layout (pool, degrees, micro-batch, recompute); what differs only
    in schedule, virtual stages, ZeRO stage or sequence parallelism is a variant inside the
    plan of its layout, each ranked below it."""
    from solver.search import layout_key

    res = search(body(top_k=5, pools=[pool("h100", "H100-SXM-80GB", nodes=4)]))
    keys = [layout_key(rp.plan) for rp in res.plans]
    assert len(keys) == len(set(keys)) >= 2
    assert any(rp.variants for rp in res.plans)
    for rp in res.plans:
        for v in rp.variants:
            assert layout_key(v.plan) == layout_key(rp.plan)
            assert v.plan != rp.plan
            assert v.objective_value <= rp.objective_value  # throughput: variants are slower


def test_best_per_pool_with_several_pools() -> None:
    """Several pools: the result names the best plan of every pool that can run the job, the
    winner's pool included, with how it compares with the winner."""
    pools = [pool("h100", "H100-SXM-80GB", nodes=2, price=2.49),
             pool("a100", "A100-SXM-80GB", nodes=2, price=1.29)]
    res = search(body(pools=pools, top_k=2, objective="cost"))
    by_pool = {pb.pool: pb for pb in res.best_per_pool}
    assert set(by_pool) == {"h100", "a100"}
    winner = res.plans[0]
    assert by_pool[winner.plan.pool or ""].objective_value == pytest.approx(
        winner.objective_value)
    for pb in res.best_per_pool:
        assert pb.plan.pool == pb.pool and pb.objective_unit == "$/M tokens"
        assert pb.objective_value >= winner.objective_value * (1 - 1e-9)  # cost: lower wins
        # the winner's own pool names it; the others say what they give relative to it
        if pb.pool == winner.plan.pool:
            assert pb.vs_winner == "the winner" and pb.plan == winner.plan
        else:
            assert "of the winner's tokens/s" in pb.vs_winner
    single = search(body(top_k=1))
    assert single.best_per_pool == []


def test_best_per_pool_without_prices() -> None:
    """Pools without prices (the default 0 $/GPU-hour) compare on throughput alone; a priced
    pool beside an unpriced winner states its own $ per M tokens (no division by zero)."""
    free = [pool("h100", "H100-SXM-80GB", nodes=2, price=0),
            pool("a100", "A100-SXM-80GB", nodes=2, price=0)]
    res = search(body(pools=free, top_k=1))
    assert {pb.pool for pb in res.best_per_pool} == {"h100", "a100"}
    for pb in res.best_per_pool:
        assert pb.vs_winner == "the winner" if pb.pool == res.plans[0].plan.pool else (
            pb.vs_winner.endswith("of the winner's tokens/s"))
    mixed = [pool("h100", "H100-SXM-80GB", nodes=2, price=0), pool("a100", "A100-SXM-80GB", nodes=1,
                                                           price=1.29)]
    res = search(body(pools=mixed, top_k=1))
    a100 = next(pb for pb in res.best_per_pool if pb.pool == "a100")
    assert res.plans[0].plan.pool == "h100" and "the winner's pool has no price" in a100.vs_winner
