"""The declarative base, portable column types and the database clock.

* ``MetaData(naming_convention=...)``: every index and constraint has a deterministic name, so
  that migrations can drop or alter them on both databases (SQLite's batch mode recreates
  tables and needs the names; see Alembic's "The Importance of Naming Constraints").
* :class:`UTCDateTime`: timezone-aware UTC datetimes in and out, on PostgreSQL
  (``timestamptz``) and on SQLite (text, which keeps no zone).
* :func:`utcnow` / :class:`utc_after`: timestamps taken from the **database's** clock. Leases
  are compared by workers on several machines; one clock (the database's) makes an expiry mean
  the same thing to all of them whatever their own clocks say.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Float, MetaData, literal
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import FunctionElement
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


JSONType = JSON().with_variant(JSONB(), "postgresql")
"""JSON documents: ``jsonb`` on PostgreSQL (compact, indexable), JSON text on SQLite."""


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite stores ``YYYY-MM-DD HH:MM:SS.ffffff`` text without a zone; values written here are
    converted to UTC first and read back as UTC-aware, as PostgreSQL's ``timestamptz`` are.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect
                           ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; give a UTC-aware one")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect
                             ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# ----------------------------------------------------------------------------- the DB clock
SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now')"
"""SQLite's current UTC time in the text format SQLAlchemy stores datetimes in
(``%f`` is seconds with milliseconds; three zeros make microseconds), so that stored times and
the clock compare correctly as text."""


class utcnow(FunctionElement[dt.datetime]):  # lower case: an SQL function
    """The database's current time (UTC)."""

    type = UTCDateTime()
    inherit_cache = True


class utc_after(FunctionElement[dt.datetime]):  # lower case: an SQL function
    """The database's current time plus ``seconds``."""

    type = UTCDateTime()
    inherit_cache = True

    def __init__(self, seconds: float) -> None:
        super().__init__(literal(float(seconds), Float()))


@compiles(utcnow)
def _utcnow_default(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "CURRENT_TIMESTAMP"


@compiles(utcnow, "postgresql")
def _utcnow_pg(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    # clock_timestamp(), not now(): now() is frozen at the start of the transaction
    return "clock_timestamp()"


@compiles(utcnow, "sqlite")
def _utcnow_sqlite(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return SQLITE_NOW


@compiles(utc_after, "postgresql")
def _utc_after_pg(element: utc_after, compiler: SQLCompiler, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"(clock_timestamp() + ({seconds}) * interval '1 second')"


@compiles(utc_after, "sqlite")
def _utc_after_sqlite(element: utc_after, compiler: SQLCompiler, **kw: Any) -> str:
    seconds = compiler.process(element.clauses, **kw)
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', '+' || ({seconds}) || ' seconds')"
