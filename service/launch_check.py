"""The launch check a search's ``constraints.framework`` uses: the runtime's emitters,
wired into the solver here (the service is the layer that sees both)."""

from __future__ import annotations

from costmodel.specs.framework import Framework
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.request import EstimateRequest
from runtime.launch import refusals
from solver.request import SearchRequest

__all__ = ["framework_refusals"]


def framework_refusals(req: SearchRequest, framework: Framework,
                       plan: ParallelPlan) -> list[str]:
    """The rules of ``framework`` that ``plan`` breaks for the job of ``req``."""
    est = EstimateRequest(model=req.model, training=req.training, cluster=req.cluster,
                          plan=plan, calibration=req.calibration)
    return refusals(framework, est)
