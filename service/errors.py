"""One error format for every endpoint: RFC 9457 problem details (``application/problem+json``).

Every error body has ``type``, ``title``, ``status``, ``detail`` and ``instance`` (the request
path). Input errors (422) add ``errors``: one ``{field, rule}`` per broken rule, ``field`` a dotted
path into the request body (``plan.tp``, ``model.num_key_value_heads``) — the same pairs that
:class:`costmodel.errors.SpecError` carries, whether the rule was broken in the schema (pydantic)
or between fields (the cost model's cross-field checks).

Plain HTTP errors (404, 405, 413, 500) use ``type: about:blank`` with the status phrase as title,
as RFC 9457 §4.2.1 recommends. Unexpected exceptions are logged with their stack trace and
answered with a generic 500 that reveals nothing of it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from costmodel.errors import FieldProblem, SpecError
from service.exceptions import ServiceError

logger = logging.getLogger("meshplan.service")

PROBLEM_JSON = "application/problem+json"

INVALID_INPUT = "urn:meshplan:problem:invalid-input"
"""422: the body is JSON but breaks a schema or cross-field rule (see ``errors``)."""
MALFORMED_JSON = "urn:meshplan:problem:malformed-json"
"""400: the body is not parseable JSON."""
BLANK = "about:blank"

TITLES = {413: "Content Too Large", 422: "Unprocessable Content"}
"""RFC 9110 names where Python 3.11's ``HTTPStatus`` still has the RFC 7231 ones."""


class FieldError(BaseModel):
    """One broken rule: where (a dotted path into the request body) and what."""

    field: str = Field(examples=["plan.tp"])
    rule: str = Field(examples=["num_attention_heads=64 must be divisible by tp=3"])


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(BLANK, description="URI identifying the problem type.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="Explanation specific to this occurrence.")
    instance: str = Field(description="The request path this problem occurred on.")
    errors: list[FieldError] | None = Field(
        None, description="For 422: every broken rule, with the field it concerns.")


NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such resource (or not one this key created)."},
}

STALE_PLAN: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "The plan was stored by a cost model whose request "
          "does not validate under this version; run its search again."},
}

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Malformed JSON body."},
    413: {"model": Problem, "description": "Request body larger than the server accepts."},
    422: {"model": Problem, "description": "Invalid input; `errors` lists each field and rule."},
}
"""``responses=`` for endpoints that take a body; error content is moved to
``application/problem+json`` by :func:`problem_openapi`."""


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_JSON


def title_for(status: int) -> str:
    if status in TITLES:
        return TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(status: int, detail: str, instance: str, *, type_: str = BLANK,
                 title: str | None = None,
                 errors: Iterable[FieldError] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": type_, "title": title or title_for(status), "status": status,
        "detail": detail, "instance": instance,
    }
    if errors is not None:
        body["errors"] = [e.model_dump() for e in errors]
    return body


def problem_response(request: Request, status: int, detail: str, *, type_: str = BLANK,
                     title: str | None = None, errors: Iterable[FieldError] | None = None,
                     headers: Mapping[str, str] | None = None) -> ProblemResponse:
    body = problem_body(status, detail, request.url.path, type_=type_, title=title,
                        errors=errors)
    return ProblemResponse(body, status_code=status, headers=headers)


def invalid_input(request: Request, errors: Sequence[FieldError]) -> ProblemResponse:
    n = len(errors)
    if n == 1:
        detail = f"{errors[0].field}: {errors[0].rule}"
    else:
        detail = f"{n} problems with the request; see errors"
    return problem_response(request, 422, detail, type_=INVALID_INPUT, title="Invalid input",
                            errors=errors)


# ---------------------------------------------------------------------------- converting errors
def _clean(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg


def _dedupe(errors: Iterable[FieldError]) -> list[FieldError]:
    seen: set[tuple[str, str]] = set()
    out: list[FieldError] = []
    for e in errors:
        if (e.field, e.rule) not in seen:
            seen.add((e.field, e.rule))
            out.append(e)
    return out


def from_problems(problems: Iterable[FieldProblem]) -> list[FieldError]:
    return _dedupe(FieldError(field=p.field, rule=p.rule) for p in problems)


def from_pydantic(errors: Sequence[Mapping[str, Any]], *, strip: str | None = None
                  ) -> list[FieldError]:
    """pydantic error dicts → field errors with dotted paths.

    ``strip`` drops a leading location element (FastAPI's ``"body"``). A :class:`SpecError`
    raised inside a validator (``ctx.error``) contributes its own problems, whose fields are
    already full paths (``model.num_key_value_heads``), instead of pydantic's coarser location.
    """
    out: list[FieldError] = []
    for e in errors:
        err = (e.get("ctx") or {}).get("error")
        if isinstance(err, SpecError):
            out.extend(from_problems(err.problems))
            continue
        loc = list(e.get("loc") or ())
        if strip is not None and loc and loc[0] == strip:
            loc = loc[1:]
        field = ".".join(str(p) for p in loc) or "body"
        rule = _clean(str(e.get("msg", "invalid value")))
        if not loc and isinstance(e.get("input"), bytes | bytearray):
            rule = "expected a JSON object sent with Content-Type: application/json"
        out.append(FieldError(field=field, rule=rule))
    return _dedupe(out)


def json_error_detail(msg: str, doc: str | bytes | None, pos: int | None) -> str:
    """``malformed JSON: Expecting value at line 1, column 5`` (line/column when known)."""
    where = ""
    if isinstance(pos, int):
        if isinstance(doc, str):
            line = doc.count("\n", 0, pos) + 1
            col = pos - (doc.rfind("\n", 0, pos) + 1) + 1
            where = f" at line {line}, column {col}"
        else:
            where = f" at character {pos}"
    return f"malformed JSON: {msg}{where}"


# ---------------------------------------------------------------------------- handlers
async def _validation_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            loc = e.get("loc") or ()
            pos = loc[-1] if loc and isinstance(loc[-1], int) else None
            msg = str((e.get("ctx") or {}).get("error", "invalid JSON"))
            return problem_response(request, 400, json_error_detail(msg, exc.body, pos),
                                    type_=MALFORMED_JSON, title="Malformed JSON")
    return invalid_input(request, from_pydantic(errors, strip="body"))


async def _spec_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SpecError)
    return invalid_input(request, from_problems(exc.problems))


def allowed_methods(request: Request) -> str:
    """Every method the API serves at this path, from its OpenAPI document (Starlette's 405
    names only the first route that matched the path, so GET + POST on /v1/searches answered
    ``Allow: POST``)."""
    openapi = getattr(request.app, "openapi", None)
    if openapi is None:
        return ""
    methods: set[str] = set()
    path = request.url.path
    for template, ops in (openapi().get("paths") or {}).items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods.update(m.upper() for m in ops if m.lower() in HTTP_METHODS)
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


async def _http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
    if status == 404 and detail == "Not Found":
        detail = f"no resource at {request.url.path}"
    elif status == 405:
        allow = allowed_methods(request) or (exc.headers or {}).get("Allow", "")
        detail = f"{request.method} is not allowed on {request.url.path}" + (
            f"; allowed: {allow}" if allow else "")
        headers = {**(exc.headers or {}), "Allow": allow} if allow else exc.headers
        return problem_response(request, status, detail, headers=headers)
    elif status == 400 and detail == "There was an error parsing the body":
        # FastAPI's answer when the body is not decodable text (e.g. invalid UTF-8).
        return problem_response(request, 400, "malformed JSON: the body could not be decoded "
                                "(send UTF-8 JSON)", type_=MALFORMED_JSON,
                                title="Malformed JSON", headers=exc.headers)
    return problem_response(request, status, detail, headers=exc.headers)


async def _service_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    return problem_response(request, exc.status, exc.detail, headers=exc.headers)


INTERNAL_ERROR_DETAIL = "an unexpected error occurred; it has been logged"


async def _unhandled_handler(request: Request, exc: Exception) -> Response:
    logger.error("unhandled error on %s %s", request.method, request.url.path,
                 exc_info=(type(exc), exc, exc.__traceback__))
    return problem_response(request, 500, INTERNAL_ERROR_DETAIL)


DATABASE_RETRY_AFTER_S = 5
"""Retry-After of a 503 while the database cannot be reached (seconds)."""
DATABASE_LOG_INTERVAL_S = 30.0
"""One log line per kind of database failure per this many seconds (not one per request)."""
_last_logged: dict[str, tuple[float, int]] = {}


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached now (connection refused or lost,
    server shutting down), as opposed to a bug in a query."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    # TimeoutError: the connection pool's checkout timeout
    return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError)


def _log_database_failure(kind: str, exc: BaseException) -> None:
    now = time.monotonic()
    last, suppressed = _last_logged.get(kind, (-math.inf, 0))
    if now - last < DATABASE_LOG_INTERVAL_S:
        _last_logged[kind] = (last, suppressed + 1)
        return
    more = f" ({suppressed} more since the last line)" if suppressed else ""
    logger.error("database unavailable (%s): %s%s", kind, str(exc).splitlines()[0][:300], more)
    _last_logged[kind] = (now, 0)


async def _database_error_handler(request: Request, exc: Exception) -> Response:
    if not database_unavailable(exc):
        return await _unhandled_handler(request, exc)
    orig = getattr(exc, "orig", None)
    _log_database_failure(type(orig or exc).__name__, exc)
    return problem_response(
        request, 503, "the database cannot be reached; the request was not carried out "
        f"(retry after {DATABASE_RETRY_AFTER_S} s; /readyz says when it is back)",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})


def install(app: FastAPI) -> None:
    """Register the problem+json handlers on ``app``."""
    app.add_exception_handler(sa_exc.SQLAlchemyError, _database_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(SpecError, _spec_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(ServiceError, _service_error_handler)
    app.add_exception_handler(Exception, _unhandled_handler)


def problem_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare error responses (status ≥ 400) as ``application/problem+json`` in ``schema``."""
    for path in schema.get("paths", {}).values():
        for op in path.values():
            if not isinstance(op, dict):
                continue
            for status, resp in op.get("responses", {}).items():
                content = resp.get("content") if isinstance(resp, dict) else None
                if not content or not str(status).startswith(("4", "5")):
                    continue
                if "application/json" in content:
                    content[PROBLEM_JSON] = content.pop("application/json")
    return schema
