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
from service.jobs.runner import RECYCLE_EXIT, JobRunner
from service.settings import Settings

logger = logging.getLogger("meshplan.jobs")

MAX_BACKOFF_S = 30.0


def worker_name() -> str:
    """``host:pid:random``: unique per process, readable in ``lease_owner``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Worker:
    """Claims searches and runs them, one at a time, until ``shutdown`` is set."""

    def __init__(self, db: Database, settings: Settings, *, name: str | None = None,
                 shutdown: threading.Event | None = None, parent_pid: int | None = None,
                 own_process: bool = False) -> None:
        self.db = db
        self.settings = settings
        self.name = name or worker_name()
        self.shutdown = shutdown or threading.Event()
        self.parent_pid = parent_pid
        self.runner = JobRunner(db, settings, self.name, self.shutdown,
                                exit_when_stuck=own_process)
        self.recycle = False
        """Set when :meth:`run` stopped to be replaced (memory above worker_max_rss_mb)."""

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
            elif self._over_memory():
                self.recycle = True
                break
        logger.info("worker %s: stopped", self.name)

    def _over_memory(self) -> bool:
        limit = self.settings.worker_max_rss_mb
        rss = resident_mib()
        if limit and rss is not None and rss > limit:
            logger.info("worker %s: %.0f MiB resident after a search, above "
                        "MESHPLAN_WORKER_MAX_RSS_MB=%d; exiting to be replaced",
                        self.name, rss, limit)
            return True
        return False


def resident_mib() -> float | None:
    """This process's resident memory in MiB (Linux ``/proc/self/statm``; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20




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
    worker = Worker(db, settings, shutdown=shutdown, parent_pid=parent_pid, own_process=True)
    try:
        worker.run()
    finally:
        db.dispose()
    if worker.recycle:
        sys.exit(RECYCLE_EXIT)


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
        self.replaced = 0
        """Processes started to replace one that exited for memory (RECYCLE_EXIT)."""
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._monitor: threading.Thread | None = None

    def _spawn(self, i: int) -> BaseProcess:
        ctx = multiprocessing.get_context("spawn")
        parent = os.getpid() if self.embedded else None
        p = ctx.Process(target=process_main,
                        args=(self.settings.model_dump(mode="json"), parent, os.getpid()),
                        name=f"meshplan-worker-{i}", daemon=False)
        p.start()
        return p

    def start(self) -> None:
        with self._lock:
            self.processes = [self._spawn(i) for i in range(self.n)]
        logger.info("started %d worker process(es): %s", self.n,
                    ", ".join(str(p.pid) for p in self.processes))
        self._monitor = threading.Thread(target=self._replace_recycled, daemon=True,
                                         name="meshplan-worker-monitor")
        self._monitor.start()

    def _replace_recycled(self) -> None:
        """Start a fresh process in place of each one that exited to return its memory."""
        while not self._stopping.wait(0.5):
            with self._lock:
                for i, p in enumerate(self.processes):
                    if p.exitcode == RECYCLE_EXIT and not self._stopping.is_set():
                        p.join()
                        self.processes[i] = self._spawn(i)
                        self.replaced += 1
                        logger.info("worker process %s exited for memory; started %s",
                                    p.pid, self.processes[i].pid)

    def wait(self) -> None:
        """Until every process has exited for good (the standalone ``meshplan worker``)."""
        while True:
            with self._lock:
                live = [p for p in self.processes
                        if p.exitcode is None or p.exitcode == RECYCLE_EXIT]
            if not live or self._stopping.is_set():
                return
            self._stopping.wait(0.5)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM each (a running search goes back to the queue), then SIGKILL stragglers."""
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join()
        with self._lock:
            stop_processes(self.processes, timeout, "worker")

    def alive(self) -> int:
        return sum(p.is_alive() for p in self.processes)
