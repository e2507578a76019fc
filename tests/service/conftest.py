"""Fixtures: databases (SQLite and PostgreSQL, migrated with Alembic), the app, a synchronous
httpx client that drives it through ASGITransport, and workers.

* ``api`` / ``app`` / ``settings``: the app on a SQLite file (the embedded mode), for tests
  that are not about persistence.
* ``db`` is parametrized over both backends; ``client`` is the app on it. The PostgreSQL
  database is created fresh for the test session on ``MESHPLAN_TEST_POSTGRES`` (default
  ``postgresql://postgres@127.0.0.1:5432/test``, its server) and dropped at the end. When the
  server cannot be reached those tests are skipped with the reason — or fail, when
  ``MESHPLAN_REQUIRE_POSTGRES=1`` (what ``.ci/run`` sets).

Both databases are migrated once per session with ``alembic upgrade head`` (never
``create_all``); every test starts from empty tables.
"""

from __future__ import annotations

import copy
import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text

from service.app import create_app
from service.db import migrate
from service.db.base import Base
from service.db.engine import Database
from service.estimates.schemas import LLAMA3_70B_EXAMPLE
from service.jobs.worker import Worker
from service.settings import Settings
from tests.service.support import SMALL_SEARCH, Api

POSTGRES_SERVER = os.environ.get("MESHPLAN_TEST_POSTGRES",
                                 "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_POSTGRES = os.environ.get("MESHPLAN_REQUIRE_POSTGRES") == "1"

FAST_JOBS: dict[str, Any] = {"heartbeat_s": 0.2, "lease_s": 2.0, "poll_s": 0.05}
"""Job timing for tests: a dead worker's search is taken up again after 2 s."""


# ---------------------------------------------------------------------------- databases
@pytest.fixture(scope="session", autouse=True)
def _data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the embedded default database (``MESHPLAN_DATA_DIR``) out of the home directory,
    for this process and the servers and workers it starts."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MESHPLAN_DATA_DIR", str(tmp_path_factory.mktemp("data")))
        yield


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'meshplan.db'}"
    db = Database(url)
    migrate.upgrade(db)
    db.dispose()
    return url


def _postgres_unavailable(reason: str) -> None:
    message = (f"PostgreSQL at {POSTGRES_SERVER} is not usable ({reason}); its tests are "
               "skipped (set MESHPLAN_TEST_POSTGRES to another server)")
    if REQUIRE_POSTGRES:
        pytest.fail(message + " — MESHPLAN_REQUIRE_POSTGRES=1 requires them", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this test session on the PostgreSQL server, migrated."""
    try:
        import psycopg
    except ImportError as exc:
        _postgres_unavailable(f"psycopg is not installed: {exc}")
    from sqlalchemy.engine import make_url

    server = make_url(POSTGRES_SERVER)
    conninfo = dict(host=server.host or "127.0.0.1", port=server.port or 5432,
                    user=server.username or "postgres", dbname=server.database or "postgres")
    if server.password:
        conninfo["password"] = server.password
    try:
        admin = psycopg.connect(**conninfo, autocommit=True, connect_timeout=5)
    except Exception as exc:
        _postgres_unavailable(str(exc).strip().splitlines()[0])
    name = f"meshplan_test_{os.getpid()}_{secrets.token_hex(3)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        url = server.set(drivername="postgresql+psycopg", database=name)
        db = Database(url)
        try:
            migrate.upgrade(db)
        finally:
            db.dispose()
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def empty_tables(db: Database) -> None:
    with db.engine.begin() as conn:
        if db.is_sqlite:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
        else:
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} CASCADE"))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    url: str = request.getfixturevalue(f"{request.param}_url")
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """Empty, migrated tables on each backend."""
    database = Database(db_url)
    empty_tables(database)
    yield database
    database.dispose()


@pytest.fixture
def pg_db(postgres_url: str) -> Iterator[Database]:
    """PostgreSQL only (for what SQLite does not have, like row locks)."""
    database = Database(postgres_url)
    empty_tables(database)
    yield database
    database.dispose()


@pytest.fixture
def sqlite_db(sqlite_url: str) -> Iterator[Database]:
    database = Database(sqlite_url)
    empty_tables(database)
    yield database
    database.dispose()


# ---------------------------------------------------------------------------- apps
@pytest.fixture
def settings(sqlite_url: str) -> Settings:
    return Settings(database_url=sqlite_url, **FAST_JOBS)


@pytest.fixture
def app(settings: Settings, sqlite_db: Database) -> FastAPI:
    return create_app(settings, db=sqlite_db)


@pytest.fixture
def api(app: FastAPI) -> Iterator[Api]:
    client = Api(app)
    yield client
    client.close()


@pytest.fixture
def db_settings(db: Database) -> Settings:
    return Settings(database_url=db.url.render_as_string(hide_password=False), **FAST_JOBS)


@pytest.fixture
def client(db: Database, db_settings: Settings) -> Iterator[Api]:
    """The app on ``db`` (each backend)."""
    c = Api(create_app(db_settings, db=db))
    yield c
    c.close()


@pytest.fixture
def worker(db: Database, db_settings: Settings) -> Worker:
    """A worker in this process (the same code a worker process runs); call
    ``run_until_idle()`` to run what is queued."""
    return Worker(db, db_settings, name="test-worker")


@pytest.fixture
def background_worker(db: Database, db_settings: Settings) -> Iterator[Worker]:
    """A worker loop in a thread, for tests that wait on a search while it runs."""
    w = Worker(db, db_settings, name="background-worker")
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    yield w
    w.shutdown.set()
    thread.join(timeout=30)


@pytest.fixture
def example() -> dict[str, Any]:
    """A fresh copy of the documented Llama-3-70B request."""
    return copy.deepcopy(LLAMA3_70B_EXAMPLE)


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def plan_id(client: Api, worker: Worker) -> str:
    """The best plan of a small search, run to the end by ``worker``."""
    search_id = client.post("/v1/searches", json=SMALL_SEARCH).json()["id"]
    worker.run_until_idle()
    ident: str = client.get(f"/v1/searches/{search_id}").json()["result"]["plans"][0]["id"]
    return ident
