"""The branch and bound's visiting order: every fitting plan's position by its optimistic
objective, best first, ties in position order (``np.argsort(values, kind="stable")``), sorted
a block at a time as it is read. The search reads a few hundred positions of up to a million
(it stops once the next bound cannot beat the k-th best plan): sorting all of them was a
sort of the whole array per search, sorting the first block a partition and a small sort."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

FIRST_BLOCK = 4096
"""Positions sorted in the first block; each further block doubles. A cost choice (what a
search usually reads is well inside it), not a measured constant: the order is the same for
any value."""


class BestFirst:
    """Positions of ``values`` in stable ascending order; iterate to read them best first,
    :meth:`array` for all of them at once."""

    def __init__(self, values: np.ndarray, first: int = FIRST_BLOCK) -> None:
        self.values = np.asarray(values)
        self.first = max(1, int(first))
        self._all: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self) -> Iterator[int]:
        if self._all is not None:
            yield from self._all
            return
        rest = np.arange(len(self.values))
        size = self.first
        while len(rest):
            vals = self.values[rest]
            if len(rest) > size:
                cut = np.partition(vals, size)[size]
                if not np.isnan(cut):
                    # everything at or below the size-th smallest value comes before the rest
                    head = vals <= cut
                    block = rest[head]
                    yield from block[np.argsort(vals[head], kind="stable")]
                    rest = rest[~head]
                    size *= 2
                    continue
            yield from rest[np.argsort(vals, kind="stable")]
            return

    def array(self) -> np.ndarray:
        """The whole order."""
        if self._all is None:
            self._all = np.argsort(self.values, kind="stable")
        return self._all
