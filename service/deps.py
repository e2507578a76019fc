"""Dependencies shared by the endpoints (full-stack-fastapi-template ``api/deps.py`` style).

``SessionDep`` is the request's unit of work: one session whose transaction commits when the
endpoint returns and rolls back when it raises. Services only ``flush``. Its scope is the
endpoint function (``Depends(scope="function")``), so the commit happens **before** the
response is sent: a client that gets ``202`` for a search can rely on it being stored.

Keep transactions short: on SQLite every transaction holds the database's write lock
(:mod:`service.db.engine`). Endpoints that wait or compute commit their unit of work first.

The dependencies that do no I/O are ``async def``: FastAPI runs a plain ``def`` dependency in
its thread pool, one hand-off per dependency per request, which was a large part of a plan
read's cost. ``ReadSessionDep`` opens its session on the event loop too (a session does no
I/O until its first query); ``SessionDep`` stays in the pool, since its commit writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.db.engine import Database
from service.metrics import Metrics
from service.settings import Settings


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_session(db: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    with db.session() as session:
        yield session


async def get_read_session(db: Annotated[Database, Depends(get_database)]
                           ) -> AsyncIterator[Session]:
    """A session for endpoints that only read (a deferred transaction on SQLite, so reads do
    not queue behind each other; see :mod:`service.db.engine`). It ends with a commit that
    writes nothing (a read transaction's end)."""
    with db.read_session() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
DatabaseDep = Annotated[Database, Depends(get_database)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]
