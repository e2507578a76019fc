"""The scalar fast paths of one plan's estimate give the array formulas' answers exactly:
collective_time in floats, and attention_rates memoised per (kernel, GPU, head dim, length)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from costmodel.data_parallel import dp_groups
from costmodel.kernels import attention_rates
from costmodel.ops import BUS_FACTOR, Device, affine_terms, collective_time, group_links
from costmodel.profile import default_profile
from costmodel.specs.cluster import GPUPool
from costmodel.specs.gpus import catalog

GROUPS = (np.array([1.0, 2.0, 8.0, 16.0, 64.0, 512.0]),  # group sizes, groups of one included
          np.array([1.0, 2.0, 8.0, 4.0, 8.0, 1.0]),      # members per node
          np.array([0.0, 4096.0, 2.0**26, 1e9, 3e7, 5e5]))  # message bytes
"""Candidate-array groups the link-term tests share."""


def device(gpu: str) -> Device:
    pool = GPUPool(name="p", gpu=gpu, gpus_per_node=8, nodes=4)
    return Device.from_pool(pool, "bf16", default_profile())


@pytest.mark.parametrize("gpu", ["H100-SXM-80GB", "A100-SXM-80GB", "L40S-48GB"])
def test_scalar_collective_time_equals_the_array_formula(gpu: str) -> None:
    dev = device(gpu)
    for coll, n, per, size in itertools.product(
            BUS_FACTOR, (1, 2, 8, 64), (1, 4, 8), (0.0, 4096.0, 2.0**26)):
        scalar = collective_time(coll, n, size, per, dev)
        array = collective_time(coll, np.array([n]), np.array([size]), np.array([per]), dev)
        assert np.ndim(scalar) == 0
        assert float(scalar) == pytest.approx(float(array[0]), rel=1e-12, abs=1e-15), (
            coll, n, per, size)
        # one group, sizes per stage (as dp_comm passes them)
        sizes = np.array([size, 2 * size + 1.0, 3.0])
        per_stage = collective_time(coll, n, sizes, per, dev)
        full = collective_time(coll, np.full(3, n), sizes, np.full(3, per), dev)
        np.testing.assert_allclose(per_stage, full, rtol=1e-12, atol=1e-15)
    # explicit links, as the p2p of a stage boundary passes them
    got = collective_time("send_recv", 2.0, 1e6, 1.0, dev, link_intra=1e11, nic=2.5e10)
    want = collective_time("send_recv", np.array([2.0]), np.array([1e6]), np.array([1.0]), dev,
                           link_intra=1e11, nic=2.5e10)
    assert float(got) == pytest.approx(float(want[0]), rel=1e-12)


def test_link_terms_computed_once_give_the_same_times_exactly() -> None:
    """The bulk path builds a set of groups' link terms once for its reduction, gather and
    reduce-scatter (group_links): the times are those computed from scratch, to the bit."""
    dev = device("H100-SXM-80GB")
    n, per, size = GROUPS
    links = group_links(n, per, dev)
    for coll in BUS_FACTOR:
        np.testing.assert_array_equal(collective_time(coll, n, size, per, dev, links=links),
                                      collective_time(coll, n, size, per, dev))


def test_memoised_attention_rates_equal_the_computed_ones_and_are_read_only() -> None:
    for name in ("H100-SXM-80GB", "A100-SXM-80GB", "L40S-48GB"):
        gpu = catalog()[name]
        for seq in (512.0, 4096.0, 32768.0):
            one = attention_rates("flash2", gpu, 128.0, seq)
            again = attention_rates("flash2", gpu, 128.0, seq)
            many = attention_rates("flash2", gpu, 128.0, np.array([seq, 2 * seq]))
            assert again is one  # memoised
            assert float(one.fwd) == pytest.approx(float(many.fwd[0]), rel=1e-12)
            assert float(one.bwd) == pytest.approx(float(many.bwd[0]), rel=1e-12)
            assert not one.fwd.flags.writeable
    # another GPU with the same name but other figures is not answered from the memo
    h100 = catalog()["H100-SXM-80GB"]
    import dataclasses
    faster = dataclasses.replace(h100, peak_tflops={k: 2 * v for k, v in h100.peak_tflops.items()})
    assert float(attention_rates("flash2", faster, 128.0, 4096.0).fwd) > float(
        attention_rates("flash2", h100, 128.0, 4096.0).fwd)


def test_affine_terms_and_dp_groups_give_collective_time_exactly() -> None:
    """The data-parallel reductions of a set of candidates take each collective's affine
    terms once (DPGroup.time): the times are collective_time's, to the bit, groups of one
    included (no time)."""
    dev = device("H100-SXM-80GB")
    n, per, size = GROUPS
    links = group_links(n, per, dev)
    for coll in BUS_FACTOR:
        a, b = affine_terms(coll, links)
        np.testing.assert_array_equal(a + b * size, collective_time(coll, n, size, per, dev))
    assert a[0] == b[0] == 0.0
    ones = np.ones_like(n)
    groups = dp_groups(n, ones, ones, np.ones_like(n), dev)
    k = groups.dense.per_node
    for coll in ("all_reduce", "reduce_scatter", "all_gather"):
        for _ in range(2):  # computed, then taken from the group's cache
            np.testing.assert_array_equal(groups.dense.time(coll, size, dev),
                                          collective_time(coll, n, size, k, dev))
