"""``constraints.framework``: plans the named framework cannot launch are not returned.

Which plans a framework can run is decided by its launch-config emitter (``runtime/launch``),
the one place those rules are written; the solver does not import it (runtime sits beside the
solver, not below it). The caller that has both — the service's job runner and CLI — passes
the check to :func:`solver.search` as ``launchable``; the search applies it to every plan
before it enters the results, as it applies the memory and budget constraints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from costmodel.specs.framework import Framework
from costmodel.specs.plan import ParallelPlan
from solver.request import SearchRequest

__all__ = ["LaunchCheck", "checking", "launchable"]

LaunchCheck = Callable[[SearchRequest, Framework, ParallelPlan], list[str]]
"""(request, framework, plan) → the framework's rules the plan breaks (empty: it launches)."""

_CHECK: ContextVar[LaunchCheck | None] = ContextVar("meshplan_launch_check", default=None)


@contextmanager
def checking(check: LaunchCheck | None) -> Iterator[None]:
    """Use ``check`` for the searches run inside the block."""
    token = _CHECK.set(check)
    try:
        yield
    finally:
        _CHECK.reset(token)


def launchable(req: SearchRequest, plan: ParallelPlan) -> bool:
    """Whether ``plan`` meets ``req``'s framework constraint (always without one)."""
    framework = req.framework_constraint
    check = _CHECK.get()
    if framework is None:
        return True
    if check is None:
        raise RuntimeError("constraints.framework needs a launch check: call solver.search "
                           "with launchable=service.launch_check.framework_refusals (the "
                           "service and the CLI do)")
    return not check(req, framework, plan)
