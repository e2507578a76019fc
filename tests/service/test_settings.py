"""Settings come from MESHPLAN_* environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.app import create_app
from service.settings import Settings
from tests.service.support import Api, assert_problem


def test_defaults() -> None:
    s = Settings()
    assert (s.host, s.port, s.log_level) == ("127.0.0.1", 8000, "info")
    assert s.max_request_bytes == 1 << 20


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHPLAN_HOST", "0.0.0.0")
    monkeypatch.setenv("MESHPLAN_PORT", "9001")
    monkeypatch.setenv("MESHPLAN_MAX_REQUEST_BYTES", "64")
    monkeypatch.setenv("MESHPLAN_LOG_LEVEL", "debug")
    s = Settings()
    assert (s.host, s.port, s.max_request_bytes, s.log_level) == ("0.0.0.0", 9001, 64, "debug")


def test_job_and_database_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MESHPLAN_DATABASE_URL", raising=False)
    monkeypatch.setenv("MESHPLAN_DATA_DIR", str(tmp_path / "data"))
    s = Settings()
    # zero setup: an embedded SQLite file in the data directory
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'data' / 'meshplan.db'}"
    assert (s.workers, s.lease_s, s.heartbeat_s, s.max_attempts) == (1, 30.0, 5.0, 3)
    assert (s.max_search_time_s, s.max_top_k, s.max_wait_s, s.auth) == (120.0, 20, 60.0, False)
    monkeypatch.setenv("MESHPLAN_DATABASE_URL", "postgresql+psycopg://u:pw@db/meshplan")
    monkeypatch.setenv("MESHPLAN_AUTH", "1")
    monkeypatch.setenv("MESHPLAN_WORKERS", "4")
    s = Settings()
    assert s.effective_database_url == "postgresql+psycopg://u:pw@db/meshplan"
    assert s.auth is True and s.workers == 4


def test_default_data_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MESHPLAN_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert Settings().data_dir == tmp_path / "meshplan"


def test_heartbeat_must_fit_in_the_lease() -> None:
    with pytest.raises(ValueError, match=r"heartbeat_s=20\.0 must be at most half of lease_s"):
        Settings(lease_s=30, heartbeat_s=20)


def test_app_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHPLAN_MAX_REQUEST_BYTES", "64")
    api = Api(create_app())
    try:
        body = assert_problem(api.post("/v1/estimates", json={"model": "x" * 100}), 413)
    finally:
        api.close()
    assert "64 bytes" in body["detail"]


def test_invalid_environment_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHPLAN_PORT", "http")
    with pytest.raises(ValueError, match="port"):
        Settings()
