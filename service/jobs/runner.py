"""Running one claimed search: the solver, the heartbeat beside it, and storing the outcome.

While :func:`solver.search` runs in the worker's main thread, a heartbeat thread renews the
lease every ``heartbeat_s`` and writes the latest progress. The solver polls ``should_stop``,
which turns true when the heartbeat learns that a client cancelled the search, that the search
is no longer this worker's (its lease was taken over), or when the worker is shutting down; the
search then ends with :class:`solver.search.SearchCancelled` and the runner records a
cancellation, drops the work, or gives the search back to the queue.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from typing import Any

from pydantic import ValidationError

import solver
from costmodel.errors import FieldProblem, SpecError
from service.db.engine import Database
from service.db.models import Plan
from service.errors import INVALID_INPUT, from_pydantic
from service.jobs import queue
from service.jobs.queue import Claim
from service.launch_check import framework_refusals
from service.settings import Settings
from service.validation import non_finite_fields
from solver.request import SearchRequest
from solver.results import SearchResult
from solver.search import SearchCancelled, SearchProgress

logger = logging.getLogger("meshplan.jobs")

RECYCLE_EXIT = 75
"""Exit status of a worker process that stopped to be replaced (EX_TEMPFAIL): above its
memory limit after a search, or holding a solver that ignored its deadline."""

INTERNAL_DETAIL = "the search failed with an internal error; it has been logged by the worker"


def progress_json(p: SearchProgress) -> dict[str, Any]:
    """The ``progress`` of ``GET /v1/searches/{id}`` (non-finite bounds become null)."""

    def num(x: float | None) -> float | None:
        return x if x is not None and math.isfinite(x) else None

    return {"phase": p.phase, "candidates": p.candidates, "fitting": p.fitting,
            "plans_evaluated": p.simulated, "best": num(p.best), "bound": num(p.bound),
            "elapsed_s": round(p.elapsed_s, 3)}


class JobRunner:
    """Runs claimed searches for one worker."""

    def __init__(self, db: Database, settings: Settings, worker: str,
                 shutdown: threading.Event, *, exit_when_stuck: bool = False) -> None:
        self.exit_when_stuck = exit_when_stuck
        """In a worker process of its own: exit (RECYCLE_EXIT) when an overrun search's
        solver does not stop."""
        self.db = db
        self.settings = settings
        self.worker = worker
        self.shutdown = shutdown

    def run(self, claim: Claim) -> str:
        """Run ``claim`` to its end; returns what happened (an attempt outcome)."""
        s = self.settings
        stop = threading.Event()
        done = threading.Event()
        reason: list[str] = []
        latest: list[dict[str, Any] | None] = [None]
        overrun_at = time.monotonic() + _time_limit_s(claim.request) + s.search_overrun_s

        def beat() -> None:
            # a cheap cancellation read every cancel_poll_s, the lease renewed every
            # heartbeat_s, and the overrun guard
            renew_at = time.monotonic() + s.heartbeat_s
            while not done.wait(min(s.cancel_poll_s, s.heartbeat_s)):
                now = time.monotonic()
                if now >= overrun_at:
                    self._overran(claim, stop, done, reason)
                    return
                try:
                    if now >= renew_at:
                        state = queue.heartbeat(self.db, claim, self.worker,
                                                lease_s=s.lease_s, progress=latest[0])
                        renew_at = now + s.heartbeat_s
                    else:
                        state = queue.check(self.db, claim, self.worker)
                except Exception:  # the database is away: keep the solver going, retry
                    logger.warning("search %s: heartbeat failed", claim.id, exc_info=True)
                    continue
                if state != "ok":
                    reason.append(state)
                    stop.set()
                    return

        def on_progress(p: SearchProgress) -> None:
            latest[0] = progress_json(p)

        def should_stop() -> bool:
            return stop.is_set() or self.shutdown.is_set()

        thread = threading.Thread(target=beat, name=f"heartbeat-{claim.id}", daemon=True)
        thread.start()
        logger.info("search %s: attempt %d on %s", claim.id, claim.attempt, self.worker)
        try:
            return self._solve(claim, on_progress, should_stop, reason, latest)
        finally:
            done.set()
            thread.join()

    def _overran(self, claim: Claim, stop: threading.Event, done: threading.Event,
                 reason: list[str]) -> None:
        """The solver is still running search_overrun_s after its time limit: fail the search
        (so that no worker takes it up again), ask the solver to stop, and, in a worker
        process of its own, exit to be replaced if it has not stopped within the same
        margin (a solver that ignores its deadline would hold the process forever)."""
        s = self.settings
        limit = _time_limit_s(claim.request)
        logger.error("search %s: still running %.0f s after its time_limit_s of %.0f s; "
                     "stopping it", claim.id, s.search_overrun_s, limit)
        reason.append("overrun")
        try:
            queue.fail(self.db, claim, self.worker, {
                "type": queue.FAILED, "title": "Search overran its time limit", "status": 500,
                "detail": f"the solver was still running {s.search_overrun_s:.0f} s after "
                          f"time_limit_s={limit:g} (MESHPLAN_SEARCH_OVERRUN_S) and was "
                          "stopped; this is a defect of the solver and has been logged",
                "instance": f"/v1/searches/{claim.id}"})
        except Exception:
            logger.warning("search %s: could not record the overrun", claim.id, exc_info=True)
        stop.set()
        if not done.wait(s.search_overrun_s) and self.exit_when_stuck:
            logger.error("search %s: the solver did not stop; the worker process exits to be "
                         "replaced", claim.id)
            os._exit(RECYCLE_EXIT)

    def _solve(self, claim: Claim, on_progress: Any, should_stop: Any, reason: list[str],
               latest: list[dict[str, Any] | None]) -> str:
        instance = f"/v1/searches/{claim.id}"
        try:
            req = SearchRequest.model_validate(claim.request)
            result = solver.search(req, progress=on_progress, should_stop=should_stop,
                                   launchable=framework_refusals,
                                   memory_cap_bytes=self.settings.max_search_memory_mb << 20)
        except SearchCancelled:
            why = reason[0] if reason else "shutdown"
            if why == "overrun":
                return "failed"  # recorded by _overran
            if why == "cancel":
                queue.cancelled(self.db, claim, self.worker)
                logger.info("search %s: cancelled", claim.id)
                return "cancelled"
            if why == "lost":
                logger.warning("search %s: lease lost to another worker; work dropped",
                               claim.id)
                return "lease_lost"
            queue.release(self.db, claim, self.worker)
            logger.info("search %s: released (worker shutting down)", claim.id)
            return "released"
        except ValidationError as exc:
            return self._failed(claim, _invalid(from_pydantic(exc.errors()), instance))
        except SpecError as exc:
            return self._failed(claim, _invalid(exc.problems, instance))
        except Exception:
            logger.exception("search %s: the solver failed", claim.id)
            return self._failed(claim, {
                "type": queue.FAILED, "title": "Search failed", "status": 500,
                "detail": INTERNAL_DETAIL, "instance": instance})
        return self._store(claim, req, result, latest[0])

    def _store(self, claim: Claim, req: SearchRequest, result: SearchResult,
               last_progress: dict[str, Any] | None) -> str:
        data = result.model_dump(mode="json")
        bad = non_finite_fields(data)
        if bad:
            return self._failed(claim, _invalid(
                [FieldProblem("body", "the inputs are outside the range the cost model can "
                                      f"evaluate: {', '.join(bad[:5])} came out infinite or "
                                      "undefined")], f"/v1/searches/{claim.id}"))
        plans: list[Plan] = []
        objective = data["optimality"]["objective"]
        for ranked in data["plans"]:
            plan_id = uuid.uuid4()
            ranked["id"] = str(plan_id)
            plans.append(Plan(
                id=plan_id, search_id=claim.id, owner_id=claim.owner_id, rank=ranked["rank"],
                objective=objective, objective_value=ranked["objective_value"],
                plan=ranked["plan"], estimate=ranked["estimate"],
                explanation=ranked["explanation"],
                request=req.estimate_request(ranked["plan"], ranked.get("global_batch_size")),
                calibration_id=claim.calibration_id,
                cost_model_version=claim.cost_model_version))
        final = dict(last_progress or {})
        final.update(phase="done", plans_evaluated=result.stats.simulated,
                     candidates=result.stats.candidates, fitting=result.stats.fitting,
                     elapsed_s=round(result.stats.elapsed_s, 3))
        if queue.complete(self.db, claim, self.worker, result=data, plans=plans,
                          progress=final):
            logger.info("search %s: succeeded with %d plans in %.2f s", claim.id,
                        len(plans), result.stats.elapsed_s)
            return "succeeded"
        logger.warning("search %s: finished after its lease was lost; result dropped", claim.id)
        return "lease_lost"

    def _failed(self, claim: Claim, error: dict[str, Any]) -> str:
        queue.fail(self.db, claim, self.worker, error)
        logger.info("search %s: failed: %s", claim.id, error.get("detail"))
        return "failed"


def _time_limit_s(request: dict[str, Any]) -> float:
    """The search's ``time_limit_s`` (its default where the stored body has none)."""
    value = request.get("time_limit_s") if isinstance(request, dict) else None
    if isinstance(value, int | float) and math.isfinite(value) and value > 0:
        return float(value)
    default = SearchRequest.model_fields["time_limit_s"].default
    return float(default)


def _invalid(problems: Any, instance: str) -> dict[str, Any]:
    errors = [{"field": p.field, "rule": p.rule} for p in problems]
    detail = (f"{errors[0]['field']}: {errors[0]['rule']}" if len(errors) == 1
              else f"{len(errors)} problems with the request; see errors")
    return {"type": INVALID_INPUT, "title": "Invalid input", "status": 422, "detail": detail,
            "instance": instance, "errors": errors}
