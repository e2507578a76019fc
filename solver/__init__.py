"""meshplan's plan search: enumeration with bulk cost evaluation, branch and bound with the
exact estimate, CP-SAT layer partitioning, Pareto front and explanations.

``search(request)`` takes the body of ``POST /v1/searches`` (dict or
:class:`~solver.request.SearchRequest`) and returns a :class:`~solver.results.SearchResult`.
"""

from __future__ import annotations

from solver.request import Constraints, SearchRequest
from solver.results import SearchResult
from solver.search import search

__all__ = ["Constraints", "SearchRequest", "SearchResult", "search"]
