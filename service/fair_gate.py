"""A first-come, first-served gate for CPU-bound work in a threaded server process.

FastAPI runs a ``def`` endpoint in a pool of threads. When 16 estimates, each a few
milliseconds of pure Python, run in 16 threads of one process, they take turns on the GIL in
no particular order: every request finishes late and some very late (a p99 several times the
median, measured under 32 clients). Letting one of them compute at a time, in arrival order,
gives each the same wait — the queue ahead of it — and the same throughput, since the process
has one core's worth of GIL either way. One API process per core (``MESHPLAN_HTTP_WORKERS``)
uses the machine.
"""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType

__all__ = ["FairGate"]


class FairGate:
    """A lock whose waiters acquire it in the order they asked (``threading.Lock`` promises
    no order)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Event] = deque()
        self._held = False

    def __enter__(self) -> FairGate:
        with self._mutex:
            if not self._held:
                self._held = True
                return self
            turn = threading.Event()
            self._waiters.append(turn)
        turn.wait()  # the releasing thread hands the gate over: _held stays True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().set()
            else:
                self._held = False
