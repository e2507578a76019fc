"""``meshplan-runtime`` / ``python -m runtime`` (runtime.cli): importing the package and the CLI
does not import torch; bad input exits 2 naming the field and the rule before any worker
process starts; a missing torch names the ``runtime`` extra.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "runtime", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_package_and_cli_do_not_import_torch() -> None:
    r = run(code="import sys, runtime, runtime.cli, runtime.plan_file, runtime.profile_build, "
                 "runtime.devices, runtime.http; "
                 "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_help_lists_both_commands() -> None:
    r = run("--help")
    assert r.returncode == 0
    assert "calibrate" in r.stdout and "run" in r.stdout


def test_missing_torch_names_the_runtime_extra() -> None:
    r = run(code="import sys; sys.modules['torch'] = None; from runtime.cli import main; "
                 "sys.exit(main(['calibrate', '--nproc', '2']))")
    assert r.returncode == 1
    assert "meshplan[runtime]" in r.stderr


def plan(tmp_path: Path, **over: Any) -> Path:
    body = {"format": "meshplan-runtime-plan/1",
            "model": {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
                      "intermediate_size": 128, "vocab_size": 100},
            "training": {"global_batch_size": 4, "seq_len": 32},
            "cluster": {"pools": [{"name": "p", "gpu": "H100", "gpus_per_node": 8}]},
            "plan": {"dp": 2, "micro_batch_size": 1, **over}}
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(body))
    return f


@pytest.mark.parametrize(("over", "flags", "expect"), [
    ({"tp": 3}, [], "plan.tp: num_attention_heads=4 must be divisible by tp=3"),
    ({}, ["--nproc", "4"], "plan: tp·pp·dp·cp = 2 ranks, but the job has 4 processes"),
    ({"cp": 2}, ["--nproc", "4"], "plan.cp: context parallelism is not run by the worker"),
    ({}, ["--plan-id", "x"], "--plan-id needs --server"),
    ({}, ["--calibration", "/nonexistent.json"], "no such file"),
    ({}, ["--layers", "0"], "must be positive"),
])
def test_bad_input_exits_2_before_any_worker(tmp_path: Path, over: dict[str, Any],
                                             flags: list[str], expect: str) -> None:
    r = run("run", str(plan(tmp_path, **over)), "--nproc", "2", *flags)
    assert r.returncode == 2, r.stderr
    assert expect in r.stderr
    assert "Traceback" not in r.stderr


def test_calibrate_rejects_a_bad_block_shape() -> None:
    r = run("calibrate", "--nproc", "2", "--block", "256x704x4")
    assert r.returncode == 2
    assert "HIDDENxFFNxHEADSxKVxSEQxMICROBATCH" in r.stderr
