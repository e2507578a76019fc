"""Initial schema: API keys, calibrations, searches and their attempts, plans, runs.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("revoked_at", TIME, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "calibrations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("gpu", sa.String(length=64), nullable=False),
        sa.Column("profile", JSON, nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["api_keys.id"],
                                name=op.f("fk_calibrations_owner_id_api_keys"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calibrations")),
    )
    op.create_index(op.f("ix_calibrations_gpu"), "calibrations", ["gpu"])
    op.create_index(op.f("ix_calibrations_owner_id"), "calibrations", ["owner_id"])

    op.create_table(
        "searches",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("request", JSON, nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("dedup_key", sa.String(length=120), nullable=True),
        sa.Column("cost_model_version", sa.String(length=64), nullable=False),
        sa.Column("calibration_id", sa.Uuid(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("progress", JSON, nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("error", JSON, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", TIME, nullable=True),
        sa.Column("heartbeat_at", TIME, nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("started_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_searches_status")),
        sa.ForeignKeyConstraint(["calibration_id"], ["calibrations.id"],
                                name=op.f("fk_searches_calibration_id_calibrations"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["owner_id"], ["api_keys.id"],
                                name=op.f("fk_searches_owner_id_api_keys"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_searches")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_searches_dedup_key")),
    )
    op.create_index(op.f("ix_searches_owner_id"), "searches", ["owner_id"])
    op.create_index(op.f("ix_searches_request_hash"), "searches", ["request_hash"])
    op.create_index("ix_searches_status_created_at", "searches", ["status", "created_at"])

    op.create_table(
        "plans",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("search_id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("objective", sa.String(length=32), nullable=False),
        sa.Column("objective_value", sa.Float(), nullable=False),
        sa.Column("plan", JSON, nullable=False),
        sa.Column("estimate", JSON, nullable=False),
        sa.Column("explanation", JSON, nullable=False),
        sa.Column("request", JSON, nullable=False),
        sa.Column("calibration_id", sa.Uuid(), nullable=True),
        sa.Column("cost_model_version", sa.String(length=64), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["calibration_id"], ["calibrations.id"],
                                name=op.f("fk_plans_calibration_id_calibrations"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["owner_id"], ["api_keys.id"],
                                name=op.f("fk_plans_owner_id_api_keys"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["search_id"], ["searches.id"],
                                name=op.f("fk_plans_search_id_searches"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
        sa.UniqueConstraint("search_id", "rank", name=op.f("uq_plans_search_id")),
    )
    op.create_index(op.f("ix_plans_owner_id"), "plans", ["owner_id"])
    op.create_index(op.f("ix_plans_search_id"), "plans", ["search_id"])

    op.create_table(
        "search_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("search_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.Column("claimed_at", TIME, nullable=False),
        sa.Column("ended_at", TIME, nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(["search_id"], ["searches.id"],
                                name=op.f("fk_search_attempts_search_id_searches"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_attempts")),
        sa.UniqueConstraint("search_id", "attempt", name=op.f("uq_search_attempts_search_id")),
    )
    op.create_index(op.f("ix_search_attempts_search_id"), "search_attempts", ["search_id"])

    op.create_table(
        "runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("plan_id", sa.Uuid(), nullable=False),
        sa.Column("owner_id", sa.Uuid(), nullable=True),
        sa.Column("report", JSON, nullable=False),
        sa.Column("measured_step_time_s", sa.Float(), nullable=False),
        sa.Column("predicted_step_time_s", sa.Float(), nullable=True),
        sa.Column("predicted_source", sa.String(length=16), nullable=True),
        sa.Column("relative_error", sa.Float(), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["api_keys.id"],
                                name=op.f("fk_runs_owner_id_api_keys"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["plan_id"], ["plans.id"],
                                name=op.f("fk_runs_plan_id_plans"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(op.f("ix_runs_plan_id"), "runs", ["plan_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_runs_plan_id"), table_name="runs")
    op.drop_table("runs")
    op.drop_index(op.f("ix_search_attempts_search_id"), table_name="search_attempts")
    op.drop_table("search_attempts")
    op.drop_index(op.f("ix_plans_search_id"), table_name="plans")
    op.drop_index(op.f("ix_plans_owner_id"), table_name="plans")
    op.drop_table("plans")
    op.drop_index("ix_searches_status_created_at", table_name="searches")
    op.drop_index(op.f("ix_searches_request_hash"), table_name="searches")
    op.drop_index(op.f("ix_searches_owner_id"), table_name="searches")
    op.drop_table("searches")
    op.drop_index(op.f("ix_calibrations_owner_id"), table_name="calibrations")
    op.drop_index(op.f("ix_calibrations_gpu"), table_name="calibrations")
    op.drop_table("calibrations")
    op.drop_table("api_keys")
