"""Alembic migrations of meshplan's database: one chain for SQLite and PostgreSQL.

A top-level package so that they ship in the wheel; run them with ``meshplan db upgrade`` (the
embedded SQLite mode runs them on start). New revision: with a database at head,
``alembic -x url=sqlite:///dev.db -c migrations/alembic.ini revision --autogenerate -m
"what"`` (see :mod:`service.db.migrate` for the programmatic use).
"""
