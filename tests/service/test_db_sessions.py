"""Sessions of the SQLite database shared by several processes: writers take the write lock
when they begin (atomic claims), readers take none (reads do not queue)."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select

from service.db.engine import Database
from service.db.models import SearchJob


def test_a_read_session_does_not_wait_for_an_open_write_transaction(sqlite_db: Database
                                                                   ) -> None:
    """Checks: while a write transaction (BEGIN IMMEDIATE) is open, a read session reads at
    once, and a second write session waits until the first one ends."""
    started, release = threading.Event(), threading.Event()

    def writer() -> None:
        with sqlite_db.session() as s:
            s.execute(select(SearchJob.id)).all()  # the transaction (and its lock) is open
            started.set()
            release.wait(10)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert started.wait(10)
        t0 = time.monotonic()
        with sqlite_db.read_session() as s:
            assert s.execute(select(SearchJob.id)).all() == []
        read_s = time.monotonic() - t0

        waited: list[float] = []

        def second_writer() -> None:
            t1 = time.monotonic()
            with sqlite_db.session() as s:
                s.execute(select(SearchJob.id)).all()
            waited.append(time.monotonic() - t1)

        w2 = threading.Thread(target=second_writer)
        w2.start()
        time.sleep(0.5)
        assert w2.is_alive()  # blocked on the write lock
    finally:
        release.set()
        t.join(10)
    w2.join(10)
    assert waited and waited[0] >= 0.5
    assert read_s < 0.5  # did not wait for the writer (which held the lock ≥ 0.5 s longer)
