"""Pieces of the bulk evaluator that restate a single-plan rule in a faster form give that
rule's answers: the distinct per-layer rows, and the per-parameter state bytes."""

from __future__ import annotations

import numpy as np
import pytest

import costmodel.bulk as bulk
from costmodel.memory import state_bytes, state_coefficients


@pytest.mark.parametrize("table", [True, False], ids=["lookup table", "numpy.unique"])
def test_distinct_rows_are_numpy_unique_rows_in_order(table: bool,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if not table:
        monkeypatch.setattr(bulk, "DISTINCT_TABLE_MAX", 0)
    rng = np.random.default_rng(7)
    highs = (9, 65, 33, 17, 2, 3)
    cols = [rng.integers(0, h, size=5000).astype(np.int64) for h in highs]
    uniq, inv = bulk._distinct_rows(cols)
    want, want_inv = np.unique(np.stack(cols, axis=1), axis=0, return_inverse=True)
    np.testing.assert_array_equal(uniq, want.T.astype(float))
    np.testing.assert_array_equal(inv, want_inv.reshape(-1))
    # each row is its distinct row
    np.testing.assert_array_equal(uniq[:, inv], np.stack(cols).astype(float))


@pytest.mark.parametrize("precision", ["bf16", "fp8", "fp32"])
def test_state_coefficients_total_is_the_sum_of_state_bytes(precision: str) -> None:
    zero = np.array([0.0, 1.0, 2.0, 3.0, 3.0, 1.0])
    d_dense = np.array([1.0, 8.0, 16.0, 64.0, 3.0, 7.0])
    d_expert = np.array([1.0, 2.0, 4.0, 8.0, 1.0, 7.0])
    gathered = np.where(zero >= 3, 3.1e8, 0.0)
    dense = np.array([7e9, 1.3e9, 2e8, 5.5e9, 1.0, 0.0])
    expert = np.array([0.0, 4e9, 1e7, 2e9, 0.0, 3e9])
    for opt in ("adamw", "sgd"):
        st = state_bytes(dense, expert, zero, d_dense, d_expert, opt, precision, gathered)
        per = state_coefficients(zero, d_dense, d_expert, opt, precision, gathered).summed()
        np.testing.assert_allclose(per.of(dense, expert), st.weights + st.grads + st.optimizer,
                                   rtol=1e-14)
    # Megatron's 18 bytes per parameter without ZeRO, 6 + 12/d with the distributed optimizer
    st = state_bytes(np.array([1e9, 1e9]), np.zeros(2), np.array([0.0, 1.0]),
                     np.array([8.0, 8.0]), np.ones(2), "adamw", "bf16", np.zeros(2))
    total = st.weights + st.grads + st.optimizer
    np.testing.assert_allclose(total, [18e9, 6e9 + 12e9 / 8])


def test_state_bytes_of_one_rank_in_floats_equal_the_array_rule() -> None:
    zero = np.array([0.0, 1.0, 2.0, 3.0])
    d = np.array([1.0, 8.0, 16.0, 64.0])
    gathered = np.array([0.0, 0.0, 0.0, 3.1e8])
    dense, expert = np.array([7e9, 1.3e9, 2e8, 5.5e9]), np.array([0.0, 4e9, 1e7, 2e9])
    arr = state_bytes(dense, expert, zero, d, d / 2, "adamw", "fp8", gathered, 2.0)
    for i in range(len(zero)):
        one = state_bytes(np.asarray(dense[i]), np.asarray(expert[i]), np.asarray(zero[i]),
                          np.asarray(d[i]), np.asarray(d[i] / 2), "adamw", "fp8",
                          np.asarray(gathered[i]), 2.0)
        for kind in ("weights", "grads", "optimizer"):
            assert float(getattr(one, kind)) == float(getattr(arr, kind)[i]), (kind, i)
