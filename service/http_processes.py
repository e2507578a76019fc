"""Several API server processes on one port, each accepting its own connections.

An estimate is CPU-bound Python, so one process serves one core. uvicorn's own ``workers=N``
forks processes that share one listening socket; under a burst of keep-alive connections
(a load balancer's pool, or 32 benchmark clients) whichever process wakes first accepts most
of them and the others idle — measured here: one of two processes did 98% of the work. With
``SO_REUSEPORT`` (Linux ≥ 3.9; ``socket(7)``) every process binds its own socket to the port
and the kernel spreads incoming connections over them by a hash of the connection's
addresses, so the processes share the load.

Each process is spawned (it shares nothing with the parent), builds the app from the
settings it is given and runs one ``uvicorn.Server`` on its socket; uvicorn handles SIGTERM
and SIGINT in each (graceful shutdown). The parent waits until a signal or the exit of any
process, then stops them all.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
from multiprocessing.process import BaseProcess
from typing import Any

from service.jobs.worker import stop_processes
from service.settings import Settings

logger = logging.getLogger("meshplan.service")

__all__ = ["HTTPProcesses", "reuseport_socket", "supports_reuseport"]


def supports_reuseport() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``(host, port)`` that other processes may bind as well."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(addr)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _serve(settings_data: dict[str, Any]) -> None:
    """Entry point of one API process (``multiprocessing`` spawn target)."""
    import uvicorn

    from service.app import create_app
    from service.http_protocol import uvicorn_options

    settings = Settings(**settings_data)
    sock = reuseport_socket(settings.host, settings.port)
    config = uvicorn.Config(create_app(settings), log_level=settings.log_level,
                            **uvicorn_options(settings))
    uvicorn.Server(config).run(sockets=[sock])


class HTTPProcesses:
    """``n`` API processes on ``settings.host:settings.port`` (see the module docstring)."""

    def __init__(self, settings: Settings, n: int) -> None:
        self.settings = settings
        self.n = n
        self.processes: list[BaseProcess] = []

    def run(self) -> int:
        """Start the processes and serve until SIGTERM/SIGINT or a process exits; 0 after a
        signal, 1 when a process ended by itself."""
        stop = threading.Event()

        def on_signal(signum: int, frame: Any) -> None:
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        ctx = multiprocessing.get_context("spawn")
        data = self.settings.model_dump(mode="json")
        try:
            for i in range(self.n):
                p = ctx.Process(target=_serve, args=(data,), name=f"meshplan-api-{i}")
                p.start()
                self.processes.append(p)
            logger.info("API on %s:%d in %d processes: %s", self.settings.host,
                        self.settings.port, self.n, ", ".join(str(p.pid) for p in self.processes))
            while not stop.wait(0.5):
                if any(not p.is_alive() for p in self.processes):
                    logger.error("an API process exited; stopping the others")
                    return 1
            return 0
        finally:
            self.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM each (uvicorn finishes the requests in flight), then SIGKILL stragglers."""
        stop_processes(self.processes, timeout, "API")
