"""Collectives inside an NVLink node are capped by the bus bandwidth XLA's collective table
measured for the collective and the group size (costmodel/data/kernels/collectives.json)."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

from costmodel.kernels import collective_plateaus
from costmodel.ops import BUS_FACTOR, Device, collective_time
from costmodel.profile import default_profile
from costmodel.specs.cluster import GPUPool
from costmodel.specs.gpus import get_gpu

GIB = float(2**30)


def device(gpu: str, link: float | None = None, per_node: int = 8) -> Device:
    pool = GPUPool(name="p", gpu=gpu, gpus_per_node=per_node, nodes=4, intra_node_GBps=link)
    return Device.from_pool(pool, "bf16", default_profile())


def busbw(collective: str, n: int, size: float, dev: Device, per_node: int = 8) -> float:
    """The bus bandwidth (B/s) a collective's modelled time implies (nccl-tests' definition)."""
    t = float(collective_time(collective, n, size, per_node, dev))
    return float(BUS_FACTOR[collective](np.asarray(float(n)))) * size / t


def test_plateaus_are_the_tables_largest_measured_bus_bandwidths() -> None:
    raw = json.loads(resources.files("costmodel").joinpath(
        "data/kernels/collectives.json").read_text())
    h100 = collective_plateaus(get_gpu("H100-SXM-80GB"), 450.0)
    assert h100 is not None
    for collective, by_n in raw["archs"]["hopper"]["busbw_GBps"].items():
        for n, curve in by_n.items():
            want = max(b for _, b in curve) * 1e9
            assert float(h100(collective, int(n))) == pytest.approx(want, rel=1e-12)
    # the measured H100 figures this rests on: all-reduce over 2, 4 and 8 GPUs
    assert [round(float(h100("all_reduce", n)) / 1e9) for n in (2, 4, 8)] == [250, 302, 402]
    assert h100("send_recv", 2) is None


def test_two_and_four_gpu_groups_get_the_bus_bandwidth_measured_for_them() -> None:
    """On H100 a 2-GPU all-reduce runs at XLA's measured 250 GB/s plateau, not the 8-GPU
    link fraction (0.78 x 450 = 351 GB/s): at 1 GiB the modelled bus bandwidth is the
    smaller of the two times the profile's size term, S / (S + S_half)."""
    dev = device("H100-SXM-80GB")
    coll = dev.profile.eff.collectives["intra_node"]
    link = 450e9 * coll.busbw_fraction
    half = coll.half_bandwidth_MiB * 2**20
    lat = coll.latency_us * 1e-6
    plateau = collective_plateaus(get_gpu("H100-SXM-80GB"), 450.0)
    assert plateau is not None
    got = [busbw("all_reduce", n, GIB, dev) for n in (2, 4, 8)]
    for n, g in zip((2, 4, 8), got, strict=True):
        cap = min(link, float(plateau("all_reduce", n)))
        t = lat + BUS_FACTOR["all_reduce"](n) * (GIB + half) / cap
        assert g == pytest.approx(BUS_FACTOR["all_reduce"](n) * GIB / t, rel=1e-9)
    assert got[0] < got[1] < got[2]
    # an architecture the table does not cover keeps one fraction of the link for every size
    a100 = device("A100-SXM-80GB")
    flat = [busbw("all_reduce", n, GIB, a100) for n in (2, 4, 8)]
    assert flat[0] / flat[2] == pytest.approx(1.0, abs=2e-3)


def test_the_plateau_scales_with_the_pools_link_and_not_across_nodes() -> None:
    full, half = device("H100-SXM-80GB"), device("H100-SXM-80GB", link=225.0)
    assert busbw("all_gather", 2, GIB, half) == pytest.approx(
        busbw("all_gather", 2, GIB, full) / 2, rel=0.02)
    # a group spread over nodes is bound by its NICs and the link, not by the plateau
    # measured inside one node (reduce-scatter over 8 H100s: 329 GB/s)
    dev = device("H100-SXM-80GB")
    inter, intra = (dev.profile.eff.collectives[k] for k in ("inter_node", "intra_node"))
    bound = min(450e9 * intra.busbw_fraction, 8 * 50e9 * inter.busbw_fraction)
    t = (inter.latency_us * 1e-6
         + BUS_FACTOR["reduce_scatter"](16) * (GIB + inter.half_bandwidth_MiB * 2**20) / bound)
    spread = busbw("reduce_scatter", 16, GIB, dev, per_node=8)
    assert spread == pytest.approx(BUS_FACTOR["reduce_scatter"](16) * GIB / t, rel=1e-9)
    assert spread > busbw("reduce_scatter", 8, GIB, dev)


def test_an_nvl72_domain_takes_the_eight_gpu_plateau_above_eight() -> None:
    gb200 = collective_plateaus(get_gpu("GB200-186GB"), 900.0)
    assert gb200 is not None
    assert float(gb200("all_reduce", 72)) == float(gb200("all_reduce", 8))
    assert collective_plateaus(get_gpu("H100-PCIe-80GB"), 64.0) is None
