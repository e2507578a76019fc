"""Persistence: SQLAlchemy 2.x models, the engine and sessions, and Alembic migrations.

One schema for SQLite (the embedded default) and PostgreSQL (production); the migration chain
in the top-level ``migrations`` package is the only way the schema is created (``meshplan db
upgrade``, or on start in the embedded mode).
"""

from __future__ import annotations

from service.db.engine import Database

__all__ = ["Database"]
