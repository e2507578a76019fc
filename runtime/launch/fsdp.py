"""Plain PyTorch FSDP (FSDP1/FSDP2 as llm-foundry and accelerate drive it): the rules of the
``fsdp`` framework. Those trainers shard the model over data-parallel ranks only (FSDP, HSDP)
and have no tensor, pipeline, context or expert parallelism of their own; a plan is launched
with torchrun (format ``torchrun``)."""

from __future__ import annotations

from runtime.launch.base import Job, Refusals

__all__ = ["refuse_fsdp"]


def refuse_fsdp(job: Job, r: Refusals) -> None:
    plan = job.plan
    for field, value in (("tp", plan.tp), ("pp", plan.pp), ("cp", plan.cp), ("ep", plan.ep)):
        r.check(value == 1, f"plan.{field}",
                f"plain PyTorch FSDP (llm-foundry, accelerate) shards over data-parallel ranks "
                f"only; {field} = {value} needs a framework with that parallelism (torchtitan, "
                "megatron)")
