"""solver.best_first: the branch and bound's order, sorted a block at a time, is exactly the
stable argsort of the optimistic values, ties, infinities and NaN included."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from solver.best_first import BestFirst


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from([0.0, 1.0, 1.5, 2.0, np.inf, np.nan, -3.0]) | st.floats(
    allow_nan=True, allow_infinity=True, width=32), max_size=300),
    st.integers(min_value=1, max_value=40))
def test_block_order_is_the_stable_argsort(values: list[float], first: int) -> None:
    arr = np.array(values, dtype=float)
    want = np.argsort(arr, kind="stable")
    order = BestFirst(arr, first=first)
    assert list(order) == want.tolist()
    np.testing.assert_array_equal(order.array(), want)
    assert list(order) == want.tolist()  # read again after array(): the same


@pytest.mark.parametrize("n, first", [(0, 4), (1, 4), (10_000, 64), (10_000, 20_000)])
def test_reading_a_prefix_gives_the_prefix(n: int, first: int) -> None:
    rng = np.random.default_rng(n)
    arr = rng.integers(0, 50, size=n).astype(float)  # many ties
    want = np.argsort(arr, kind="stable")
    got = list(itertools.islice(BestFirst(arr, first=first), 300))
    assert got == want[:300].tolist()
