"""Straggler attribution from per-rank compute times (costmodel.attribution): a synthetic run
whose times are the typical ones with one rank slowed reports that rank and the simulator's
slowdown for it; a run without stragglers reports none."""

from __future__ import annotations

import copy

import pytest

import costmodel
from costmodel.attribution import attribute_stragglers
from costmodel.errors import SpecError
from costmodel.specs.scenario import Scenario
from costmodel.what_if import what_if
from service.estimates.schemas import LLAMA3_70B_EXAMPLE

REQUEST = copy.deepcopy(LLAMA3_70B_EXAMPLE)  # pp 4 × dp 16 × tp 8: 512 GPUs


def _gpus() -> int:
    return costmodel.estimate(REQUEST).num_gpus


@pytest.mark.parametrize("rank,factor", [(300, 1.25), (7, 1.1), (511, 1.5)])
def test_the_injected_straggler_and_its_slowdown_are_reported(rank: int, factor: float) -> None:
    n = _gpus()
    typical = 0.8
    times = [typical] * n
    times[rank] = typical * factor
    measured = 12.0
    found = attribute_stragglers(REQUEST, times, measured)
    injected = what_if(REQUEST, Scenario(ranks={rank: factor}), sensitivity=False)
    assert found.slowdown == pytest.approx(injected.change, rel=1e-9)
    assert found.slowdown > 0
    assert [r.rank for r in found.responsible] == [rank]
    assert found.responsible[0].factor == pytest.approx(factor)
    assert found.without_stragglers_step_time_s == pytest.approx(measured / (1 + found.slowdown))


def test_a_run_without_stragglers_has_none() -> None:
    found = attribute_stragglers(REQUEST, [0.5] * _gpus(), 10.0)
    assert found.slowdown == 0 and found.responsible == []
    assert found.without_stragglers_step_time_s == 10.0


def test_the_largest_contributor_comes_first() -> None:
    times = [1.0] * _gpus()
    times[10], times[400] = 1.05, 1.3
    found = attribute_stragglers(REQUEST, times, 10.0)
    assert found.responsible[0].rank == 400


@pytest.mark.parametrize("times,rule", [([1.0] * 3, "entries"), ([0.0] * 512, "> 0")])
def test_times_that_do_not_fit_the_plan_name_the_field(times: list[float], rule: str) -> None:
    with pytest.raises(SpecError) as err:
        attribute_stragglers(REQUEST, times, 1.0)
    assert err.value.field == "measured.rank_compute_s" and rule in err.value.rule
