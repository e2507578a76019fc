"""A running search is cancelled within 2 s, and a search whose solver overruns its time
limit is stopped and failed, not renewed forever (issue 11), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from service.app import create_app
from service.db.engine import Database
from service.jobs import runner
from service.jobs.worker import RECYCLE_EXIT, Worker
from service.settings import Settings
from solver.search import SearchCancelled
from tests.service.support import SMALL_SEARCH, Api, long_search, wait_until


def settings_for(db: Database, **changes: Any) -> Settings:
    """The production timing (heartbeat 5 s, lease 30 s) unless changed: the cancellation
    must not wait for a heartbeat."""
    return Settings(database_url=db.url.render_as_string(hide_password=False), poll_s=0.05,
                    **changes)


def start_worker(db: Database, s: Settings) -> tuple[Worker, threading.Thread]:
    w = Worker(db, s, name="deadline-worker")
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    return w, thread


@pytest.fixture
def stop_workers() -> Iterator[list[tuple[Worker, threading.Thread]]]:
    started: list[tuple[Worker, threading.Thread]] = []
    yield started
    for w, thread in started:
        w.shutdown.set()
        thread.join(timeout=30)


def status_of(client: Api, search_id: str) -> str:
    return str(client.get(f"/v1/searches/{search_id}").json()["status"])


def test_a_running_search_is_cancelled_within_2_s(
        db: Database, stop_workers: list[tuple[Worker, threading.Thread]]) -> None:
    s = settings_for(db)
    assert s.heartbeat_s >= 5  # the default: a cancel seen only at heartbeats would take 5 s
    client = Api(create_app(s, db=db))
    stop_workers.append(start_worker(db, s))
    search_id = client.post("/v1/searches", json=long_search(60)).json()["id"]
    wait_until(lambda: status_of(client, search_id) == "running", 60, "the search to run")
    time.sleep(1.0)  # well inside enumeration or the branch and bound
    t = time.monotonic()
    assert client.request("DELETE", f"/v1/searches/{search_id}").status_code == 202
    wait_until(lambda: status_of(client, search_id) == "cancelled", 30, "the cancellation")
    took = time.monotonic() - t
    client.close()
    assert took <= 2.0, f"cancelled {took:.2f} s after DELETE"


def test_a_search_that_overruns_its_limit_is_stopped_and_failed(
        db: Database, stop_workers: list[tuple[Worker, threading.Thread]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A solver that ignores its deadline (a defect that cannot be produced on demand, so the
    solver is replaced by one that polls only ``should_stop``): MESHPLAN_SEARCH_OVERRUN_S
    after time_limit_s the search is failed with a problem that says so, and the solver is
    stopped; no worker takes it up again."""
    calls: list[float] = []

    def overrunning(req: Any, *, should_stop: Any, **kw: Any) -> Any:
        calls.append(time.monotonic())
        while not should_stop():
            time.sleep(0.01)
        raise SearchCancelled("stopped")

    monkeypatch.setattr(runner.solver, "search", overrunning)
    s = settings_for(db, search_overrun_s=1.0, heartbeat_s=0.2, lease_s=2.0)
    client = Api(create_app(s, db=db))
    stop_workers.append(start_worker(db, s))
    search_id = client.post("/v1/searches", json={**SMALL_SEARCH, "time_limit_s": 1}).json()["id"]
    body = wait_until(lambda: (r := client.get(f"/v1/searches/{search_id}").json())["status"]
                      == "failed" and r, 30, "the overrun search to fail")
    client.close()
    assert body["error"]["title"] == "Search overran its time limit"
    assert "MESHPLAN_SEARCH_OVERRUN_S" in body["error"]["detail"]
    time.sleep(2.5)  # past the lease: nobody claims it again
    assert len(calls) == 1


def test_a_worker_process_whose_solver_does_not_stop_exits_to_be_replaced(
        sqlite_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The solver ignores even ``should_stop``: a runner in a worker process of its own exits
    with RECYCLE_EXIT (the process supervisor starts a fresh one) once the overrun margin has
    passed twice; the exit is recorded instead of ending the test process."""
    exited = threading.Event()
    codes: list[int] = []

    def record_exit(code: int) -> None:
        codes.append(code)
        exited.set()

    def deaf(req: Any, **kw: Any) -> Any:
        exited.wait(30)
        raise SearchCancelled("stopped")

    monkeypatch.setattr(runner.solver, "search", deaf)
    monkeypatch.setattr(runner.os, "_exit", record_exit)
    s = settings_for(sqlite_db, search_overrun_s=0.5, heartbeat_s=0.2, lease_s=2.0)
    client = Api(create_app(s, db=sqlite_db))
    search_id = client.post("/v1/searches", json={**SMALL_SEARCH, "time_limit_s": 1}).json()["id"]
    w = Worker(sqlite_db, s, name="own-process", own_process=True)
    t = time.monotonic()
    assert w.run_once() == "failed"
    assert codes == [RECYCLE_EXIT] and time.monotonic() - t < 10
    assert client.get(f"/v1/searches/{search_id}").json()["status"] == "failed"
    client.close()
