"""Settings come from MESHPLAN_* environment variables."""

from __future__ import annotations

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
