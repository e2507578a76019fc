"""Worker processes of ``test_schedule_csv_torch.py`` (imports torch; only that test imports it).

Each of the ``world`` processes joins a gloo group, builds the same float64 model from one seed,
and runs one training step per requested schedule on its share of the stages:

* ``("csv", name, text)``: ``_PipelineScheduleRuntime`` with the compute-only action-list CSV
  ``text`` loaded by its ``_load_csv`` (the path torchtitan takes for
  ``pipeline_parallel_schedule_csv``); the stages each rank builds are read off the CSV;
* ``("1F1B", name, "")``: torch's ``Schedule1F1B`` on one stage per rank.

Every rank writes its losses (last stage only) and the gradient of every parameter it holds,
keyed by the parameter's name in the unsplit model, to ``{out_dir}/{name}-rank{rank}.pt``.
"""

from __future__ import annotations

import copy
import csv
import io
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B
from torch.distributed.pipelining.schedules import _PipelineScheduleRuntime

DIM = 16
LAYERS = 8
BATCH = 8
SEED = 1234


def build_model() -> nn.Sequential:
    """``LAYERS`` blocks of Linear + Tanh, float64 (exact comparison across schedules)."""
    torch.manual_seed(SEED)
    blocks = [nn.Sequential(nn.Linear(DIM, DIM), nn.Tanh()) for _ in range(LAYERS)]
    return nn.Sequential(*blocks).to(torch.float64)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED + 1)
    x = torch.randn(BATCH, DIM, generator=gen, dtype=torch.float64)
    y = torch.randn(BATCH, DIM, generator=gen, dtype=torch.float64)
    return x, y


def loss_fn(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(output, target)


def stage_module(model: nn.Sequential, stage: int, n_stages: int) -> nn.Module:
    """A copy of the blocks of global stage ``stage`` (an even split)."""
    per = LAYERS // n_stages
    return copy.deepcopy(model[stage * per:(stage + 1) * per])


def csv_stages(text: str, rank: int) -> tuple[list[int], int]:
    """Stages on ``rank`` and the number of stages, read off a compute-only CSV."""
    rows = list(csv.reader(io.StringIO(text)))
    all_stages = {int(cell[: len(cell) - len(cell.lstrip("0123456789"))])
                  for row in rows for cell in row if cell.strip()}
    mine = sorted({int(cell[: len(cell) - len(cell.lstrip("0123456789"))])
                   for cell in rows[rank] if cell.strip()})
    return mine, max(all_stages) + 1


def grads(module: nn.Module) -> dict[str, torch.Tensor]:
    """Gradients keyed by the parameter's name in the unsplit model (``"3.0.weight"``: a slice
    of an ``nn.Sequential`` keeps the blocks' original indices as names)."""
    out = {}
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        out[name] = p.grad.detach().clone()
    return out


def run_one(kind: str, name: str, text: str, rank: int, world: int, n_mb: int,
            out_dir: str) -> None:
    model = build_model()
    x, y = batch()
    modules: list[nn.Module] = []
    if kind == "csv":
        mine, n_stages = csv_stages(text, rank)
        path = os.path.join(out_dir, f"{name}.csv")
        stages = []
        for s in mine:
            mod = stage_module(model, s, n_stages)
            modules.append(mod)
            stages.append(PipelineStage(mod, s, n_stages, torch.device("cpu")))
        sched: Any = _PipelineScheduleRuntime(stages, n_mb, loss_fn=loss_fn)
        sched._load_csv(path)  # compute_only, as torchtitan's pipeline_parallel_schedule_csv
        has_first = 0 in mine
    else:
        mod = stage_module(model, rank, world)
        modules.append(mod)
        stage = PipelineStage(mod, rank, world, torch.device("cpu"))
        sched = Schedule1F1B(stage, n_mb, loss_fn=loss_fn)
        has_first = rank == 0
    losses: list[torch.Tensor] = []
    if has_first:
        sched.step(x, target=y, losses=losses)
    else:
        sched.step(target=y, losses=losses)
    out: dict[str, Any] = {"losses": [loss.detach().clone() for loss in losses], "grads": {}}
    for mod in modules:
        out["grads"].update(grads(mod))
    torch.save(out, os.path.join(out_dir, f"{name}-rank{rank}.pt"))


def worker(rank: int, world: int, port: int, runs: list[tuple[str, str, str]], n_mb: int,
           out_dir: str) -> None:
    """Entry point of ``torch.multiprocessing.spawn``."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        for kind, name, text in runs:
            run_one(kind, name, text, rank, world, n_mb, out_dir)
            dist.barrier()
    finally:
        dist.destroy_process_group()
