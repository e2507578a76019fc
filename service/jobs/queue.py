"""The search queue's database operations, for workers.

Claiming: the oldest claimable search — ``queued``, or ``running`` with an expired lease — is
selected ``FOR UPDATE SKIP LOCKED`` and updated in the same short transaction. On PostgreSQL,
rows another worker's claim is locking are skipped, so concurrent claims never block on, nor
take, the same row. SQLite has no row locks (the clause is not rendered); there every
transaction begins ``IMMEDIATE`` (:mod:`service.db.engine`), so the select and the update run
under the database's single write lock and the claim is just as atomic.

Every later write of a worker is guarded by ``lease_owner = me AND status = 'running'``: a
worker whose lease was taken over (it stalled past the expiry) cannot overwrite the new
owner's work; it learns so from the heartbeat and stops.

All times come from the database clock (:func:`service.db.base.utcnow`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from service.db.base import utc_after, utcnow
from service.db.engine import Database
from service.db.models import Plan, SearchAttempt, SearchJob

logger = logging.getLogger("meshplan.jobs")

ABANDONED = "urn:meshplan:problem:search-abandoned"
FAILED = "urn:meshplan:problem:search-failed"


@dataclass(frozen=True)
class Claim:
    """A search this worker now holds."""

    id: uuid.UUID
    attempt: int
    request: dict[str, Any]
    owner_id: uuid.UUID | None
    calibration_id: uuid.UUID | None
    cost_model_version: str


HeartbeatState = Literal["ok", "cancel", "lost"]


def _claimable() -> Any:
    return or_(SearchJob.status == "queued",
               and_(SearchJob.status == "running", SearchJob.lease_expires_at < utcnow()))


def _mine(job_id: uuid.UUID, worker: str) -> Any:
    return and_(SearchJob.id == job_id, SearchJob.lease_owner == worker,
                SearchJob.status == "running")


def _end_attempt(session: Session, job_id: uuid.UUID, attempt: int, outcome: str) -> None:
    session.execute(
        update(SearchAttempt)
        .where(SearchAttempt.search_id == job_id, SearchAttempt.attempt == attempt,
               SearchAttempt.ended_at.is_(None))
        .values(ended_at=utcnow(), outcome=outcome))


def claim(db: Database, worker: str, *, lease_s: float, max_attempts: int) -> Claim | None:
    """Take the oldest claimable search, or None when there is none."""
    while True:
        with db.session() as session:
            job = session.scalars(
                select(SearchJob).where(_claimable())
                .order_by(SearchJob.created_at, SearchJob.id).limit(1)
                .with_for_update(skip_locked=True)).first()
            if job is None:
                return None
            if job.status == "running":  # its worker stopped renewing the lease
                logger.warning("search %s: lease of %s expired (attempt %d)", job.id,
                               job.lease_owner, job.attempts)
                _end_attempt(session, job.id, job.attempts, "lease_expired")
                abandoned = session.scalar(
                    select(func.count()).select_from(SearchAttempt)
                    .where(SearchAttempt.search_id == job.id,
                           SearchAttempt.outcome == "lease_expired")) or 0
                if abandoned >= max_attempts:
                    job.status = "failed"
                    job.dedup_key = None
                    job.finished_at = utcnow()
                    job.lease_owner = job.lease_expires_at = None
                    job.error = {
                        "type": ABANDONED, "title": "Search abandoned", "status": 500,
                        "detail": f"{abandoned} workers in turn claimed the search and "
                        "stopped before finishing it (a crash, an out-of-memory kill or "
                        "a machine lost); it is not retried again (MESHPLAN_MAX_ATTEMPTS="
                        f"{max_attempts})",
                        "instance": f"/v1/searches/{job.id}"}
                    continue  # committed by the block; look for the next one
            job.status = "running"
            job.attempts = job.attempts + 1
            job.lease_owner = worker
            job.lease_expires_at = utc_after(lease_s)
            job.heartbeat_at = utcnow()
            if job.started_at is None:
                job.started_at = utcnow()
            attempt = job.attempts
            session.add(SearchAttempt(search_id=job.id, attempt=attempt, worker=worker))
            session.flush()
            return Claim(id=job.id, attempt=attempt, request=job.request,
                         owner_id=job.owner_id, calibration_id=job.calibration_id,
                         cost_model_version=job.cost_model_version)


def heartbeat(db: Database, claim: Claim, worker: str, *, lease_s: float,
              progress: dict[str, Any] | None) -> HeartbeatState:
    """Renew the lease and store the progress; ``cancel`` when a client asked to cancel,
    ``lost`` when the search is no longer this worker's."""
    with db.session() as session:
        values: dict[str, Any] = {"lease_expires_at": utc_after(lease_s),
                                  "heartbeat_at": utcnow()}
        if progress is not None:
            values["progress"] = progress
        n = session.execute(update(SearchJob).where(_mine(claim.id, worker)).values(**values)
                            ).rowcount  # type: ignore[attr-defined]
        if n == 0:
            return "lost"
        cancel = session.scalar(select(SearchJob.cancel_requested)
                                .where(SearchJob.id == claim.id))
        return "cancel" if cancel else "ok"


def check(db: Database, claim: Claim, worker: str) -> HeartbeatState:
    """The search's state as :func:`heartbeat` reports it, without renewing the lease: one
    indexed read, cheap enough to poll every second for a prompt cancellation."""
    with db.session() as session:
        row = session.execute(select(SearchJob.cancel_requested)
                              .where(_mine(claim.id, worker))).first()
    if row is None:
        return "lost"
    return "cancel" if row[0] else "ok"


def complete(db: Database, claim: Claim, worker: str, *, result: dict[str, Any],
             plans: list[Plan], progress: dict[str, Any] | None) -> bool:
    """Store the result and its plans, and mark the search succeeded — if it is still this
    worker's (False otherwise, and nothing is written)."""
    with db.session() as session:
        n = session.execute(
            update(SearchJob).where(_mine(claim.id, worker))
            .values(status="succeeded", result=result, progress=progress,
                    finished_at=utcnow(), lease_owner=None, lease_expires_at=None,
                    cancel_requested=False)).rowcount  # type: ignore[attr-defined]
        if n == 0:
            return False
        session.add_all(plans)
        _end_attempt(session, claim.id, claim.attempt, "succeeded")
        return True


def fail(db: Database, claim: Claim, worker: str, error: dict[str, Any]) -> bool:
    """Mark the search failed with ``error`` (problem details)."""
    return _finish(db, claim, worker, "failed", error=error)


def cancelled(db: Database, claim: Claim, worker: str) -> bool:
    return _finish(db, claim, worker, "cancelled")


def _finish(db: Database, claim: Claim, worker: str, status: str,
            error: dict[str, Any] | None = None) -> bool:
    with db.session() as session:
        n = session.execute(
            update(SearchJob).where(_mine(claim.id, worker))
            .values(status=status, error=error, dedup_key=None, finished_at=utcnow(),
                    lease_owner=None, lease_expires_at=None)
        ).rowcount  # type: ignore[attr-defined]
        if n:
            _end_attempt(session, claim.id, claim.attempt, status)
        return bool(n)


def release(db: Database, claim: Claim, worker: str) -> bool:
    """Give the search back to the queue unfinished (this worker is shutting down). A released
    attempt does not count towards ``max_attempts``; only abandoned ones (expired leases) do."""
    with db.session() as session:
        n = session.execute(
            update(SearchJob).where(_mine(claim.id, worker))
            .values(status="queued", lease_owner=None, lease_expires_at=None)
        ).rowcount  # type: ignore[attr-defined]
        if n:
            _end_attempt(session, claim.id, claim.attempt, "released")
        return bool(n)
