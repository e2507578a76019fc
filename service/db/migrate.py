"""Alembic, driven in code: upgrade, downgrade, the current and head revisions.

The migrations live in the top-level package ``migrations`` so they ship in the wheel; the Alembic
configuration is built here rather than read from an ini file, and the migration runs on a
connection of the :class:`~service.db.engine.Database` (so SQLite gets the same pragmas and
transaction handling as everywhere else).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import migrations
from service.db.engine import Database

logger = logging.getLogger("meshplan.db")

SCRIPT_LOCATION = str(Path(migrations.__file__).resolve().parent)
"""The Alembic script directory: the installed ``migrations`` package."""


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    return cfg


def head() -> str:
    """The revision the code expects."""
    rev = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert rev is not None
    return rev


def current(db: Database) -> str | None:
    """The database's revision (None = no schema yet)."""
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_current(db: Database) -> bool:
    return current(db) == head()


def upgrade(db: Database, revision: str = "head") -> None:
    cfg = alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    logger.info("database %s at revision %s", db.safe_url(), current(db))


def downgrade(db: Database, revision: str) -> None:
    cfg = alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def upgrade_if_embedded(db: Database) -> bool:
    """Migrate an embedded SQLite database to head (the zero-setup mode); PostgreSQL is left to
    ``meshplan db upgrade``, run once per deployment, not by every replica on start. True when
    it migrated."""
    if not db.is_sqlite or is_current(db):
        return False
    logger.info("migrating the embedded database %s", db.safe_url())
    upgrade(db)
    return True
