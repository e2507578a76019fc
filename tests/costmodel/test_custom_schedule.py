"""Custom pipeline schedules: torch action strings, plan.custom_schedule's rules, and estimates
that match the named schedule they spell out."""

from __future__ import annotations

import copy
from typing import Any

import pytest

import costmodel
from costmodel.errors import SpecError
from costmodel.pipeline.schedules import (
    Action,
    ScheduleError,
    build_schedule,
    format_schedule,
    parse_schedule,
)


def _request(schedule: str = "1F1B", v: int = 1, pp: int = 4, gbs: int = 16,
             **plan: Any) -> dict[str, Any]:
    return {"model": {"preset": "llama3-8b"},
            "training": {"global_batch_size": gbs, "seq_len": 4096},
            "cluster": {"pools": [{"name": "h100", "gpu": "H100-SXM-80GB", "nodes": 1,
                                   "price_per_gpu_hour": 2.49}]},
            "plan": {"tp": 1, "pp": pp, "dp": 2, "schedule": schedule, "virtual_stages": v,
                     "recompute": "selective", "zero_stage": 1, **plan}}


def _custom_of(req: dict[str, Any], m: int) -> dict[str, Any]:
    """``req`` with its named schedule spelled out as a custom one."""
    plan = req["plan"]
    out = copy.deepcopy(req)
    out["plan"]["schedule"] = "custom"
    out["plan"]["custom_schedule"] = format_schedule(
        build_schedule(plan["schedule"], plan["pp"], m, plan["virtual_stages"]))
    return out


def _problems(req: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as err:
        costmodel.estimate(req)
    return [(p.field, p.rule) for p in err.value.problems]


# --------------------------------------------------------------------------------------------
# Action strings
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["0F3", "1I0", "1W0", "2B1", "12F127", " 3B4 "])
def test_action_strings_agree_with_torch(text: str) -> None:
    torch_schedules = pytest.importorskip("torch.distributed.pipelining.schedules")
    ours = Action.parse(text)
    theirs = torch_schedules._Action.from_str(text)
    assert (ours.stage, ours.kind, ours.mb) == (
        theirs.stage_index, theirs.computation_type.value, theirs.microbatch_index)
    assert ours.torch_str() == repr(theirs)


@pytest.mark.parametrize("text", ["", "0F", "F0", "0X1", "0F1x", "1SEND_F0", "-1F0", "0f1",
                                  "0 F1", "٣F1"])
def test_action_parse_rejects(text: str) -> None:
    with pytest.raises(ScheduleError, match="not a compute action"):
        Action.parse(text)


def test_parse_schedule_names_rank_and_position() -> None:
    assert parse_schedule([["0F0", "0B0"], ["1F0", "1B0"]])[1][1] == Action(1, 0, "B")
    with pytest.raises(ScheduleError, match="rank 1, position 1: 'oops'"):
        parse_schedule([["0F0", "0B0"], ["1F0", "oops"]])
    with pytest.raises(ScheduleError, match="rank 0: expected a list"):
        parse_schedule(["0F0 0B0"])


# --------------------------------------------------------------------------------------------
# Estimates: a custom schedule that spells out a named one estimates the same
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("schedule", "v"), [
    ("GPipe", 1), ("1F1B", 1), ("InterleavedZeroBubble", 1), ("Interleaved1F1B", 2),
    ("InterleavedZeroBubble", 2), ("ZBVZeroBubble", 2), ("DualPipeV", 2),
])
def test_custom_estimate_equals_the_named_one(schedule: str, v: int) -> None:
    req = _request(schedule, v)
    named = costmodel.estimate(req)
    custom = costmodel.estimate(_custom_of(req, named.pipeline.num_microbatches))
    assert custom.pipeline.schedule == "custom"
    assert custom.step_time_s == named.step_time_s
    assert custom.pipeline.bubble_fraction == named.pipeline.bubble_fraction
    assert custom.pipeline.layers_per_stage == named.pipeline.layers_per_stage
    assert custom.memory.peak_gib == named.memory.peak_gib
    assert [s.inflight_microbatches for s in custom.memory.per_stage] == [
        s.inflight_microbatches for s in named.memory.per_stage]
    assert custom.breakdown == named.breakdown


def test_custom_estimate_on_a_heterogeneous_pipeline() -> None:
    req = _request("InterleavedZeroBubble", 1, pp=2)
    req["cluster"]["pools"].append({"name": "a100", "gpu": "A100-SXM-80GB", "nodes": 1,
                                    "price_per_gpu_hour": 1.29})
    req["plan"]["stages"] = [{"pool": "h100", "layers": 18}, {"pool": "a100", "layers": 14}]
    named = costmodel.estimate(req)
    custom = costmodel.estimate(_custom_of(req, named.pipeline.num_microbatches))
    assert custom.step_time_s == named.step_time_s
    assert custom.memory.peak_gib == named.memory.peak_gib


def test_inflight_gib_per_microbatch_is_the_marginal_activation_memory() -> None:
    gpipe = costmodel.estimate(_request("GPipe"))  # every rank holds all 8 micro-batches
    one = costmodel.estimate(_request("GPipe", gbs=2))  # one micro-batch in flight
    for a, b in zip(gpipe.memory.per_stage, one.memory.per_stage, strict=True):
        extra = a.inflight_microbatches - b.inflight_microbatches
        assert extra == 7
        assert a.activations_gib - b.activations_gib == pytest.approx(
            extra * a.inflight_gib_per_microbatch)


# --------------------------------------------------------------------------------------------
# check_plan's rules on custom schedules
# --------------------------------------------------------------------------------------------


def _two_rank(rows: list[list[str]], **plan: Any) -> dict[str, Any]:
    req = _request("custom", 1, pp=2, gbs=4, custom_schedule=rows, **plan)
    return req  # dp=2, micro-batch 1 -> 2 micro-batches


GOOD = [["0F0", "0F1", "0B0", "0B1"], ["1F0", "1B0", "1F1", "1B1"]]


def test_two_rank_custom_schedule_is_valid() -> None:
    est = costmodel.estimate(_two_rank(GOOD))
    assert est.pipeline.schedule == "custom" and est.pipeline.num_microbatches == 2


@pytest.mark.parametrize(("rows", "fragment"), [
    (None, "required with schedule 'custom'"),
    ([GOOD[0]], "one list of actions per pipeline rank: pp=2 lists, got 1"),
    ([["0F0", "0F1", "0B0", "0Q1"], GOOD[1]], "rank 0, position 3: '0Q1' is not a compute"),
    ([["0F0", "0B0"], ["1F0", "1B0"]], "has micro-batches 0..0 but the plan has 2"),
    ([["0F0", "0F1", "0B0", "0B1"], ["1F0", "1B0", "1F1", "1B1", "2F0", "2B0", "2F1", "2B1"]],
     "has stages 0..2 but pp·virtual_stages = 2·1 = 2 stages are needed"),
    ([["0F0", "0F1", "0B1", "0B0"], ["1F0", "1B0", "1F1"]], "stage 1, mb 1 (rank 1): needs one B"),
    ([["0F0", "0B0", "0F1", "0B1"], ["1B0", "1F0", "1F1", "1B1"]],
     "rank 1 would deadlock: B(stage=1, mb=0) comes before its F"),
    ([["0F0", "0F1", "0I0", "0W0", "0I1", "0W1"], ["1F0", "1W0", "1I0", "1F1", "1I1", "1W1"]],
     "W(stage=1, mb=0) comes before its I"),
    ([["0F0", "0B0", "0F1", "0B1"], ["1F0", "1F1", "1B0", "1B1"]],
     "deadlock, no rank can proceed: rank 0 blocked at B(stage=0, mb=0)"),
    ([["0F0", "1F0", "0B0", "1B0"], ["0F1", "1F1"]], "a stage must live on one rank"),
])
def test_custom_schedule_rules(rows: list[list[str]] | None, fragment: str) -> None:
    problems = _problems(_two_rank(rows))  # type: ignore[arg-type]
    assert any(f == "plan.custom_schedule" and fragment in r for f, r in problems), problems


def test_custom_schedule_stages_per_rank_must_match_virtual_stages() -> None:
    rows = format_schedule(build_schedule("ZBVZeroBubble", 2, 2, 2))
    problems = _problems(_two_rank(rows))  # virtual_stages 1 but 2 stages per rank
    assert ("plan.custom_schedule", "has stages 0..3 but pp·virtual_stages = 2·1 = 2 stages "
            "are needed") in problems
    req = _two_rank(rows)
    req["plan"]["virtual_stages"] = 2
    assert costmodel.estimate(req).pipeline.layers_per_stage == [8, 8, 8, 8]


def test_custom_schedule_only_with_schedule_custom() -> None:
    req = _request("1F1B", custom_schedule=GOOD)
    assert ("plan.custom_schedule", "only with schedule 'custom' (the plan's schedule is "
            "'1F1B'); leave it null") in _problems(req)
