"""One way to run OR-Tools CP-SAT for every model the search builds (layer partition, node
placement, schedule synthesis, heterogeneous stage assignment).

Each solve gets its wall-clock limit (what is left of the search's), a fixed seed and worker
count (reproducible answers), no log, and stops early when the search is cancelled: CP-SAT is
asked to stop (``CpSolver.stop_search``, OR-Tools >= 9.8) by a watcher thread that polls the
installed :mod:`costmodel.interrupt` check, and :class:`~costmodel.interrupt.Interrupted` is
raised once the solver has returned, so a solve never holds a cancelled search for the rest of
its time limit.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from ortools.sat.python import cp_model

from costmodel import interrupt

WATCH_EVERY_S = 0.05
"""How often the watcher thread polls the cancellation check during a solve."""

Status = Literal["optimal", "feasible", "infeasible", "unknown"]
"""What a model's answer is, in the same four words for every CP-SAT model of the search:
``optimal`` (proven), ``feasible`` (a solution, not proven best), ``infeasible`` (proven to
have none), ``unknown`` (none found within the time limit)."""

FOUND: tuple[Status, ...] = ("optimal", "feasible")
"""The statuses that come with a solution."""

_NAMES: dict[Any, Status] = {
    cp_model.OPTIMAL: "optimal", cp_model.FEASIBLE: "feasible",
    cp_model.INFEASIBLE: "infeasible", cp_model.UNKNOWN: "unknown"}


def status_of(code: Any, model: cp_model.CpModel, what: str) -> Status:
    """CP-SAT's status code as a :data:`Status`. ``MODEL_INVALID`` is a bug in the model
    builder, never an answer: it raises with CP-SAT's own validation message, naming ``what``
    model it was."""
    if code == cp_model.MODEL_INVALID:
        raise RuntimeError(f"invalid {what} model: {model.validate()}")
    return _NAMES.get(code, "unknown")


@dataclass(frozen=True, kw_only=True)
class SolveResult:
    """What every CP-SAT model's result says beside its own answer: the :data:`Status`, the
    relative ``gap`` between the answer and the model's proven bound (0 when proven optimal;
    ``None`` without an answer or a bound), why there is no answer (``explanation``) and the
    seconds spent (``wall_time_s``, not part of equality). Each model's result adds its
    answer and its bound in that model's unit (seconds, Gb/s); the fields here are keyword-only
    so that those come first."""

    status: Status
    gap: float | None
    explanation: str | None = None
    wall_time_s: float = field(default=0.0, compare=False)


def solve(model: cp_model.CpModel, *, time_limit_s: float, seed: int = 0, num_workers: int = 1,
          callback: cp_model.CpSolverSolutionCallback | None = None,
          **parameters: Any) -> tuple[cp_model.CpSolver, Any]:
    """Solve ``model`` within ``time_limit_s`` seconds; ``parameters`` are further
    ``SatParameters`` fields (e.g. ``linearization_level``). Returns the solver (for values
    and bounds) and its status; raises :class:`~costmodel.interrupt.Interrupted` when the
    installed check stopped it."""
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(0.0, float(time_limit_s))
    solver.parameters.num_workers = num_workers
    solver.parameters.random_seed = seed
    solver.parameters.log_search_progress = False
    for name, value in parameters.items():
        setattr(solver.parameters, name, value)
    check = interrupt.checker()
    if check is None:
        return solver, solver.solve(model, callback)
    done = threading.Event()
    stopped: list[str] = []

    def watch() -> None:
        while not done.wait(WATCH_EVERY_S):
            if not stopped:
                try:
                    if check():
                        stopped.append("stop")
                except interrupt.Interrupted as exc:
                    stopped.append(exc.reason)
            if stopped:  # again at every poll: a stop asked before the solve began is lost
                solver.stop_search()

    watcher = threading.Thread(target=watch, name="cpsat-watch", daemon=True)
    watcher.start()
    try:
        status = solver.solve(model, callback)
    finally:
        done.set()
        watcher.join()
    if stopped:
        raise interrupt.Interrupted(stopped[0])
    return solver, status
