"""Alembic environment: runs the migrations on the connection :mod:`service.db.migrate` gives
(``config.attributes["connection"]``), or on ``-x url=...`` / ``MESHPLAN_DATABASE_URL`` when
run by the ``alembic`` command itself.

SQLite gets ``render_as_batch`` (ALTER TABLE there cannot drop or change columns; batch mode
copies the table). PostgreSQL takes an advisory lock for the duration, so that replicas that
all run ``meshplan db upgrade`` on start do not race each other.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy import Connection, text

from service.db import models  # noqa: F401  (registers the tables on the metadata)
from service.db.base import Base, UTCDateTime

MIGRATION_LOCK_ID = 0x6D657368  # "mesh": the PostgreSQL advisory lock held while migrating

config = context.config
target_metadata = Base.metadata


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Write :class:`~service.db.base.UTCDateTime` columns as plain ``sa.DateTime`` so that
    revisions do not import the application (a migration must not change when it does)."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"),
                               {"id": MIGRATION_LOCK_ID})
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from service.db.engine import Database
    from service.settings import Settings

    url = context.get_x_argument(as_dictionary=True).get("url") or \
        Settings().effective_database_url
    db = Database(url)
    try:
        with db.engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        db.dispose()


if context.is_offline_mode():
    raise SystemExit("meshplan's migrations run online only (they need the dialect)")
run_migrations_online()
