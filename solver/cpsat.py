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
from typing import Any

from ortools.sat.python import cp_model

from costmodel import interrupt

WATCH_EVERY_S = 0.05
"""How often the watcher thread polls the cancellation check during a solve."""


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
