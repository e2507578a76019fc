"""Accuracy against measured training runs (shared/validation).

The data lives beside the repository (``../shared/validation``), as in CI. Without it these
tests skip with that reason, unless ``MESHPLAN_REQUIRE_VALIDATION=1`` (``.ci/run`` sets it):
then a missing folder fails instead of hiding a regression.

The bounds are regression guards a little above the accuracy the model has now: every
efficiency from a kernel micro-benchmark, except one GEMM derating relative to the measured
ceiling (MAMF) for every GPU, fitted on the rows and reported leave-one-source-out
(``python -m costmodel.validate --fit-gemm``). The issue's targets are tighter on some sources
(Megatron-Core H100, Megatron-Bridge, BigScience): ``python -m costmodel.validate`` prints
the figures.
"""

from __future__ import annotations

import os

import pytest

from costmodel import validate as V
from costmodel.profile import default_profile
from costmodel.validate import (
    ERAS,
    IN_SAMPLE,
    default_data_dir,
    fit_gemm_fraction,
    run,
    scored,
    summary,
)

DATA = default_data_dir()
REQUIRED = os.environ.get("MESHPLAN_REQUIRE_VALIDATION") == "1"
if REQUIRED and not DATA.is_dir():
    raise RuntimeError(f"MESHPLAN_REQUIRE_VALIDATION=1 but no validation data at {DATA}")
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"no validation data at {DATA}")

DEV_GROUPS = {"mpt", "vtrain_multi", "bridge", "bigscience_bench"}


@pytest.fixture(scope="module")
def results():  # type: ignore[no-untyped-def]
    return run(DATA)


@pytest.fixture(scope="module")
def fit():  # type: ignore[no-untyped-def]
    return fit_gemm_fraction(DATA)


def _file(results, name):  # type: ignore[no-untyped-def]
    return summary(results)[name]


def test_every_group_has_a_stack_and_is_scored(results) -> None:  # type: ignore[no-untyped-def]
    """Every source group of every file is evaluated under its named stack (none skipped for
    want of an era, as dev_runs was before)."""
    groups = {r.group for r in results}
    assert groups <= set(ERAS)
    assert {r.group for r in scored(results)} >= DEV_GROUPS
    dev = _file(results, "dev_runs.json")
    assert dev["evaluated"] >= 400


def test_skips_say_why(results) -> None:  # type: ignore[no-untyped-def]
    """Rows meshplan cannot model are skipped with the reason (NVFP4, MoE rows without their
    experts), never silently."""
    skipped = [r for r in results if r.skipped]
    assert all(r.skipped for r in skipped)
    assert any("NVFP4" in (r.skipped or "") for r in skipped)


def test_published_runs_mape_guard(results) -> None:  # type: ignore[no-untyped-def]
    s = _file(results, "published_runs.json")
    assert s["evaluated"] >= 40
    assert s["mape"] <= 0.10
    assert s["rows_over_25pct"] == 0  # rows of stated layout


def test_no_published_configuration_judged_not_fitting(results) -> None:  # type: ignore[no-untyped-def]
    rows = [r for r in results if r.file == "published_runs.json"]
    assert [r.label for r in rows if r.fits is False] == []


def test_vtrain_single_node_mape_guard(results) -> None:  # type: ignore[no-untyped-def]
    s = _file(results, "vtrain_single_node_runs.json")
    assert s["evaluated"] == s["rows"] == 1440
    assert s["mape"] <= 0.09


def test_dev_groups_mape_guard(results) -> None:  # type: ignore[no-untyped-def]
    groups = _file(results, "dev_runs.json")["groups"]
    for g, bound in (("mpt", 0.11), ("vtrain_multi", 0.12), ("bridge", 0.10)):
        assert groups[g]["mape"] <= bound, (g, groups[g])
    # single-iteration snapshots (its notes); rows that contradict themselves are excluded
    assert groups["bigscience_bench"]["mape"] <= 0.21


def test_gemm_derating_holds_leave_one_source_out(fit) -> None:  # type: ignore[no-untyped-def]
    """The one row-derived parameter, re-fitted without each source in turn, stays near the
    shipped default, and no source's leave-one-source-out MAPE is more than 4 points worse than
    with it. The worst is Narayanan 2021 Table 2's six A100 rows: 1.9% -> 4.4% with a refit of
    0.790 without them on 2026-12-05, 1.9% -> 5.5% with a refit of 0.780 since Hopper and
    Blackwell GEMMs take their shape dependence from XLA's measured grid (2026-12-07); the
    fit's objective over the other sources is flat between 0.78 and 0.83."""
    shipped = default_profile().eff.gemm
    assert shipped is not None and abs(fit.fraction - shipped.mamf_fraction) <= 0.01
    for g, v in fit.per_source.items():
        assert abs(v["loso_fraction"] - fit.fraction) <= 0.04, (g, v)
        assert v["loso_mape"] <= v["mape"] + 0.04, (g, v)


def test_report_has_signed_median_and_leave_one_source_out(results, fit) -> None:  # type: ignore[no-untyped-def]
    """Per source: MAPE, signed median and the leave-one-source-out MAPE; null for a source
    that set another parameter (marked in-sample)."""
    loso = {g: v["loso_mape"] for g, v in fit.per_source.items()}
    for f in summary(results, loso).values():
        for g, gs in f["groups"].items():
            assert gs["signed_median"] == gs["signed_median"]  # not NaN
            if g in IN_SAMPLE:
                assert gs["loso_mape"] is None and gs["in_sample"]
            else:
                assert gs["loso_mape"] == loso[g]


def test_only_deepspeed_zero3_and_self_contradicting_rows_are_excluded(results) -> None:  # type: ignore[no-untyped-def]
    """Excluded rows: DeepSpeed ZeRO-3 of 2021 (another implementation), and rows whose step
    time and TFLOP/s contradict each other about the work of one step (BigScience's
    single-node table: the rows say GBS 2048, both measurements fit the heading's 512)."""
    excluded = [r for r in results if r.excluded]
    zero3 = [r for r in excluded if r.group == "narayanan21_t2"]
    assert len(zero3) == 6
    rest = [r for r in excluded if r.group != "narayanan21_t2"]
    assert [(r.group, r.index) for r in rest] == [("bigscience_bench", i) for i in (23, 24, 25)]
    assert all("4.0x" in (r.excluded or "") for r in rest)


def test_self_contradicting_row_is_detected() -> None:
    """A row whose TFLOP/s and step time agree (within the tolerance) is kept; one four times
    off is flagged with the batch its step time fits."""
    from costmodel.flops import narayanan_flops_per_step
    from costmodel.specs.model import ModelSpec
    from costmodel.validate import inconsistent_measurements

    model = ModelSpec(name="t", num_hidden_layers=4, hidden_size=1024, num_attention_heads=8,
                      intermediate_size=4096, vocab_size=51200)
    work = narayanan_flops_per_step(model, 64, 2048)
    row = {"group": "bigscience_bench", "notes": "",
           "measured": {"tflops_per_gpu": 100.0, "step_time_s": work / (8 * 100e12)}}
    assert inconsistent_measurements(row, model, 64, 2048, 8) is None
    row["measured"]["step_time_s"] /= 4
    why = inconsistent_measurements(row, model, 64, 2048, 8)
    assert why is not None and "about 16 sequences" in why


def test_rows_of_unstated_layout_are_reported_not_bounded(results) -> None:  # type: ignore[no-untyped-def]
    """The NeMo-launcher 2022 rows (``layout_certain: false``) are predicted and printed but
    held to no error bound: they do not count in rows_over_25pct or max_abs_error."""
    nemo = [r for r in scored(results) if r.group == "nemo_launcher_a100"]
    assert nemo and all(not r.layout_certain for r in nemo)
    g = _file(results, "published_runs.json")["groups"]["nemo_launcher_a100"]
    assert g["layout_uncertain_rows"] == len(nemo)


def test_pipeline_split_counts_embedding_and_loss_as_megatron_bridge_does() -> None:
    """Llama 3 405B's 126 layers over pp 8 × vpp 4: with the embedding and the loss counted
    as layers (Megatron-Bridge's 405B recipe), 128 / 32 = 4 per stage and the two end stages
    hold 3 transformer layers; a split Megatron refuses is refused; an even one is left alone."""
    bridge, other = V.ERAS["bridge"], V.ERAS["korthikanti22"]
    split = V.pipeline_split(126, 8, 4, bridge)
    assert isinstance(split, list) and len(split) == 32 and sum(split) == 126
    assert (split[0], split[-1], set(split[1:-1])) == (3, 3, {4})
    assert V.pipeline_split(126, 16, 8, bridge) is False  # end stages would hold no layer
    assert V.pipeline_split(126, 8, 4, other) is False
    assert V.pipeline_split(126, 7, 1, other) is None
    assert V.pipeline_split(96, 8, 4, bridge) is None
