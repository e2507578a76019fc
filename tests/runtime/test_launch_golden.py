"""Pinned launch configs for representative plans (tests/runtime/golden/<plan>.<format>.txt).

Each file is the whole rendered config (main file, extra files, notes) or the refusal, so any
change to an emitter shows up as a diff here. The files were reviewed by hand against the
frameworks' sources; the rule checks themselves live in test_launch_torchtitan /
test_launch_megatron / test_launch_deepspeed. After an intended change, rewrite them with
``python -m tests.runtime.test_launch_golden`` and review the diff.

A format written per framework release has a file per release other than the current one:
``<plan>.<format>@<version>.txt`` (e.g. ``mixtral_ep.torchtitan@0.2.txt``, the TOML era).
"""

from __future__ import annotations

import difflib
import pathlib

import pytest

from tests.runtime.golden import rendered
from tests.runtime.plans import PLANS

GOLDEN = pathlib.Path(__file__).parent / "golden"

CASES = [
    ("llama3_8b_dp", "torchrun"),
    ("llama3_8b_dp", "torchtitan"),
    ("llama3_8b_dp", "megatron"),
    ("llama3_8b_dp", "deepspeed"),
    ("llama3_8b_dp", "runtime"),
    ("llama3_70b_interleaved", "torchrun"),
    ("llama3_70b_interleaved", "torchtitan"),
    ("llama3_70b_interleaved", "megatron"),
    ("llama3_70b_interleaved", "deepspeed"),
    ("mixtral_ep", "torchtitan"),
    ("mixtral_ep", "megatron"),
    ("mixtral_ep", "deepspeed"),
    ("llama3_8b_zero3", "torchtitan"),
    ("llama3_8b_zero3", "megatron"),
    ("llama3_8b_zero3", "deepspeed"),
    ("llama3_8b_gpipe", "deepspeed"),
    ("llama3_8b_gpipe", "megatron"),
    ("llama3_8b_gpipe", "torchtitan"),
    ("llama3_8b_pp2_uneven", "torchtitan"),
    ("llama3_8b_pp2_uneven", "megatron"),
]
VERSIONED = {"torchtitan": ("0.2",)}
"""Older releases pinned too, per format (the current one is the plain file)."""
CASES_AT: list[tuple[str, str, str | None]] = [
    (plan, fmt, version) for plan, fmt in CASES
    for version in (None, *VERSIONED.get(fmt, ()))]


def golden_name(plan: str, fmt: str, version: str | None) -> str:
    return f"{plan}.{fmt}" + (f"@{version}" if version else "") + ".txt"


@pytest.mark.parametrize(("plan", "fmt", "version"), CASES_AT,
                         ids=[golden_name(*c)[:-4] for c in CASES_AT])
def test_pinned_output(plan: str, fmt: str, version: str | None) -> None:
    want = (GOLDEN / golden_name(plan, fmt, version)).read_text()
    got = rendered(fmt, PLANS[plan], version)
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                            "pinned", "rendered"))
        pytest.fail(f"{plan} / {fmt} differs from its pinned output:\n{diff}")


if __name__ == "__main__":  # rewrite the pinned files after an intended change
    GOLDEN.mkdir(exist_ok=True)
    for plan, fmt, version in CASES_AT:
        name = golden_name(plan, fmt, version)
        (GOLDEN / name).write_text(rendered(fmt, PLANS[plan], version))
        print(f"wrote {name}")
