"""The plan a worker runs: reading it, scaling it down, and the request that predicts it.

``meshplan-runtime run PLAN`` reads the ``runtime`` launch format — the estimate request
``{model, training, cluster, plan}`` plus ``"format": "meshplan-runtime-plan/1"`` — or a bare
estimate request. Pure (no torch): the CLI validates a plan before it starts any process, and
the tests check the scaling and the layer split without torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from costmodel.errors import FieldProblem, SpecError
from costmodel.pipeline.schedules import stage_to_rank
from costmodel.profile import CalibrationProfile
from costmodel.specs.request import EstimateRequest, check_plan, parse, stage_layers

RUNTIME_PLAN_FORMAT = "meshplan-runtime-plan/1"

OVERRIDES: dict[str, tuple[str, str]] = {
    "layers": ("model", "num_hidden_layers"),
    "hidden": ("model", "hidden_size"),
    "heads": ("model", "num_attention_heads"),
    "kv_heads": ("model", "num_key_value_heads"),
    "ffn": ("model", "intermediate_size"),
    "vocab": ("model", "vocab_size"),
    "seq": ("training", "seq_len"),
    "global_batch": ("training", "global_batch_size"),
}
"""CLI option (``--layers`` ...) → (request part, field) it scales down."""


def read_plan(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The request dict of a runtime plan file (or an estimate request), ``format`` removed.

    Raises :class:`SpecError` for a file that is not a JSON object or has a foreign format.
    """
    if isinstance(source, dict):
        raw: Any = source
    else:
        text = Path(source).read_text() if str(source) != "-" else _stdin()
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(FieldProblem("plan file", f"not JSON: {exc}")) from None
    if not isinstance(raw, dict):
        raise SpecError(FieldProblem("plan file", "must be a JSON object"))
    fmt = raw.get("format", RUNTIME_PLAN_FORMAT)
    if fmt != RUNTIME_PLAN_FORMAT:
        raise SpecError(FieldProblem("format", f"expected {RUNTIME_PLAN_FORMAT!r}, got {fmt!r}"))
    body = {k: v for k, v in raw.items() if k != "format"}
    missing = [k for k in ("model", "training", "cluster", "plan") if k not in body]
    if missing:
        raise SpecError([FieldProblem(k, "required in a runtime plan") for k in missing])
    return body


def _stdin() -> str:
    import sys

    return sys.stdin.read()


def scale(body: dict[str, Any], **overrides: int | None) -> tuple[dict[str, Any], dict[str, int]]:
    """The request with the model and batch scaled down (``layers=4, hidden=256, ...``, see
    :data:`OVERRIDES`), and the fields changed (``RunReport.model_overrides``).

    The model is first resolved from a preset or ``hf_config`` into explicit fields. Changing
    the hidden size or the head count drops an explicit ``head_dim`` (it becomes hidden/heads);
    changing the layers drops ``layers_per_stage`` (the split becomes the even one).
    """
    req: EstimateRequest = parse(EstimateRequest, {k: body[k] for k in (
        "model", "training", "cluster", "plan") if k in body})
    model = req.model.model_dump(exclude_defaults=False)
    training = req.training.model_dump()
    plan = req.plan.model_dump(exclude_none=True)
    changed: dict[str, int] = {}
    for opt, value in overrides.items():
        if value is None:
            continue
        if opt not in OVERRIDES:
            raise SpecError(FieldProblem(opt, f"unknown override; use {', '.join(OVERRIDES)}"))
        part, field = OVERRIDES[opt]
        target = model if part == "model" else training
        if target.get(field) != value:
            target[field] = int(value)
            changed[field] = int(value)
    if {"hidden_size", "num_attention_heads"} & set(changed):
        model["head_dim"] = None
    if "num_hidden_layers" in changed:
        plan.pop("layers_per_stage", None)
    if "num_attention_heads" in changed and "num_key_value_heads" not in changed:
        kv = model.get("num_key_value_heads")
        if kv is not None and changed["num_attention_heads"] % kv:
            model["num_key_value_heads"] = None  # MHA unless --kv-heads says otherwise
    out = {**body, "model": model, "training": training, "plan": plan}
    # the scaled request must still be a valid plan (every cross-field rule)
    checked: EstimateRequest = parse(EstimateRequest, out)
    check_plan(checked.model, checked.training, checked.cluster, checked.plan)
    return out, changed


def local_request(body: dict[str, Any], profile: CalibrationProfile, world_size: int,
                  nodes: int, precision: str) -> dict[str, Any]:
    """The estimate request that predicts this run: the (scaled) model, training and plan on
    one pool of the devices the calibration measured, ``world_size / nodes`` per node, at the
    precision the run computes in."""
    if profile.gpu is None:
        raise SpecError(FieldProblem("calibration.gpu", "the profile names no device; predict "
                                     "with a profile measured by `meshplan-runtime calibrate`"))
    pool = {"name": "local", "gpu": profile.gpu, "gpus_per_node": world_size // nodes,
            "nodes": nodes}
    plan = {**body["plan"], "pool": "local"}
    plan.pop("stages", None)
    training = {**body["training"], "precision": precision}
    return {"model": body["model"], "training": training,
            "cluster": {"pools": [pool]}, "plan": plan,
            "calibration": profile.model_dump(mode="json")}


@dataclass(frozen=True)
class StageSplit:
    """Where the pipeline stages go: each global stage's blocks and its pipeline rank."""

    layers: list[int]
    """Blocks per global stage, model order."""
    rank_of_stage: list[int]

    def stages_of(self, pp_rank: int) -> list[int]:
        return [s for s, r in enumerate(self.rank_of_stage) if r == pp_rank]

    def block_range(self, stage: int) -> range:
        start = sum(self.layers[:stage])
        return range(start, start + self.layers[stage])


def split(body: dict[str, Any]) -> StageSplit:
    """The layer split and stage placement of a (validated) request's plan — the cost model's
    own (:func:`~costmodel.specs.request.stage_layers`, :func:`stage_to_rank`), so the run
    and its prediction cut the model in the same places."""
    req: EstimateRequest = parse(EstimateRequest, {k: body[k] for k in (
        "model", "training", "cluster", "plan")})
    plan = req.plan
    sched = plan.schedule if plan.schedule != "custom" else "1F1B"
    return StageSplit(stage_layers(req.model, plan), stage_to_rank(sched, plan.pp,
                                                                    plan.virtual_stages))


def csv_split(rows: list[list[str]], num_layers: int,
              layers_per_stage: list[int] | None = None) -> StageSplit:
    """Stage placement read from a compute-only schedule CSV (one row per pipeline rank, torch
    ``_Action`` strings such as ``0F1``, ``1B0``, ``2I3``, ``2W3``): every stage on the rank
    whose row computes it; layers from ``layers_per_stage`` or an even split."""
    import re

    act = re.compile(r"^(\d+)(F|B|I|W)(\d+)$")
    owner: dict[int, int] = {}
    for rank, row in enumerate(rows):
        for cell in row:
            m = act.match(cell.strip())
            if m:
                s = int(m.group(1))
                if owner.setdefault(s, rank) != rank:
                    raise SpecError(FieldProblem(
                        "schedule_csv", f"stage {s} is computed on ranks {owner[s]} and {rank}"))
    if not owner:
        raise SpecError(FieldProblem("schedule_csv", "no compute actions (e.g. 0F0) found"))
    n = max(owner) + 1
    missing = sorted(set(range(n)) - set(owner))
    if missing:
        raise SpecError(FieldProblem("schedule_csv", f"stages {missing} have no actions"))
    if layers_per_stage is not None and len(layers_per_stage) == n:
        layers = list(layers_per_stage)
    else:
        if n > num_layers:
            raise SpecError(FieldProblem("schedule_csv", f"{n} stages exceed {num_layers} layers"))
        base, extra = divmod(num_layers, n)
        layers = [base + (1 if i < extra else 0) for i in range(n)]
    return StageSplit(layers, [owner[s] for s in range(n)])


def csv_microbatches(rows: list[list[str]]) -> int:
    """Micro-batches a schedule CSV runs (largest micro-batch index + 1)."""
    import re

    act = re.compile(r"^\d+(?:F|B|I|W)(\d+)$")
    found = [int(m.group(1)) for row in rows for c in row if (m := act.match(c.strip()))]
    if not found:
        raise SpecError(FieldProblem("schedule_csv", "no compute actions (e.g. 0F0) found"))
    return max(found) + 1
