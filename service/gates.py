"""``--fail-if`` thresholds: CI gates on a plan's predicted figures.

``meshplan plan job.json --fail-if 'mfu<0.35' --fail-if 'cost_per_million_tokens>2.0'`` exits
4 when any condition holds for the best plan. A condition is ``FIELD OP NUMBER`` with ``OP``
one of ``< <= > >= == !=`` and ``FIELD`` a numeric field of the estimate, dotted for nested
ones (``memory.peak_gib``, ``breakdown.compute_s``). Fields are checked before anything runs, so
that a typo fails at once rather than after a search.
"""

from __future__ import annotations

import operator
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt,
}
_GATE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|!=|<|>)\s*"
                   r"([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Gate:
    field: str
    op: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.field}{self.op}{self.threshold:g}"


def numeric_fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted paths of the int and float fields of ``model`` and its nested models (not of
    lists or dicts)."""
    out: set[str] = set()
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        for t in _members(info.annotation):
            if t in (int, float) and t is not bool:
                out.add(path)
            elif isinstance(t, type) and issubclass(t, BaseModel):
                out |= numeric_fields(t, path + ".")
    return out


def _members(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _members(a)]
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    return [annotation]


def parse(texts: Iterable[str], fields: set[str]) -> list[Gate]:
    """Gates from ``--fail-if`` options; ValueError naming the option and the rule."""
    gates = []
    for text in texts:
        m = _GATE.match(text)
        if not m:
            raise ValueError(f"--fail-if {text!r}: expected FIELD OP NUMBER, e.g. 'mfu<0.35' "
                             "(OP: < <= > >= == !=)")
        field, op, number = m.group(1), m.group(2), float(m.group(3))
        if field not in fields:
            close = sorted(f for f in fields if field.split(".")[-1] in f)[:8]
            hint = f"; did you mean {', '.join(close)}?" if close else \
                f"; numeric fields include {', '.join(sorted(fields)[:12])}, ..."
            raise ValueError(f"--fail-if {text!r}: unknown field {field!r}{hint}")
        gates.append(Gate(field, op, number))
    return gates


def lookup(data: Mapping[str, Any], path: str) -> float | None:
    node: Any = data
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) \
        else None


def tripped(gates: Iterable[Gate], data: Mapping[str, Any]) -> list[str]:
    """A line for each gate whose condition holds on ``data`` (or whose field is missing)."""
    out = []
    for g in gates:
        value = lookup(data, g.field)
        if value is None:
            out.append(f"--fail-if {g}: {g.field} is not in the result")
        elif OPS[g.op](value, g.threshold):
            out.append(f"--fail-if {g}: {g.field} = {value:.6g}")
    return out
