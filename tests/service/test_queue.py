"""The job queue on SQLite and PostgreSQL: claims, leases, heartbeats, take-over after a dead
worker, poison searches, cancellation and release, and concurrent claims."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

from sqlalchemy import select

from service.db.engine import Database
from service.db.models import SearchAttempt, SearchJob
from service.jobs import queue
from service.jobs.queue import Claim

LEASE = 0.4


def enqueue(db: Database, n: int = 1) -> list[uuid.UUID]:
    """``n`` queued searches, oldest first (the request is not run here). They are 2 ms apart:
    SQLite's clock (the database's, see service.db.base) counts milliseconds, and searches
    created within one millisecond are claimed in id order, not in insertion order."""
    ids = []
    for i in range(n):
        if i:
            time.sleep(0.002)
        with db.session() as s:
            job = SearchJob(request={"i": i}, request_hash=f"{i:064d}", dedup_key=f"k{i}",
                            cost_model_version="test", status="queued", attempts=0,
                            cancel_requested=False)
            s.add(job)
            s.flush()
            ids.append(job.id)
    return ids


def job(db: Database, ident: uuid.UUID) -> SearchJob:
    with db.session() as s:
        row = s.get(SearchJob, ident)
        assert row is not None
        return row


def attempts(db: Database, ident: uuid.UUID) -> list[tuple[int, str, str | None]]:
    with db.session() as s:
        return [(a.attempt, a.worker, a.outcome) for a in s.scalars(
            select(SearchAttempt).where(SearchAttempt.search_id == ident)
            .order_by(SearchAttempt.attempt))]


def claim(db: Database, worker: str, lease: float = LEASE, max_attempts: int = 3
          ) -> Claim | None:
    return queue.claim(db, worker, lease_s=lease, max_attempts=max_attempts)


def test_claims_oldest_first_and_each_once(db: Database) -> None:
    ids = enqueue(db, 3)
    got = [claim(db, "w1", lease=60) for _ in range(4)]
    assert [c.id if c else None for c in got] == [*ids, None]
    first = job(db, ids[0])
    assert first.status == "running" and first.lease_owner == "w1" and first.attempts == 1
    assert first.started_at is not None and first.lease_expires_at is not None
    assert first.lease_expires_at > first.heartbeat_at  # type: ignore[operator]


def test_heartbeat_renews_the_lease_and_reports_cancellation(db: Database) -> None:
    (ident,) = enqueue(db)
    c = claim(db, "w1")
    assert c is not None
    before = job(db, ident).lease_expires_at
    time.sleep(0.05)
    assert queue.heartbeat(db, c, "w1", lease_s=LEASE, progress={"phase": "simulating"}
                           ) == "ok"
    after = job(db, ident)
    assert after.lease_expires_at > before  # type: ignore[operator]
    assert after.progress == {"phase": "simulating"}
    with db.session() as s:
        row = s.get(SearchJob, ident)
        assert row is not None
        row.cancel_requested = True
    assert queue.heartbeat(db, c, "w1", lease_s=LEASE, progress=None) == "cancel"
    assert queue.cancelled(db, c, "w1")
    row = job(db, ident)
    assert row.status == "cancelled" and row.dedup_key is None and row.lease_owner is None
    assert attempts(db, ident) == [(1, "w1", "cancelled")]


def test_a_dead_workers_search_is_taken_up_again(db: Database) -> None:
    """w1 claims and stops heartbeating; after the lease, w2 takes the search (attempt 2); w1,
    back from its stall, has lost it: its heartbeat says so and its result is not written."""
    (ident,) = enqueue(db)
    c1 = claim(db, "w1")
    assert c1 is not None
    assert claim(db, "w2") is None  # the lease holds
    time.sleep(LEASE + 0.3)
    c2 = claim(db, "w2", lease=60)
    assert c2 is not None and c2.id == ident and c2.attempt == 2
    assert queue.heartbeat(db, c1, "w1", lease_s=LEASE, progress=None) == "lost"
    assert not queue.complete(db, c1, "w1", result={"stale": True}, plans=[], progress=None)
    assert not queue.fail(db, c1, "w1", {"detail": "stale"})
    assert queue.complete(db, c2, "w2", result={"plans": []}, plans=[], progress=None)
    row = job(db, ident)
    assert row.status == "succeeded" and row.result == {"plans": []} and row.attempts == 2
    assert attempts(db, ident) == [(1, "w1", "lease_expired"), (2, "w2", "succeeded")]


def test_a_search_that_kills_its_workers_is_failed_after_max_attempts(db: Database) -> None:
    (ident,) = enqueue(db)
    for worker in ("w1", "w2"):
        assert claim(db, worker, max_attempts=2) is not None
        time.sleep(LEASE + 0.3)
    assert claim(db, "w3", max_attempts=2) is None
    row = job(db, ident)
    assert row.status == "failed" and row.dedup_key is None
    assert row.error is not None and row.error["type"] == queue.ABANDONED
    assert "2 workers in turn claimed the search" in row.error["detail"]
    assert [a[2] for a in attempts(db, ident)] == ["lease_expired", "lease_expired"]


def test_release_gives_the_search_back_without_counting_it(db: Database) -> None:
    (ident,) = enqueue(db)
    for i in range(4):  # released attempts never make it a poison search
        c = claim(db, f"w{i}", max_attempts=1)
        assert c is not None and c.attempt == i + 1
        assert queue.release(db, c, f"w{i}")
        assert job(db, ident).status == "queued"
    assert [a[2] for a in attempts(db, ident)] == ["released"] * 4


def test_concurrent_claims_take_each_search_exactly_once(db: Database) -> None:
    """Eight threads, each with its own connections, claim until the queue is empty."""
    ids = enqueue(db, 40)
    claimed: list[uuid.UUID] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def run(name: str) -> None:
        mine = Database(db.url)
        try:
            start.wait()
            while (c := claim(mine, name, lease=60)) is not None:
                with lock:
                    claimed.append(c.id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            mine.dispose()

    threads = [threading.Thread(target=run, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert Counter(claimed) == Counter(ids)


def test_skip_locked_passes_over_a_search_being_claimed(pg_db: Database) -> None:
    """PostgreSQL: while one transaction holds the oldest search ``FOR UPDATE`` (a claim in
    progress), another claim does not wait for it and takes the next one. (SQLite has one
    writer at a time; there the claim is atomic by BEGIN IMMEDIATE, which the concurrent-claims
    test covers.)"""
    db = pg_db
    first, second = enqueue(db, 2)
    holder = db.sessionmaker()
    try:
        held = holder.scalars(select(SearchJob).where(SearchJob.status == "queued")
                              .order_by(SearchJob.created_at).limit(1)
                              .with_for_update(skip_locked=True)).first()
        assert held is not None and held.id == first
        got: dict[str, Any] = {}
        t = threading.Thread(target=lambda: got.update(c=claim(db, "w2", lease=60)))
        t.start()
        t.join(timeout=10)
        assert not t.is_alive(), "the claim waited for the locked row"
        assert got["c"] is not None and got["c"].id == second
    finally:
        holder.rollback()
        holder.close()
    c = claim(db, "w3", lease=60)
    assert c is not None and c.id == first
