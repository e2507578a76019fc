"""Real worker processes (``python -m service worker``) against SQLite and PostgreSQL.

* A worker SIGKILLed in the middle of a search loses nothing: another worker takes the search
  up once the lease expires, and it completes.
* Two worker processes on PostgreSQL never run the same search at once: every search is
  claimed exactly once (the claims are recorded with their times in ``search_attempts``).
* SIGTERM gives a running search back to the queue; ``meshplan serve`` stops its workers.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from service.db.engine import Database
from service.db.models import SearchAttempt, SearchJob
from tests.service.conftest import ROOT
from tests.service.support import SMALL_SEARCH, Api, long_search, wait_until

Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def spawn(db: Database, tmp_path: Path) -> Iterator[Spawn]:
    """Starts ``python -m service worker`` on ``db``; every process is killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    url = db.url.render_as_string(hide_password=False)

    def start(*args: str, **env: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"worker-{len(procs)}.log"
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHPLAN_DATABASE_URL": url,
                    "MESHPLAN_LEASE_S": "2", "MESHPLAN_HEARTBEAT_S": "0.2",
                    "MESHPLAN_POLL_S": "0.05", "MESHPLAN_LOG_LEVEL": "info", **env}
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "service", "worker", *args],
                                    cwd=ROOT, env=full_env, stdout=fh,
                                    stderr=subprocess.STDOUT)
        proc.log = log  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=30)


def search(db: Database, ident: str) -> SearchJob:
    with db.session() as s:
        row = s.get(SearchJob, uuid.UUID(ident))
        assert row is not None
        return row


def attempts(db: Database, ident: str) -> list[SearchAttempt]:
    with db.session() as s:
        return list(s.scalars(select(SearchAttempt)
                              .where(SearchAttempt.search_id == uuid.UUID(ident))
                              .order_by(SearchAttempt.attempt)))


def test_sigkill_mid_search_loses_nothing(client: Api, db: Database, spawn: Spawn) -> None:
    ident = client.post("/v1/searches", json=long_search(6)).json()["id"]
    first = spawn()

    def simulating() -> bool:
        progress = search(db, ident).progress or {}
        return progress.get("phase") in ("simulating", "refining")

    wait_until(simulating, 120, "the first worker's progress to reach the simulation")
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(timeout=30) == -signal.SIGKILL
    killed = search(db, ident)
    assert killed.status == "running" and killed.result is None  # nothing finished it

    spawn()

    def finished() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/v1/searches/{ident}", params={"wait": 30}).json()
        return body if body["status"] not in ("queued", "running") else None

    body = wait_until(finished, 180, "the second worker to finish the search")
    assert body["status"] == "succeeded", body
    assert body["attempts"] == 2 and body["result"]["plans"]
    assert [(a.attempt, a.outcome) for a in attempts(db, ident)] == [
        (1, "lease_expired"), (2, "succeeded")]
    a1, a2 = attempts(db, ident)
    assert a1.worker != a2.worker
    assert a2.claimed_at >= a1.claimed_at


def test_two_workers_never_run_one_search_at_once(pg_db: Database, tmp_path: Path) -> None:
    """PostgreSQL, ``meshplan worker --processes 2``, 16 searches: each is claimed exactly
    once and succeeds, and both processes worked."""
    from service.app import create_app
    from service.settings import Settings
    from tests.service.conftest import FAST_JOBS

    url = pg_db.url.render_as_string(hide_password=False)
    api = Api(create_app(Settings(database_url=url, **FAST_JOBS), db=pg_db))
    log = tmp_path / "workers.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHPLAN_DATABASE_URL": url,
           "MESHPLAN_LEASE_S": "5", "MESHPLAN_HEARTBEAT_S": "0.5", "MESHPLAN_POLL_S": "0.02"}
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "service", "worker", "--processes",
                                 "2"], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        ids = []
        for seed in range(16):
            body = copy.deepcopy(SMALL_SEARCH)
            body.update(seed=seed, top_k=1)
            ids.append(api.post("/v1/searches", json=body).json()["id"])

        def all_done() -> bool:
            with pg_db.session() as s:
                return all(j.status == "succeeded" for j in s.scalars(select(SearchJob)))

        wait_until(all_done, 300, "16 searches to succeed", interval=0.2)
        with pg_db.session() as s:
            claims = list(s.scalars(select(SearchAttempt)))
        per_search: dict[Any, list[SearchAttempt]] = {}
        for c in claims:
            per_search.setdefault(c.search_id, []).append(c)
        assert sorted(str(k) for k in per_search) == sorted(ids)
        for claims_of_one in per_search.values():
            assert len(claims_of_one) == 1, claims_of_one
            (c,) = claims_of_one
            assert c.outcome == "succeeded" and c.ended_at is not None
            assert c.ended_at >= c.claimed_at
        workers = {c.worker for c in claims}
        assert len(workers) == 2, f"one process did all the work: {workers}\n" \
            + log.read_text(errors="replace")[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        api.close()
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]


def test_sigterm_gives_the_running_search_back(sqlite_db: Database, tmp_path: Path) -> None:
    from service.app import create_app
    from service.settings import Settings
    from tests.service.conftest import FAST_JOBS

    db = sqlite_db
    url = db.url.render_as_string(hide_password=False)
    api = Api(create_app(Settings(database_url=url, **FAST_JOBS), db=db))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHPLAN_DATABASE_URL": url,
           "MESHPLAN_HEARTBEAT_S": "0.2", "MESHPLAN_LEASE_S": "30", "MESHPLAN_POLL_S": "0.05"}
    with open(tmp_path / "w.log", "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "service", "worker"], cwd=ROOT,
                                env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        ident = api.post("/v1/searches", json=long_search(60)).json()["id"]
        wait_until(lambda: search(db, ident).status == "running", 120, "the claim")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        row = search(db, ident)
        # back in the queue at once, not after the 30 s lease
        assert row.status == "queued" and row.lease_owner is None
        assert [a.outcome for a in attempts(db, ident)] == ["released"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        api.close()


def _children(pid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(entry.name))
    return out


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc to find child processes")
def test_serve_starts_and_stops_its_workers(tmp_path: Path) -> None:
    import socket

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHPLAN_WORKERS": "2",
           "MESHPLAN_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}"}
    with open(tmp_path / "serve.log", "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "service", "serve", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 60, "the server")

        def two_workers() -> set[int] | None:
            found = {p for p in _children(proc.pid) if "spawn_main" in _cmdline(p)}
            return found if len(found) == 2 else None

        workers = wait_until(two_workers, 30, "two worker processes")
        wait_until(lambda: (tmp_path / "serve.log").read_text(errors="replace")
                   .count(": started on ") == 2, 60, "the workers to start their loops")
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=60) == 0
        assert all(not Path(f"/proc/{p}").exists() or _zombie(p) for p in workers)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp_path / "serve.log").read_text(errors="replace")
    assert "started 2 worker process(es)" in log and log.count(": stopped") == 2


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:
        return ""


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _children(pid: int) -> set[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out |= {int(c) for c in (task / "children").read_text().split()}
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_workers_die_with_a_killed_parent(sqlite_db: Database, tmp_path: Path) -> None:
    """``meshplan worker`` SIGKILLed (no cleanup at all) leaves no worker process behind: each
    asked the kernel to kill it with its parent (PR_SET_PDEATHSIG)."""
    url = sqlite_db.url.render_as_string(hide_password=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHPLAN_DATABASE_URL": url}
    log = tmp_path / "workers.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "service", "worker", "--processes",
                                 "2"], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        # both workers fully started (past the start-up check that exits a worker whose
        # spawner is already gone): only the death signal can stop them now
        wait_until(lambda: log.read_text(errors="replace").count("started on") >= 2, 60,
                   "two workers to start")
        kids = _children(proc.pid)
        proc.kill()
        proc.wait(timeout=10)
        wait_until(lambda: not any(_alive(k) for k in kids), 10, "the workers to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
