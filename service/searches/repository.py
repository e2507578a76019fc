"""Queries of ``searches``."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer

from service.auth.service import Principal
from service.db.models import SearchJob


def get(session: Session, ident: uuid.UUID, principal: Principal) -> SearchJob | None:
    return session.scalars(select(SearchJob).where(
        SearchJob.id == ident, principal.visible(SearchJob.owner_id))).first()


def by_dedup_key(session: Session, key: str) -> SearchJob | None:
    return session.scalars(select(SearchJob).where(SearchJob.dedup_key == key)).first()


def list_(session: Session, principal: Principal, status: str | None, limit: int,
          offset: int) -> list[SearchJob]:
    q = select(SearchJob).options(defer(SearchJob.result), defer(SearchJob.progress)) \
        .where(principal.visible(SearchJob.owner_id))
    if status is not None:
        q = q.where(SearchJob.status == status)
    q = q.order_by(SearchJob.created_at.desc(), SearchJob.id).limit(limit).offset(offset)
    return list(session.scalars(q))


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(SearchJob.status, func.count()).group_by(SearchJob.status))
    return {status: int(n) for status, n in rows}
