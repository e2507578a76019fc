"""The Alembic chain on SQLite and PostgreSQL: upgrade to head, the models match the
migrations (autogenerate finds nothing to do), downgrade to base, upgrade again; readiness
reports pending migrations; ``meshplan db``."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from service.app import create_app
from service.cli import main
from service.db import migrate
from service.db.base import Base
from service.db.engine import Database
from service.settings import Settings
from tests.service.conftest import FAST_JOBS, POSTGRES_SERVER, ROOT
from tests.service.support import SMALL_SEARCH, Api, assert_problem, wait_until

TABLES = {"api_keys", "calibrations", "searches", "search_attempts", "plans", "runs"}


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    request.getfixturevalue("postgres_url")  # skips (or fails) when PostgreSQL is away
    with fresh_postgres() as url:
        yield url


@contextmanager
def fresh_postgres() -> Iterator[str]:
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(POSTGRES_SERVER)
    name = f"meshplan_mig_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(host=server.host, port=server.port or 5432,
                         user=server.username or "postgres", password=server.password,
                         dbname=server.database or "postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield server.set(drivername="postgresql+psycopg", database=name).render_as_string(
                hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def tables(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_upgrade_matches_the_models_and_downgrades_to_base(empty_url: str) -> None:
    db = Database(empty_url)
    try:
        assert migrate.current(db) is None and tables(db) == set()
        migrate.upgrade(db)
        assert migrate.current(db) == migrate.head() and tables(db) == TABLES
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(
                conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], diff
        migrate.downgrade(db, "base")
        assert migrate.current(db) is None and tables(db) == set()
        migrate.upgrade(db)
        assert tables(db) == TABLES
    finally:
        db.dispose()


def test_readiness_reports_pending_migrations(empty_url: str) -> None:
    db = Database(empty_url)
    api = Api(create_app(Settings(database_url=empty_url), db=db))
    try:
        body = assert_problem(api.get("/readyz"), 503)
        assert body["detail"] == "not ready: migrations pending"
        migrate.upgrade(db)
        assert api.get("/readyz").json()["checks"]["migrations"] == "ok"
    finally:
        api.close()
        db.dispose()


def test_readiness_reports_an_unreachable_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'x' / 'db.sqlite'}"
    db = Database(url)
    (tmp_path / "missing-dir" / "x").rmdir()  # the file cannot be created any more
    api = Api(create_app(Settings(database_url=url), db=db))
    try:
        body = assert_problem(api.get("/readyz"), 503)
        assert body["detail"] == "not ready: database failed, migrations failed"
        assert "missing-dir" not in body["detail"]
        metrics = api.get("/metrics")
        assert metrics.status_code == 200 and "meshplan_database_up 0" in metrics.text
    finally:
        api.close()
        db.dispose()


def test_db_commands(empty_url: str, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MESHPLAN_DATABASE_URL", empty_url)
    assert main(["db", "current"]) == 1
    assert "run `meshplan db upgrade`" in capsys.readouterr().out
    assert main(["db", "upgrade"]) == 0
    assert f"at revision {migrate.head()}" in capsys.readouterr().out
    assert main(["db", "current"]) == 0
    assert "(latest)" in capsys.readouterr().out
    assert main(["db", "downgrade", "base"]) == 0
    assert main(["db", "upgrade", "nonexistent"]) == 1
    assert "upgrade of" in capsys.readouterr().err


def test_embedded_sqlite_is_migrated_on_start_postgres_is_not(tmp_path: Path) -> None:
    """The lifespan of the app migrates an embedded SQLite database (zero setup) and leaves
    PostgreSQL to `meshplan db upgrade`."""
    sqlite = Database(f"sqlite:///{tmp_path / 'embedded.db'}")
    assert migrate.upgrade_if_embedded(sqlite) is True
    assert migrate.is_current(sqlite)
    assert migrate.upgrade_if_embedded(sqlite) is False  # already there
    sqlite.dispose()
    pg = Database("postgresql+psycopg://nobody@127.0.0.1:1/never")
    assert migrate.upgrade_if_embedded(pg) is False  # not even connected to
    pg.dispose()


def test_worker_waits_for_the_schema(postgres_url: str, tmp_path: Path) -> None:
    """A release rollout on PostgreSQL: workers started before `meshplan db upgrade` wait for
    it (they do not migrate PostgreSQL themselves), then run searches."""
    with fresh_postgres() as url:
        log = tmp_path / "worker.log"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHPLAN_DATABASE_URL": url,
               "MESHPLAN_POLL_S": "0.05"}
        with open(log, "wb") as fh:
            proc = subprocess.Popen([sys.executable, "-m", "service", "worker"], cwd=ROOT,
                                    env=env, stdout=fh, stderr=subprocess.STDOUT)
        db = Database(url)
        api = Api(create_app(Settings(database_url=url, **FAST_JOBS), db=db))
        try:
            wait_until(lambda: "run `meshplan db upgrade`; waiting" in log.read_text(), 60,
                       "the worker to report the missing schema")
            assert migrate.current(db) is None  # it did not migrate
            migrate.upgrade(db)
            ident = api.post("/v1/searches", json=SMALL_SEARCH).json()["id"]
            done = api.get(f"/v1/searches/{ident}", params={"wait": 60}).json()
            assert done["status"] == "succeeded", log.read_text()[-2000:]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            api.close()
            db.dispose()
