"""meshplan's cost model: specs, GPU catalog, calibration profiles, compute / communication /
memory models and the pipeline-schedule simulator. numpy + pydantic only.

``estimate(request)`` takes the body of ``POST /v1/estimates`` (dict or
:class:`~costmodel.specs.request.EstimateRequest`) and returns an
:class:`~costmodel.results.Estimate`; ``timeline_svg(request)`` draws the same request's
simulated pipeline schedule as SVG, ``timeline_html(request)`` as an interactive page.
"""

from __future__ import annotations

__version__ = "0.1.0"

from costmodel.errors import FieldProblem, SpecError
from costmodel.estimate import estimate, evaluate
from costmodel.results import Estimate
from costmodel.specs.cluster import Cluster, GPUPool
from costmodel.specs.model import ModelSpec
from costmodel.specs.plan import ParallelPlan
from costmodel.specs.request import EstimateRequest
from costmodel.specs.scenario import Scenario
from costmodel.specs.training import TrainingSpec
from costmodel.timeline import timeline_html, timeline_svg
from costmodel.what_if import WhatIfResult, straggler_sensitivity, what_if

__all__ = [
    "Cluster",
    "Estimate",
    "EstimateRequest",
    "FieldProblem",
    "GPUPool",
    "ModelSpec",
    "ParallelPlan",
    "Scenario",
    "SpecError",
    "TrainingSpec",
    "WhatIfResult",
    "__version__",
    "estimate",
    "evaluate",
    "straggler_sensitivity",
    "timeline_html",
    "timeline_svg",
    "what_if",
]
