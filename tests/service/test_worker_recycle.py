"""A worker whose resident memory is above MESHPLAN_WORKER_MAX_RSS_MB after a search exits and
is replaced by a fresh process; the queue's searches all complete, none twice."""

from __future__ import annotations

import copy
import threading
import uuid

from service.db.engine import Database
from service.db.models import SearchJob
from service.jobs.worker import RECYCLE_EXIT, Worker, WorkerProcesses, resident_mib
from service.settings import Settings
from tests.service.support import SMALL_SEARCH, Api, wait_until


def _submit(client: Api, n: int) -> list[str]:
    ids = []
    for i in range(n):
        body = copy.deepcopy(SMALL_SEARCH)
        body["seed"] = i  # distinct requests (identical ones share one stored search)
        resp = client.post("/v1/searches", json=body)
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    return ids


def _status(db: Database, ident: str) -> str:
    with db.session() as s:
        row = s.get(SearchJob, uuid.UUID(ident))
        assert row is not None
        return row.status


def test_a_worker_over_its_memory_limit_stops_after_the_search(
        client: Api, db: Database, db_settings: Settings) -> None:
    rss = resident_mib()
    assert rss is not None and rss > 1
    ids = _submit(client, 2)
    settings = db_settings.model_copy(update={"worker_max_rss_mb": 1})
    worker = Worker(db, settings, name="small-worker")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive(), "the worker did not stop after its search"
    assert worker.recycle
    assert sorted(_status(db, i) for i in ids) == ["queued", "succeeded"]


def test_the_replacement_process_runs_the_rest_of_the_queue(
        client: Api, db: Database, db_settings: Settings) -> None:
    ids = _submit(client, 2)
    settings = db_settings.model_copy(update={"worker_max_rss_mb": 1})
    processes = WorkerProcesses(settings, 1)
    processes.start()
    first = processes.processes[0]
    try:
        wait_until(lambda: all(_status(db, i) == "succeeded" for i in ids), 180,
                   "both searches to succeed")
        wait_until(lambda: processes.replaced >= 1, 30, "a replacement process")
    finally:
        processes.stop(timeout=30)
    assert first.exitcode == RECYCLE_EXIT
