"""A client that sends its request head too slowly is disconnected (service.http_protocol),
through a real uvicorn server on a loopback socket; complete requests are unaffected."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from service.app import create_app
from service.db.engine import Database
from service.http_protocol import uvicorn_options
from service.settings import Settings


@pytest.fixture
def server(sqlite_url: str, sqlite_db: Database) -> Iterator[tuple[str, int]]:
    settings = Settings(database_url=sqlite_url, header_timeout_s=1.0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(settings, db=sqlite_db), host="127.0.0.1", port=port,
                            log_level="warning", **uvicorn_options(settings))
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield "127.0.0.1", port
    srv.should_exit = True
    thread.join(timeout=10)


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock`` (None if still open after ``seconds``)."""
    sock.settimeout(seconds)
    t0 = time.monotonic()
    try:
        data = sock.recv(1024)
    except TimeoutError:
        return None
    assert data == b"", data
    return time.monotonic() - t0


def test_a_slow_request_head_is_cut_off(server: tuple[str, int]) -> None:
    with socket.create_connection(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the head is never finished
        waited = _closed_within(sock, 5.0)
    assert waited is not None, "the server kept a connection whose head never ended"
    assert waited < 3.0


def test_a_silent_connection_is_cut_off(server: tuple[str, int]) -> None:
    with socket.create_connection(server) as sock:
        assert _closed_within(sock, 5.0) is not None


def test_complete_requests_on_a_keep_alive_connection_are_answered(
        server: tuple[str, int]) -> None:
    with socket.create_connection(server) as sock:
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(10)
            head = sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200"), head[:200]
            time.sleep(0.5)  # below the 1 s deadline between requests
