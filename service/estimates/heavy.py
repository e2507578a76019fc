"""Estimates whose simulation is large run in processes of their own, with their own queue.

An estimate's cost is known before it runs: the pipeline simulator's work is linear in the
schedule's cells (pp·virtual_stages × micro-batches, :func:`schedule_cells`). Measured on a
2-core machine, a request at the admission limit (pp 80 × 12,500 micro-batches) takes ~40 s;
run in the API process it holds the GIL and the in-process gate, and a cheap estimate queued
behind four of them waited 11–37 s instead of 80 ms. Estimates above
``MESHPLAN_HEAVY_ESTIMATE_CELLS`` therefore run in a pool of
``MESHPLAN_HEAVY_ESTIMATE_PROCESSES`` spawned processes, at most
``MESHPLAN_HEAVY_ESTIMATE_QUEUE`` of them admitted at a time (running or waiting); one more is
answered 503 with ``Retry-After`` before any work starts. Cheap estimates never wait for them.

The pool's processes are started on the first heavy estimate, die with the API process
(``PR_SET_PDEATHSIG``) and are replaced after ``_TASKS_PER_CHILD`` estimates, which returns
the memory a large simulation took.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import CancelledError, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from costmodel.results import Estimate
from costmodel.specs import request as spec
from service.exceptions import Busy

__all__ = ["HeavyEstimates", "schedule_cells"]

_TASKS_PER_CHILD = 20


def schedule_cells(req: spec.EstimateRequest) -> int:
    """The pipeline-schedule cells the estimate of ``req`` simulates (its cost, known before
    it runs)."""
    return req.plan.num_stages * spec.num_microbatches(req.training, req.plan)


def _init_child(parent_pid: int) -> None:
    from service.jobs.worker import die_with_parent

    if not die_with_parent(parent_pid):
        os._exit(0)


def _estimate_json(req: spec.EstimateRequest) -> str:
    import costmodel

    return costmodel.estimate(req).model_dump_json()


class HeavyEstimates:
    """A bounded process pool for estimates above a cell threshold (one per API process)."""

    def __init__(self, *, threshold_cells: int, processes: int, queue: int) -> None:
        self.threshold_cells = threshold_cells
        self._processes = processes
        self._slots = threading.BoundedSemaphore(queue)
        self._queue = queue
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def is_heavy(self, req: spec.EstimateRequest) -> bool:
        return schedule_cells(req) > self.threshold_cells

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self._processes, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_child, initargs=(os.getpid(),),
                    max_tasks_per_child=_TASKS_PER_CHILD)
            return self._pool

    def run(self, req: spec.EstimateRequest) -> Estimate:
        """The estimate of ``req``, computed in the pool; :class:`Busy` (503) when
        ``queue`` heavy estimates are already admitted."""
        if not self._slots.acquire(blocking=False):
            raise Busy(f"{self._queue} large estimates (over {self.threshold_cells} schedule "
                       "cells) are already running or queued on this server; retry later, or "
                       "ask for fewer micro-batches per step (raise micro_batch_size or dp)",
                       retry_after_s=10)
        try:
            future = self._executor().submit(_estimate_json, req)
            try:
                answer = future.result()
            except (CancelledError, BrokenProcessPool):
                # the server is stopping (shutdown cancels what waits), or the process died
                raise Busy("the estimate was not finished: the server is stopping or its "
                           "estimate process died; send it again", retry_after_s=10) from None
            return Estimate.model_validate_json(answer)
        finally:
            self._slots.release()

    def shutdown(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
