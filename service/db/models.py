"""The tables (SQLAlchemy 2.x ``Mapped[...]`` models).

* ``api_keys``: hashed API keys (:mod:`service.auth`).
* ``calibrations``: measured calibration profiles, one GPU type each.
* ``searches``: the durable search jobs — request, content hash, status, progress, result,
  error, lease (owner, expiry, heartbeat), attempts.
* ``search_attempts``: every claim of a search by a worker, when it ended and how (the audit
  trail of the queue: a crash shows up as an attempt that ended ``lease_expired``).
* ``plans``: each ranked plan of a finished search, with the full estimate request that
  reproduces it and the cost-model version that produced it.
* ``runs``: measured runs of a plan, beside it, with the prediction they test.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal, get_args

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.db.base import Base, JSONType, UTCDateTime, utcnow

SearchStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
SEARCH_STATUSES: tuple[str, ...] = get_args(SearchStatus)
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")

AttemptOutcome = Literal["succeeded", "failed", "cancelled", "released", "lease_expired",
                         "lease_lost"]


def _uuid() -> uuid.UUID:
    return uuid.uuid4()


def _created() -> Mapped[dt.datetime]:
    return mapped_column(UTCDateTime(), default=utcnow(), nullable=False)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(
        String(16), doc="The token's first characters, shown to recognise a key.")
    key_hash: Mapped[str] = mapped_column(String(64), unique=True,
                                          doc="sha256 hex digest of the token.")
    created_at: Mapped[dt.datetime] = _created()
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Calibration(Base):
    __tablename__ = "calibrations"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(200))
    gpu: Mapped[str] = mapped_column(String(64), index=True,
                                     doc="Canonical catalog name of the GPU measured.")
    profile: Mapped[dict[str, Any]] = mapped_column(JSONType)
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[dt.datetime] = _created()


class SearchJob(Base):
    __tablename__ = "searches"
    __table_args__ = (
        CheckConstraint(
            "status IN ({})".format(", ".join(f"'{s}'" for s in SEARCH_STATUSES)),
            name="status"),
        Index("ix_searches_status_created_at", "status", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=_uuid)
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), index=True)
    request: Mapped[dict[str, Any]] = mapped_column(
        JSONType, doc="The validated request (model resolved, stored calibration inlined).")
    request_hash: Mapped[str] = mapped_column(
        String(64), index=True, doc="sha256 of the canonical request JSON + cost-model version.")
    dedup_key: Mapped[str | None] = mapped_column(
        String(120), unique=True,
        doc="request_hash + owner while the search is queued, running or succeeded: an "
        "identical request from the same owner gets this search; NULL once failed or "
        "cancelled, so that a retry runs again.")
    cost_model_version: Mapped[str] = mapped_column(String(64))
    calibration_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("calibrations.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    cancel_requested: Mapped[bool] = mapped_column(Boolean(), default=False)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[dict[str, Any] | None] = mapped_column(
        JSONType, doc="RFC 9457 problem details of a failed search.")
    attempts: Mapped[int] = mapped_column(Integer(), default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[dt.datetime] = _created()
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    plans: Mapped[list[Plan]] = relationship(back_populates="search", order_by="Plan.rank")


class SearchAttempt(Base):
    __tablename__ = "search_attempts"
    __table_args__ = (UniqueConstraint("search_id", "attempt"),)

    id: Mapped[int] = mapped_column(Integer(), primary_key=True, autoincrement=True)
    search_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("searches.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer())
    worker: Mapped[str] = mapped_column(String(200))
    claimed_at: Mapped[dt.datetime] = _created()
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(String(16))


class Plan(Base):
    __tablename__ = "plans"
    __table_args__ = (UniqueConstraint("search_id", "rank"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=_uuid)
    search_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("searches.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), index=True)
    rank: Mapped[int] = mapped_column(Integer())
    objective: Mapped[str] = mapped_column(String(32))
    objective_value: Mapped[float] = mapped_column(Float())
    plan: Mapped[dict[str, Any]] = mapped_column(JSONType)
    estimate: Mapped[dict[str, Any]] = mapped_column(JSONType)
    explanation: Mapped[dict[str, Any]] = mapped_column(JSONType)
    request: Mapped[dict[str, Any]] = mapped_column(
        JSONType, doc="The estimate request {model, training, cluster, plan[, calibration]} "
        "that reproduces this plan's estimate (POST /v1/estimates body).")
    calibration_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("calibrations.id", ondelete="SET NULL"))
    cost_model_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = _created()

    search: Mapped[SearchJob] = relationship(back_populates="plans")
    runs: Mapped[list[Run]] = relationship(back_populates="plan", order_by="Run.created_at")


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=_uuid)
    plan_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("plans.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"))
    report: Mapped[dict[str, Any]] = mapped_column(JSONType, doc="The RunReport as posted.")
    measured_step_time_s: Mapped[float] = mapped_column(Float())
    predicted_step_time_s: Mapped[float | None] = mapped_column(Float())
    predicted_source: Mapped[str | None] = mapped_column(
        String(16), doc="'report' (the runtime's prediction for what ran) or 'plan'.")
    relative_error: Mapped[float | None] = mapped_column(Float())
    stragglers: Mapped[dict[str, Any] | None] = mapped_column(
        JSONType, nullable=True, doc="StragglerAttribution, when the report had per-rank "
        "compute times.")
    created_at: Mapped[dt.datetime] = _created()

    plan: Mapped[Plan] = relationship(back_populates="runs")
