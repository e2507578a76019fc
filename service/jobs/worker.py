"""Worker processes: the claim-run loop, and starting and stopping a set of processes.

``meshplan serve`` starts ``MESHPLAN_WORKERS`` of them beside the API; ``meshplan worker`` runs
them on other machines against the same PostgreSQL. Each process runs one search at a time
(the solver is CPU-bound and single-threaded). SIGTERM or SIGINT asks a process to stop: a
running search is given back to the queue at once (the solver polls for it) and the process
exits; a process killed outright loses nothing either, its lease expires and another worker
takes the search up.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import secrets
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from service.db.engine import Database
from service.jobs import queue
from service.jobs.runner import JobRunner
from service.settings import Settings

logger = logging.getLogger("meshplan.jobs")

MAX_BACKOFF_S = 30.0


def worker_name() -> str:
    """``host:pid:random``: unique per process, readable in ``lease_owner``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    """Claims searches and runs them, one at a time, until ``shutdown`` is set."""

    def __init__(self, db: Database, settings: Settings, *, name: str | None = None,
                 shutdown: threading.Event | None = None, parent_pid: int | None = None
                 ) -> None:
        self.db = db
        self.settings = settings
        self.name = name or worker_name()
        self.shutdown = shutdown or threading.Event()
        self.parent_pid = parent_pid
        self.runner = JobRunner(db, settings, self.name, self.shutdown)

    def run_once(self) -> str | None:
        """Claim and run one search; its outcome, or None when the queue is empty."""
        claim = queue.claim(self.db, self.name, lease_s=self.settings.lease_s,
                            max_attempts=self.settings.max_attempts)
        if claim is None:
            return None
        return self.runner.run(claim)

    def run_until_idle(self) -> list[str]:
        """Run searches until none is claimable (tests, one-shot use)."""
        outcomes = []
        while (outcome := self.run_once()) is not None:
            outcomes.append(outcome)
        return outcomes

    def run(self) -> None:
        """The worker loop: poll, claim, run; back off while the database is unavailable."""
        logger.info("worker %s: started on %s", self.name, self.db.safe_url())
        backoff = self.settings.poll_s
        while not self.shutdown.is_set():
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                logger.warning("worker %s: the serving process is gone; stopping", self.name)
                break
            try:
                outcome = self.run_once()
            except SQLAlchemyError as exc:
                logger.warning("worker %s: database unavailable (%s); retrying in %.0f s",
                               self.name, type(exc).__name__, backoff)
                self.shutdown.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            backoff = self.settings.poll_s
            if outcome is None:
                self.shutdown.wait(self.settings.poll_s)
        logger.info("worker %s: stopped", self.name)


# ----------------------------------------------------------------------------- processes
PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal this process gets when its parent dies (Linux)."""


def die_with_parent(parent_pid: int) -> bool:
    """Ask the kernel to SIGKILL this process when the process that started it dies (Linux
    ``prctl(PR_SET_PDEATHSIG)``), so that a ``serve`` killed or stopped without its cleanup
    leaves no worker behind; the search it ran goes back to the queue when its lease expires.
    False when the parent is already gone (then this process should exit at once)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    return os.getppid() == parent_pid


def process_main(settings_data: dict[str, Any], parent_pid: int | None,
                 spawner_pid: int | None = None) -> None:
    """Entry point of a worker process (``multiprocessing`` spawn target); ``spawner_pid``
    is the process that started it (it may have died while this one was starting)."""
    if spawner_pid is not None and not die_with_parent(spawner_pid):
        return
    settings = Settings(**settings_data)
    level = "DEBUG" if settings.log_level == "trace" else settings.log_level.upper()
    logging.basicConfig(level=level, format="%(levelname)s:     %(name)s: %(message)s")
    shutdown = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        shutdown.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    db = Database(settings.effective_database_url)
    try:
        Worker(db, settings, shutdown=shutdown, parent_pid=parent_pid).run()
    finally:
        db.dispose()


def stop_processes(processes: list[BaseProcess], timeout: float, what: str) -> None:
    """SIGTERM every live process, wait up to ``timeout`` s in all, SIGKILL the stragglers;
    empties ``processes``."""
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + timeout
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            logger.warning("%s process %s did not stop in %.0f s; killing it", what, p.pid,
                           timeout)
            p.kill()
            p.join()
    processes.clear()


class WorkerProcesses:
    """``n`` worker processes (spawned, so they share nothing with the caller's state)."""

    def __init__(self, settings: Settings, n: int, *, embedded: bool = False) -> None:
        self.settings = settings
        self.n = n
        self.embedded = embedded
        self.processes: list[BaseProcess] = []

    def start(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        data = self.settings.model_dump(mode="json")
        parent = os.getpid() if self.embedded else None
        for i in range(self.n):
            p = ctx.Process(target=process_main, args=(data, parent, os.getpid()),
                            name=f"meshplan-worker-{i}", daemon=False)
            p.start()
            self.processes.append(p)
        logger.info("started %d worker process(es): %s", self.n,
                    ", ".join(str(p.pid) for p in self.processes))

    def wait(self) -> None:
        """Until every process has exited (the standalone ``meshplan worker``)."""
        for p in self.processes:
            p.join()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM each (a running search goes back to the queue), then SIGKILL stragglers."""
        stop_processes(self.processes, timeout, "worker")

    def alive(self) -> int:
        return sum(p.is_alive() for p in self.processes)
