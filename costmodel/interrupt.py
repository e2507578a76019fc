"""Cooperative interruption of long computations (a cancelled search, a reached deadline).

A search polls its ``should_stop`` between plans, but one plan's pipeline simulation (a
126-layer model over 64 stages and 2,048 micro-batches: ~10^6 actions) or one CP-SAT solve can
take seconds on its own, longer than a cancellation may wait (issue 11: within 2 s). The code
that runs such a computation installs a check with :func:`interruptible`; the long loops call
:func:`checker` once and then poll what it returns every few thousand steps, and raise
:class:`Interrupted` when it says stop.

The check lives in a context variable: it reaches the computations of the thread that
installed it, not other threads (the service's API threads and other workers' searches are
unaffected), and costs nothing where none is installed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Check = Callable[[], bool]

_CHECK: ContextVar[Check | None] = ContextVar("meshplan_interrupt", default=None)

POLL_EVERY = 1024
"""Steps of a hot loop between two polls (a poll is a Python call; 1,024 steps of the pipeline
simulator take ~0.5 ms, so a stop is seen well within a millisecond of being asked)."""


class Interrupted(Exception):
    """The installed check said stop; ``reason`` is ``"stop"`` (asked to stop) or
    ``"deadline"`` (the time given by :func:`until` has passed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"interrupted ({reason})")
        self.reason = reason


@contextmanager
def interruptible(should_stop: Check | None) -> Iterator[None]:
    """Install ``should_stop`` (None: nothing) for the computations run inside, on top of any
    check already installed (either one stopping is enough)."""
    if should_stop is None:
        yield
        return
    outer = _CHECK.get()
    check: Check = should_stop if outer is None else (lambda: outer() or should_stop())
    token = _CHECK.set(check)
    try:
        yield
    finally:
        _CHECK.reset(token)


@contextmanager
def until(deadline: float) -> Iterator[None]:
    """Interrupt the computations run inside once ``time.perf_counter()`` passes ``deadline``
    (:class:`Interrupted` with reason ``"deadline"``), besides any installed check."""
    outer = _CHECK.get()

    def check() -> bool:
        if outer is not None and outer():
            raise Interrupted("stop")
        if time.perf_counter() > deadline:
            raise Interrupted("deadline")
        return False

    token = _CHECK.set(check)
    try:
        yield
    finally:
        _CHECK.reset(token)


def checker() -> Check | None:
    """The installed check (None when there is none): call it in a hot loop every
    :data:`POLL_EVERY` steps and :func:`stop` when it returns True."""
    return _CHECK.get()


def poll() -> None:
    """Raise :class:`Interrupted` if the installed check says stop (one call: for loops whose
    steps are long enough that a poll per step costs nothing)."""
    check = _CHECK.get()
    if check is not None and check():
        raise Interrupted("stop")


def stop() -> None:
    """Raise the interruption (for a hot loop whose :func:`checker` returned True)."""
    raise Interrupted("stop")
