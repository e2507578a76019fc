"""Queries of ``plans``."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session, joinedload

from service.auth.service import Principal
from service.db.models import Plan


def get(session: Session, ident: uuid.UUID, principal: Principal, *, with_runs: bool = False
        ) -> Plan | None:
    q = select(Plan).where(Plan.id == ident, principal.visible(Plan.owner_id))
    if with_runs:
        # one round trip (a plan has few runs), not a second SELECT for them
        q = q.options(joinedload(Plan.runs))
    return session.scalars(q).unique().first()
