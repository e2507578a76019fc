"""The interactive HTML timeline (costmodel.pipeline.html, costmodel.timeline_html): its
embedded data decodes to the simulation, and the page needs nothing from outside."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import costmodel
from costmodel.pipeline.html import timeline_data, timeline_html
from costmodel.pipeline.schedules import KINDS
from costmodel.pipeline.simulator import SimResult, simulate_named
from costmodel.pipeline.transfers import transfers
from tests.costmodel.test_pipeline_svg import BIG, CASES


def _embedded(page: str) -> dict[str, object]:
    match = re.search(r'<script type="application/json" id="timeline-data">(.*?)</script>',
                      page, re.S)
    assert match is not None
    data: dict[str, object] = json.loads(match[1])
    return data


def _decode(sim: SimResult, data: dict[str, object]) -> None:
    """Rebuild every action's and transfer's times from the data as the page does."""
    tl = sim.timeline
    ranks = data["ranks"]
    assert isinstance(ranks, list)
    for r, row in enumerate(ranks):
        sel = np.flatnonzero(tl.rank == r)
        start = np.cumsum(np.array(row["g"]) + np.concatenate([[0], row["d"][:-1]]))
        end = start + np.array(row["d"])
        assert row["k"] == "".join(KINDS[int(k)] for k in tl.kind[sel])
        assert row["s"] == tl.stage[sel].tolist() and row["m"] == tl.mb[sel].tolist()
        np.testing.assert_allclose(start / 1e9, tl.start[sel], atol=2e-9 * len(sel))
        np.testing.assert_allclose(end / 1e9, tl.end[sel], atol=2e-9 * len(sel))
    tr = transfers(sim)
    sends = data["sends"]
    assert isinstance(sends, list)
    assert sum(len(s["g"]) for s in sends) == len(tr) == data["n_transfers"]
    p2p = np.array(data["p2p_ns"])
    for r, s in enumerate(sends):
        sel = np.flatnonzero(tr.src == r)
        start = np.cumsum(s["g"])
        np.testing.assert_allclose(start / 1e9, tr.start[sel], atol=1e-9)
        np.testing.assert_allclose((start + p2p[s["b"]]) / 1e9, tr.end[sel], atol=2e-9)
        assert s["m"] == tr.mb[sel].tolist() and s["s"] == tr.stage[sel].tolist()


@pytest.mark.parametrize(("name", "pp", "m", "v"), CASES)
def test_the_data_is_the_simulation(name: str, pp: int, m: int, v: int) -> None:
    sim = simulate_named(name, pp, m, v, 1e-3, 2e-3, 5e-4, 1e-4)
    page = timeline_html(sim, title="t")
    data = _embedded(page)
    assert data == json.loads(json.dumps(timeline_data(sim, title="t")))
    _decode(sim, data)
    assert data["bubble"] == sim.bubble_fraction
    assert {k["code"] for k in data["kinds"]} == {KINDS[int(k)] for k in sim.timeline.kind}


def test_a_large_plan_page_is_compact_self_contained_and_deterministic() -> None:
    """Checks: 256 micro-batches × pp 16 (8,192 actions, 7,680 transfers) embed in < 400 kB;
    the page references no URL and no external file; the title is escaped."""
    page = costmodel.timeline_html(BIG)
    assert len(page.encode()) < 400_000
    data = _embedded(page)
    assert data["n_actions"] == 8192 and data["n_transfers"] == 15 * 256 * 2
    assert not re.search(r"(src|href)\s*=|https?://|@import|url\(|fetch\(|XMLHttpRequest",
                         page)
    assert page == costmodel.timeline_html(BIG)
    sim = simulate_named("GPipe", 2, 2, 1, 1.0, 1.0, 0.0)
    evil = timeline_html(sim, title="</script><b>&", marks={1: "<i>"})
    assert "</script><b>" not in evil and "<title>&lt;/script&gt;&lt;b&gt;&amp;</title>" in evil
    assert _embedded(evil)["marks"] == {"1": "<i>"}
