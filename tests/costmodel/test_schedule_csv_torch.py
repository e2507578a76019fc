"""torch runs the action-list CSV that ``costmodel.pipeline.action_csv.to_csv`` writes.

Two CPU processes (gloo) train one step of an 8-block float64 MLP with schedules loaded from
CSVs that ``to_csv`` wrote — InterleavedZeroBubble with 2 stages per rank (loop placement,
split I/W backward), ZBVZeroBubble and DualPipeV (V placement, two stages of a rank adjacent
in the model) — through ``_PipelineScheduleRuntime._load_csv``, the path torchtitan takes for
``pipeline_parallel_schedule_csv``; and once with torch's ``Schedule1F1B`` on a one-stage-per-
rank split of the same weights. The losses and every parameter's gradient must agree with
1F1B's, and with plain autograd on the unsplit model, to float64 round-off.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from costmodel.pipeline.action_csv import from_csv, schedule_csv
from costmodel.pipeline.schedules import build_schedule

torch = pytest.importorskip("torch", reason="torch is not installed (meshplan[runtime])")
mp = pytest.importorskip("torch.multiprocessing")

from tests.costmodel import torch_pipeline_worker as w  # noqa: E402  (needs torch)

WORLD = 2
N_MB = 4
CSV_RUNS = [  # (name, schedule, virtual stages)
    ("izb", "InterleavedZeroBubble", 2),
    ("zbv", "ZBVZeroBubble", 2),
    ("dualpipev", "DualPipeV", 2),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load(out: Path, name: str) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    losses: list[torch.Tensor] = []
    grads: dict[str, torch.Tensor] = {}
    for r in range(WORLD):
        d = torch.load(out / f"{name}-rank{r}.pt")
        losses.extend(d["losses"])
        assert not set(d["grads"]) & set(grads), "a parameter on two ranks"
        grads.update(d["grads"])
    return losses, grads


def _reference() -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Plain autograd on the unsplit model: mean of the micro-batch losses (what torch's
    schedules compute with ``scale_grads=True``)."""
    model = w.build_model()
    x, y = w.batch()
    losses = [w.loss_fn(model(xm), ym) for xm, ym in
              zip(x.chunk(N_MB), y.chunk(N_MB), strict=True)]
    torch.stack(losses).mean().backward()
    return [loss.detach() for loss in losses], {
        n: p.grad.detach() for n, p in model.named_parameters() if p.grad is not None}


def test_csv_schedules_match_1f1b_under_torch(tmp_path: Path) -> None:
    runs: list[tuple[str, str, str]] = []
    for name, sched, v in CSV_RUNS:
        text = schedule_csv(sched, WORLD, N_MB, v)
        assert from_csv(text) == build_schedule(sched, WORLD, N_MB, v)  # round trip
        (tmp_path / f"{name}.csv").write_text(text)
        runs.append(("csv", name, text))
    runs.append(("1F1B", "1f1b", ""))
    # join=True raises (ProcessRaisedException) if a worker fails; the timeout guards a hang
    ctx = mp.start_processes(w.worker, args=(WORLD, _free_port(), runs, N_MB, str(tmp_path)),
                             nprocs=WORLD, join=False, start_method="spawn")
    deadline = 240.0  # a hang guard, not a speed target
    t0 = time.monotonic()
    while not ctx.join(timeout=5):
        if time.monotonic() - t0 > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"torch pipeline workers still running after {deadline:.0f} s")

    ref_losses, ref_grads = _reference()
    base_losses, base_grads = _load(tmp_path, "1f1b")
    assert len(base_losses) == N_MB
    assert set(base_grads) == set(ref_grads)  # every parameter of the model has a gradient
    for a, b in zip(base_losses, ref_losses, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for k in ref_grads:
        torch.testing.assert_close(base_grads[k], ref_grads[k], rtol=1e-10, atol=1e-13)

    for name, _, _ in CSV_RUNS:
        losses, grads = _load(tmp_path, name)
        assert len(losses) == N_MB, name
        for a, b in zip(losses, base_losses, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14, msg=name)
        assert set(grads) == set(base_grads), name
        for k in base_grads:
            torch.testing.assert_close(grads[k], base_grads[k], rtol=1e-10, atol=1e-13,
                                       msg=lambda m, k=k, name=name: f"{name} {k}: {m}")
