"""Queries of ``calibrations``."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import Calibration


def get(session: Session, ident: uuid.UUID) -> Calibration | None:
    return session.get(Calibration, ident)


def list_(session: Session, gpu: str | None, limit: int, offset: int) -> list[Calibration]:
    q = select(Calibration)
    if gpu is not None:
        q = q.where(Calibration.gpu == gpu)
    q = q.order_by(Calibration.created_at.desc(), Calibration.id).limit(limit).offset(offset)
    return list(session.scalars(q))
