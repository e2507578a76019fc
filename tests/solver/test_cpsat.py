"""solver.cpsat: every CP-SAT model is solved with the search's limits, and a cancelled search
stops a solve at once instead of waiting for its time limit."""

from __future__ import annotations

import random
import time

import pytest
from ortools.sat.python import cp_model

from costmodel import interrupt
from solver import cpsat


def job_shop(jobs: int = 30, machines: int = 15, seed: int = 3) -> cp_model.CpModel:
    """A random job shop (30 x 15 by default) that CP-SAT does not prove optimal within 10 s on
    one worker (measured: FEASIBLE at the 10 s limit); 20 x 10 is optimal in 0.4 s."""
    rng = random.Random(seed)
    m = cp_model.CpModel()
    horizon = jobs * machines * 10
    per_machine: list[list[cp_model.IntervalVar]] = [[] for _ in range(machines)]
    ends = []
    for j in range(jobs):
        prev = None
        for mach in rng.sample(range(machines), machines):
            d = rng.randint(1, 10)
            s = m.new_int_var(0, horizon, f"s{j}_{mach}")
            e = m.new_int_var(0, horizon, f"e{j}_{mach}")
            per_machine[mach].append(m.new_interval_var(s, d, e, f"i{j}_{mach}"))
            if prev is not None:
                m.add(s >= prev)
            prev = e
        ends.append(prev)
    for ivs in per_machine:
        m.add_no_overlap(ivs)
    makespan = m.new_int_var(0, horizon, "makespan")
    m.add_max_equality(makespan, ends)
    m.minimize(makespan)
    return m


def test_a_solve_runs_to_its_limit_with_the_given_parameters() -> None:
    solver, status = cpsat.solve(job_shop(6, 4), time_limit_s=5.0, seed=7,
                                 linearization_level=0)
    assert status == cp_model.OPTIMAL
    assert solver.parameters.random_seed == 7 and solver.parameters.linearization_level == 0
    assert solver.parameters.num_workers == 1 and not solver.parameters.log_search_progress


def test_a_cancel_stops_a_solve_long_before_its_time_limit() -> None:
    t = time.monotonic()
    asked_at = t + 0.3
    with interrupt.interruptible(lambda: time.monotonic() > asked_at), \
            pytest.raises(interrupt.Interrupted) as exc:
        cpsat.solve(job_shop(), time_limit_s=120.0)
    took = time.monotonic() - t
    assert exc.value.reason == "stop"
    assert took < 60.0, f"the solve ran {took:.1f} s of its 120 s after the cancel"


def test_a_solve_without_a_check_is_not_interrupted() -> None:
    _, status = cpsat.solve(job_shop(), time_limit_s=0.5)
    assert status == cp_model.FEASIBLE  # ran to its limit: nothing stopped it early


def test_status_of_names_every_answer_and_raises_on_an_invalid_model() -> None:
    m = job_shop(6, 4)
    assert cpsat.status_of(cp_model.OPTIMAL, m, "job shop") == "optimal"
    assert cpsat.status_of(cp_model.FEASIBLE, m, "job shop") == "feasible"
    assert cpsat.status_of(cp_model.INFEASIBLE, m, "job shop") == "infeasible"
    assert cpsat.status_of(cp_model.UNKNOWN, m, "job shop") == "unknown"
    bad = cp_model.CpModel()
    bad.proto.variables.add().domain.extend([5, 3])  # lower end above upper: not a domain
    _, code = cpsat.solve(bad, time_limit_s=1.0)
    assert code == cp_model.MODEL_INVALID
    with pytest.raises(RuntimeError, match="invalid job shop model: var #0"):
        cpsat.status_of(code, bad, "job shop")

def test_the_four_models_results_share_one_base() -> None:
    from solver.hetero import HeteroResult
    from solver.partition import PartitionResult
    from solver.placement import PlacementResult
    from solver.schedule_synthesis import SynthesisResult
    for result in (HeteroResult, PartitionResult, PlacementResult, SynthesisResult):
        assert issubclass(result, cpsat.SolveResult)
        names = {f for f in result.__dataclass_fields__}
        assert {"status", "gap", "explanation", "wall_time_s"} <= names
