"""solver.search._front: sorting only the points between the fastest and the cheapest gives
exactly the front of sorting them all (ties, equal costs, one pool or several)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from solver.search import _front


def front_of_all(tps: np.ndarray, cost: np.ndarray, idx: np.ndarray, which: np.ndarray
                 ) -> np.ndarray:
    """The definition: every point in (throughput down, cost up, pool, index) order, kept
    when cheaper than all before it."""
    order = np.lexsort((idx, which, cost, -tps))
    cost_sorted = cost[order]
    prev_min = np.concatenate([[np.inf], np.minimum.accumulate(cost_sorted)[:-1]])
    return order[cost_sorted < prev_min - 1e-12]


values = st.sampled_from([0.0, 1.0, 2.0, 2.0 + 1e-13, 3.0, 10.0]) | st.floats(
    min_value=0.0, max_value=1e6, allow_nan=False)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(values, values, st.integers(0, 2)), max_size=60))
def test_front_equals_the_front_of_all_points(points: list[tuple[float, float, int]]) -> None:
    tps = np.array([p[0] for p in points], dtype=float)
    cost = np.array([p[1] for p in points], dtype=float)
    which = np.array([p[2] for p in points], dtype=np.int64)
    idx = np.arange(len(points), dtype=np.int64)[::-1].copy()  # indices need not be sorted
    np.testing.assert_array_equal(_front(tps, cost, idx, which),
                                  front_of_all(tps, cost, idx, which))
