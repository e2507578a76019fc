"""The engine and sessions of one database (SQLite or PostgreSQL).

SQLite is set up for several processes (the API and its embedded workers) sharing one file:

* WAL journal, so readers never wait for the writer, and a 30 s busy timeout;
* every transaction starts with ``BEGIN IMMEDIATE`` (SQLAlchemy's recipe "Serializable
  isolation / Savepoints / Transactional DDL" for pysqlite): the driver's own transaction
  handling is turned off and the write lock is taken when a transaction begins, not when its
  first write comes. A deferred transaction that reads and then writes can fail at once with
  "database is locked" (SQLITE_BUSY_SNAPSHOT) when another process wrote in between; an
  immediate one waits its turn. This is what makes a worker's claim atomic on SQLite, where
  ``FOR UPDATE SKIP LOCKED`` does not exist. Transactions here are milliseconds long.
  Read-only sessions (:meth:`Database.read_session`, the GET endpoints) begin a deferred
  transaction instead: under WAL a reader takes no lock that a writer or another reader waits
  for, so reads do not queue behind each other (they did: one read at a time across all API
  processes, with a p99 of seconds under load).
* foreign keys enforced.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_S = 30.0
READ_ONLY = "meshplan_read_only"
"""Execution option of the read-only sessions' engine (a deferred BEGIN on SQLite)."""


class Database:
    """An engine and a session factory for ``url``; one per process."""

    def __init__(self, url: str | URL, *, echo: bool = False) -> None:
        self.url = make_url(url)
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            database = self.url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False,
                                      "timeout": SQLITE_BUSY_TIMEOUT_S}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessionmaker = sessionmaker(
            self.engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)
        """Sessions that only read (a deferred transaction on SQLite; see the module)."""

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    def safe_url(self) -> str:
        """The URL with its password hidden, for logs."""
        return self.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits when the block ends, or rolls back."""
        with _unit_of_work(self.sessionmaker) as session:
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only. It ends with a commit, which writes nothing but, unlike a
        rollback, leaves the loaded objects usable (``expire_on_commit=False``)."""
        with _unit_of_work(self.read_sessionmaker) as session:
            yield session

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


@contextmanager
def _unit_of_work(maker: sessionmaker[Session]) -> Iterator[Session]:
    with maker() as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
