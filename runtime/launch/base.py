"""What every emitter shares: the error, the result type and the validated job.

An emitter never sees raw input: :func:`prepare` validates the request with the cost model's own
rules (``parse`` + ``check_plan``), so an invalid plan is refused exactly as ``POST /v1/estimates``
refuses it, with the normal :class:`~costmodel.errors.SpecError`. What is left to an emitter is
the framework's own rules: a plan that is valid for meshplan but that the framework cannot run
is refused with a :class:`LaunchError` naming the plan field and the framework rule, never
emitted as a config that would fail at launch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from costmodel.errors import FieldProblem, ProblemCollector, SpecError
from costmodel.specs.cluster import Cluster, GPUPool
from costmodel.specs.model import ModelSpec
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.request import (
    EstimateRequest,
    check_plan,
    num_microbatches,
    parse,
    stage_layers,
)
from costmodel.specs.training import TrainingSpec

MEDIA_SHELL = "text/x-shellscript"
MEDIA_JSON = "application/json"
MEDIA_CSV = "text/csv"
MEDIA_TOML = "application/toml"


def media_type_of(filename: str) -> str:
    """The MIME type of a file an emitter writes, from its suffix (``text/plain`` otherwise)."""
    for suffix, media in ((".sh", MEDIA_SHELL), (".json", MEDIA_JSON), (".csv", MEDIA_CSV),
                          (".toml", MEDIA_TOML)):
        if filename.endswith(suffix):
            return media
    return "text/plain"


class LaunchError(SpecError):
    """A valid plan that the chosen framework cannot express or run.

    A :class:`~costmodel.errors.SpecError` (so the API answers 422 and the CLI exits 2) whose
    problems name the plan field and the framework's rule, with the file that holds the rule.
    """

    def __init__(self, problems: list[FieldProblem] | FieldProblem | str,
                 rule: str | None = None) -> None:
        if isinstance(problems, str):
            if rule is None:
                raise ValueError("LaunchError(field, rule) needs a rule")
            problems = FieldProblem(problems, rule)
        super().__init__(problems)


class Refusals(ProblemCollector):
    """Collects every framework rule a plan breaks, so one answer lists them all (as a
    :class:`LaunchError`)."""

    def raise_if_any(self) -> None:
        if self.problems:
            raise LaunchError(self.problems)


class LaunchConfig(BaseModel):
    """One rendered launch config: the main file (``content``, to save as ``filename``) and the
    extra files a format needs, with notes on what the user must still supply."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = Field(description="One of runtime.launch.FORMATS.")
    filename: str = Field(description="Suggested file name for content.")
    media_type: str = Field(description="MIME type of content.")
    content: str = Field(description="The file or command line, to use as is.")
    files: dict[str, str] = Field(
        default_factory=dict, description="Extra files by name (e.g. the torchtitan TOML and "
        "the schedule CSV), each referred to by name from content.")
    notes: list[str] = Field(
        default_factory=list, description="What the user must supply (data, tokenizer, "
        "rendezvous host) and every approximation of the plan the framework forces.")


@dataclass(frozen=True)
class Job:
    """A validated request and the figures every emitter derives from it."""

    request: EstimateRequest
    pool: GPUPool
    """The plan's pool (the first stage's pool for a heterogeneous plan)."""
    stage_layers: tuple[int, ...]
    """Transformer layers of each global pipeline stage in model order (``stage_layers``)."""
    n_microbatches: int
    """Micro-batches per optimizer step and pipeline: global batch / (dp · micro-batch)."""
    version: str | None = None
    """The release of the format's framework to write for (None = its current release):
    ``render``'s ``version``, else ``training.framework_version`` when ``training.framework``
    is that format's framework."""

    @property
    def model(self) -> ModelSpec:
        return self.request.model

    @property
    def training(self) -> TrainingSpec:
        return self.request.training

    @property
    def cluster(self) -> Cluster:
        return self.request.cluster

    @property
    def plan(self) -> ParallelPlan:
        return self.request.plan

    @property
    def world(self) -> int:
        """GPUs (processes) the plan runs on."""
        return self.plan.num_gpus

    def request_json(self) -> dict[str, Any]:
        """The validated request as JSON: model fields explicit, no calibration when absent."""
        data: dict[str, Any] = self.request.model_dump(mode="json")
        if data.get("calibration") is None:
            data.pop("calibration", None)
        return data

    @property
    def digest(self) -> str:
        """8 hex digits of the request's SHA-256: a stable rendezvous id for this plan.

        Hashed without the fields left at their defaults, so a field the contract gains later
        (with a default) does not change the id of a plan rendered before it.
        """
        data = self.request.model_dump(mode="json", exclude_defaults=True)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:8]

    def summary(self) -> str:
        p = self.plan
        parts = [f"tp={p.tp}", f"pp={p.pp}", f"dp={p.dp}", f"cp={p.cp}", f"ep={p.ep}"]
        if p.pp > 1:
            parts.append(p.schedule + (f" vp={p.virtual_stages}" if p.virtual_stages > 1 else ""))
        return f"{self.model.name} on {self.world} GPUs ({' '.join(parts)})"


def prepare(request: EstimateRequest | dict[str, Any]) -> Job:
    """Validate ``request`` as ``POST /v1/estimates`` does and derive the job's figures.

    Raises the cost model's :class:`~costmodel.errors.SpecError` for an invalid request."""
    req: EstimateRequest = parse(EstimateRequest, request)
    pool = check_plan(req.model, req.training, req.cluster, req.plan)
    return Job(request=req, pool=pool, stage_layers=tuple(stage_layers(req.model, req.plan)),
               n_microbatches=num_microbatches(req.training, req.plan))


def dumps_json(data: Any) -> str:
    """JSON as every format writes it: two-space indent, key order kept, final newline."""
    return json.dumps(data, indent=2) + "\n"
