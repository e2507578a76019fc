"""The degree enumeration's arithmetic: bounded however large the request's values are."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from solver.space import _divisors


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 50_000), limit=st.one_of(st.none(), st.integers(1, 60_000)))
def test_divisors_equal_the_definition(n: int, limit: int | None) -> None:
    top = n if limit is None else min(n, limit)
    assert _divisors(n, limit) == [d for d in range(1, top + 1) if n % d == 0]


def test_divisors_of_a_huge_batch_are_bounded_by_the_limit() -> None:
    """10^15 (the request that once spun a worker for minutes): only divisors up to the GPU
    count matter, and finding them takes O(limit) steps, not O(n)."""
    got = _divisors(10**15, 131_072)
    assert got[-1] <= 131_072 and 131_072 not in got
    assert 125_000 in got and all(10**15 % d == 0 for d in got)
