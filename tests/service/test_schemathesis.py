"""Schema-driven API fuzz: schemathesis generates requests for every operation of the OpenAPI
document and calls the ASGI app on each database; no answer is a server error and every
answer matches its documented schema.

schemathesis' own pytest plugin does not run under pytest 9 (it reads a private attribute of
pytest's items), so each operation's hypothesis strategy is driven here directly.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from service.app import create_app
from service.db.engine import Database
from service.settings import Settings

EXAMPLES = 25
"""Generated requests per operation and database (bounded: the suite's time)."""


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_no_server_error_and_answers_match_the_schema(backend: str,
                                                      request: pytest.FixtureRequest) -> None:
    url: str = request.getfixturevalue(f"{backend}_url")
    db = Database(url)
    request.addfinalizer(db.dispose)
    app = create_app(Settings(database_url=url, workers=0), db=db)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    operations = 0
    calls: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            calls.append(case.path)
            case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

        try:
            run()
        except Exception as exc:
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert operations > 10 and len(calls) >= operations, (operations, len(calls))
    assert not failures, "\n\n".join(failures)
