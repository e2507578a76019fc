"""A PostgreSQL outage is a 503 with Retry-After, and the service recovers by itself.

Runs against a private PostgreSQL cluster (initdb as user postgres into a temporary folder,
its own port), never the shared server: the test stops and restarts it. Skipped where the
server binaries or the postgres user are missing, unless ``MESHPLAN_REQUIRE_POSTGRES=1``.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.db import migrate
from service.db.engine import Database
from service.settings import Settings
from tests.service.support import SMALL_SEARCH

BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def _missing(reason: str) -> None:
    if os.environ.get("MESHPLAN_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"MESHPLAN_REQUIRE_POSTGRES=1 but {reason}")
    pytest.skip(reason)


def _as_postgres(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = list(args)
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


class Cluster:
    def __init__(self, root: Path, port: int) -> None:
        self.data, self.port = root / "data", port
        self.ctl = str(Path(BIN[-1]) / "pg_ctl")
        self.opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        self.log = root / "server.log"

    def start(self) -> None:
        r = _as_postgres(self.ctl, "-D", str(self.data), "-o", self.opts, "-l", str(self.log),
                         "-w", "start")
        assert r.returncode == 0, r.stderr + self.log.read_text()

    def stop(self) -> None:
        r = _as_postgres(self.ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")
        assert r.returncode == 0, r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def cluster() -> Iterator[Cluster]:
    if not BIN or (not shutil.which("runuser") and os.geteuid() == 0):
        _missing("no PostgreSQL server binaries (/usr/lib/postgresql/*/bin) or runuser")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        _missing("no postgres user to run a private cluster as")
    root = Path(tempfile.mkdtemp(prefix="meshplan-pg-"))
    os.chmod(root, 0o777)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    r = _as_postgres(str(Path(BIN[-1]) / "initdb"), "-D", str(root / "data"), "-U", "postgres",
                     "--auth=trust", "-E", "UTF8")
    assert r.returncode == 0, r.stderr
    c = Cluster(root, _free_port())
    c.start()
    try:
        yield c
    finally:
        _as_postgres(c.ctl, "-D", str(c.data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_outage_is_503_and_the_service_recovers(cluster: Cluster,
                                                caplog: pytest.LogCaptureFixture) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{cluster.port}/postgres"
    db = Database(url)
    migrate.upgrade(db)
    client = TestClient(create_app(Settings(database_url=url), db=db))
    try:
        acked = client.post("/v1/searches", json=SMALL_SEARCH)
        assert acked.status_code == 202, acked.text
        assert client.get("/v1/searches").status_code == 200

        cluster.stop()
        with caplog.at_level(logging.ERROR, logger="meshplan.service"):
            answers = [client.get("/v1/searches") for _ in range(10)]
            answers.append(client.post("/v1/searches", json={**SMALL_SEARCH, "top_k": 3}))
        for resp in answers:
            assert resp.status_code == 503, resp.text
            assert resp.headers["content-type"].startswith("application/problem+json")
            assert int(resp.headers["retry-after"]) > 0
            assert "database" in resp.json()["detail"]
        # one line per kind of failure, not a traceback per request
        lines = [r for r in caplog.records if "database unavailable" in r.getMessage()]
        assert 1 <= len(lines) <= 2 and all(r.exc_info is None for r in lines)
        assert client.get("/readyz").status_code == 503

        cluster.start()
        deadline = time.monotonic() + 20
        while (resp := client.get("/v1/searches")).status_code != 200:
            assert resp.status_code == 503 and time.monotonic() < deadline, resp.text
            time.sleep(0.5)
        ids = [s["id"] for s in resp.json()]
        assert acked.json()["id"] in ids  # the acknowledged search survived the outage
    finally:
        client.close()
        db.dispose()
