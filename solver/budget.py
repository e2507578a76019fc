"""The search's time and memory budget for enumerating and bulk-evaluating its pools.

Enumeration and the vectorized estimate (:func:`costmodel.bulk.evaluate_bulk`) grow with the
inventory: at the service's maxima (16 pools × 1,024 nodes × 8 GPUs) they took 21 s and 3.8 GB
for a search asked to end in 10 s, before the branch and bound could look at its deadline.
Three rules bound them:

* **Times of the plans that fit.** The search drops a plan that does not fit for its memory
  alone, so only the memory of those is computed (``evaluate_bulk(fitting_only=True)``:
  about 70 % of a large pool's valid candidates, whose step times were half the bulk time).
* **Chunks.** A pool's candidates are evaluated :data:`BULK_CHUNK` at a time, so that the
  arrays of intermediate results stay the size of a chunk and the deadline and ``should_stop``
  are polled between chunks.
* **Identical hardware is evaluated once.** Pools that differ only in name and price (the
  same GPU, node size, node count and links) have the same candidates, step times and memory;
  the second one reuses the first's arrays with its own prices (:meth:`BulkResult.repriced`).
* **A share of the time limit and a memory cap.** Enumeration may use
  :data:`ENUMERATION_SHARE` of ``time_limit_s``; the arrays a search keeps per candidate
  (the candidates, their bulk estimates and the branch and bound's arrays over them) may use
  ``memory_cap_bytes`` (the service's ``MESHPLAN_MAX_SEARCH_MEMORY_MB``); one chunk's
  intermediates come on top. A pool that does not
  fit in what is left is not searched, and the result names it with the reason
  (:class:`solver.results.SkippedPool`); the search is then at most ``feasible``, since its
  bound covers only the pools it searched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from costmodel.bulk import BulkResult, Candidates, evaluate_bulk, valid_mask
from costmodel.profile import CalibrationProfile
from costmodel.specs.cluster import GPUPool
from costmodel.specs.model import ModelSpec
from costmodel.specs.training import TrainingSpec

BULK_CHUNK = 1 << 18
"""Candidates per :func:`evaluate_bulk` call (262,144: its intermediates are ~0.1 GB)."""

SEARCH_BYTES_PER_CANDIDATE = 40
"""Bytes per candidate of the arrays the branch and bound builds over the fitting candidates
of all pools (optimistic objective, pool, index, order; 8 bytes each) and the Pareto front's
view of them, counted against the cap up front for every candidate (an upper bound)."""

ENUMERATION_SHARE = 0.5
"""Share of ``time_limit_s`` that enumeration and bulk evaluation may use; the branch and
bound, the CP-SAT refinements and the explanations get the rest."""


def hardware_key(pool: GPUPool) -> str:
    """What the candidates, step times and memory of a pool depend on: all but its name and
    price."""
    return pool.model_dump_json(exclude={"name", "price_per_gpu_hour"})


@dataclass
class PoolBudget:
    """Time and memory left for enumerating the search's pools, and the arrays so far."""

    enumeration_deadline: float
    """``time.perf_counter()`` after which no further pool is enumerated."""
    memory_cap_bytes: int | None
    used_bytes: int = 0
    evaluated: dict[str, tuple[Candidates, BulkResult]] = field(default_factory=dict)
    enumerated: dict[str, int] = field(default_factory=dict)
    """Candidates enumerated per hardware key, before the rules drop the invalid ones (only
    valid candidates are evaluated and returned)."""
    ran_out_of_time: bool = False
    """A pool was left out for the time share (the search then reports timed_out)."""

    def over_time(self) -> bool:
        return time.perf_counter() > self.enumeration_deadline

    def fits(self, nbytes: int) -> bool:
        return self.memory_cap_bytes is None or self.used_bytes + nbytes <= self.memory_cap_bytes

    def enumerated_for(self, pool: GPUPool) -> int:
        """How many candidates ``pool``'s enumeration gave (valid or not)."""
        return self.enumerated.get(hardware_key(pool), 0)

    def evaluate(self, model: ModelSpec, training: TrainingSpec, pool: GPUPool,
                 enumerate_pool: Callable[[], Candidates],
                 profile: CalibrationProfile | None,
                 poll: Callable[[], None],
                 more: Callable[[Candidates, BulkResult], Candidates] | None = None
                 ) -> tuple[Candidates, BulkResult] | str:
        """The pool's candidates and their bulk estimate, or why the pool is not searched.
        ``poll`` is called between chunks (it raises to cancel). ``more`` gives further
        candidates to evaluate once the enumerated ones are (the partial-recompute copies of
        plans that only full recompute fits: :func:`solver.space.partial_recompute_candidates`);
        they follow the others."""
        key = hardware_key(pool)
        if key in self.evaluated:
            cands, bulk = self.evaluated[key]
            extra = (bulk.cost_per_hour.nbytes + bulk.cost_per_million_tokens.nbytes
                     + SEARCH_BYTES_PER_CANDIDATE * len(cands))
            if not self.fits(extra):
                return self.skip_for_memory(extra)
            self.used_bytes += extra
            return cands, bulk.repriced(cands, pool)
        cands = enumerate_pool()
        self.enumerated[key] = len(cands)
        # the rules first (cheap), then the costs of the plans that obey them only: a third of
        # a large pool's candidates break one (heads, batch, schedule rules)
        cands = cands.take(np.flatnonzero(valid_mask(model, training, pool, cands)))
        parts: list[BulkResult] = []
        n = len(cands)
        for start in range(0, max(n, 1), BULK_CHUNK):
            poll()
            if parts and self.evaluated and self.over_time():
                return self.skip_for_time()
            chunk = cands.take(slice(start, start + BULK_CHUNK))
            part = evaluate_bulk(model, training, pool, chunk, profile, rules_checked=True,
                                 fitting_only=True)
            if not parts:  # the first chunk tells the pool's bytes per candidate
                need = (cands.nbytes + part.nbytes * n // max(len(part.valid), 1)
                        + SEARCH_BYTES_PER_CANDIDATE * n)
                if not self.fits(need):
                    return self.skip_for_memory(need)
            parts.append(part)
        bulk = parts[0] if len(parts) == 1 else BulkResult.concat(parts)
        added = more(cands, bulk) if more is not None else None
        if added is not None and len(added):
            n += len(added)
            self.enumerated[key] += len(added)
            for start in range(0, len(added), BULK_CHUNK):
                poll()
                # copies of valid plans with N within the rule's limit: valid by construction
                # (test_partial_candidates_only_where_only_full_recompute_fits checks it)
                parts.append(evaluate_bulk(model, training, pool,
                                           added.take(slice(start, start + BULK_CHUNK)), profile,
                                           rules_checked=True, fitting_only=True))
            cands = Candidates.concat([cands, added])
            bulk = BulkResult.concat(parts)
            need = cands.nbytes + bulk.nbytes + SEARCH_BYTES_PER_CANDIDATE * n
            if not self.fits(need):
                return self.skip_for_memory(need)
        self.used_bytes += cands.nbytes + bulk.nbytes + SEARCH_BYTES_PER_CANDIDATE * n
        self.evaluated[key] = (cands, bulk)
        return cands, bulk

    def skip_for_memory(self, need: int) -> str:
        assert self.memory_cap_bytes is not None
        return (f"its candidate arrays need {need / 2**20:,.0f} MiB and "
                f"{self.used_bytes / 2**20:,.0f} of the {self.memory_cap_bytes / 2**20:,.0f} MiB "
                "search memory cap (MESHPLAN_MAX_SEARCH_MEMORY_MB) are in use; fix degrees in "
                "constraints.fixed, narrow constraints.pools or raise the cap")

    def skip_for_time(self) -> str:
        """Why a pool is left out for time (and record that one was)."""
        self.ran_out_of_time = True
        return (f"enumeration used its {ENUMERATION_SHARE:.0%} share of time_limit_s before "
                "this pool was reached; raise time_limit_s, narrow constraints.pools or fix "
                "degrees in constraints.fixed")
