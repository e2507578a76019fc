"""Typed errors of the cost model.

Every rejection of user input names the offending field (a dotted path in the request, such as
``plan.tp`` or ``model.num_key_value_heads``) and the rule that was broken, so that the API can
answer 422 with a field path and the CLI can exit 2 with a readable message.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One broken rule: where (dotted field path) and what (the rule, in words)."""

    field: str
    rule: str

    def __str__(self) -> str:
        return f"{self.field}: {self.rule}"


class SpecError(ValueError):
    """Input that is well-formed JSON but inconsistent or out of range.

    ``problems`` lists every broken rule found (at least one). ``field`` and ``rule`` are those
    of the first, for callers that report only one.
    """

    def __init__(self, problems: list[FieldProblem] | FieldProblem) -> None:
        if isinstance(problems, FieldProblem):
            problems = [problems]
        if not problems:
            raise ValueError("SpecError needs at least one problem")
        self.problems: list[FieldProblem] = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    def __reduce__(self) -> tuple[type[SpecError], tuple[list[FieldProblem]]]:
        # pickled with its problems (not the joined message), so that it survives the trip
        # back from a process pool (service.estimates.heavy)
        return (SpecError, (self.problems,))

    @property
    def field(self) -> str:
        return self.problems[0].field

    @property
    def rule(self) -> str:
        return self.problems[0].rule


def problem(field: str, rule: str) -> SpecError:
    """Shorthand for a single-problem :class:`SpecError`."""
    return SpecError(FieldProblem(field, rule))


class ProblemCollector:
    """Collects problems so that a request gets all its errors in one answer, not one per try."""

    def __init__(self) -> None:
        self.problems: list[FieldProblem] = []

    def add(self, field: str, rule: str) -> None:
        self.problems.append(FieldProblem(field, rule))

    def check(self, ok: bool, field: str, rule: str) -> bool:
        if not ok:
            self.add(field, rule)
        return ok

    def raise_if_any(self) -> None:
        if self.problems:
            raise SpecError(self.problems)
