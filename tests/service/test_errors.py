"""The one error format: RFC 9457 problem details for routing errors, and the converters."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError, field_validator

from costmodel.errors import FieldProblem, SpecError
from service.errors import FieldError, from_pydantic, json_error_detail, title_for
from tests.service.support import Api, assert_problem


def test_unknown_route_is_404_problem(api: Api) -> None:
    body = assert_problem(api.get("/v1/nothing-here"), 404)
    assert body == {"type": "about:blank", "title": "Not Found", "status": 404,
                    "detail": "no resource at /v1/nothing-here", "instance": "/v1/nothing-here"}


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("GET", "/v1/estimates", "POST"),
    ("DELETE", "/v1/gpus", "GET"),
    ("POST", "/healthz", "GET"),
])
def test_wrong_method_is_405_problem(api: Api, method: str, path: str, allow: str) -> None:
    resp = api.request(method, path)
    body = assert_problem(resp, 405)
    assert body["title"] == "Method Not Allowed"
    assert allow in resp.headers["allow"]
    assert body["detail"] == f"{method} is not allowed on {path}; allowed: {resp.headers['allow']}"


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PATCH", "/v1/searches", "GET, HEAD, POST"),
    ("PUT", "/v1/searches/0b0e6c5e-58a8-4a5a-9a3e-0d3f3c1f0a10", "DELETE, GET, HEAD"),
])
def test_allow_lists_every_method_of_the_path(api: Api, method: str, path: str,
                                              allow: str) -> None:
    """A path served by several routes (list and create; get and cancel) names all their
    methods in Allow (RFC 9110 §15.5.6), not only the first route's."""
    assert api.request(method, path).headers["allow"] == allow


def test_titles_use_rfc_9110_names() -> None:
    assert title_for(413) == "Content Too Large"
    assert title_for(422) == "Unprocessable Content"
    assert title_for(404) == "Not Found"
    assert title_for(599) == "Error"


class _Inner(BaseModel):
    x: int

    @field_validator("x")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise SpecError([FieldProblem("inner.x", "must be odd"),
                             FieldProblem("inner.y", "also wrong")])
        return v


class _Outer(BaseModel):
    inner: _Inner
    n: int


def test_from_pydantic_paths_and_nested_spec_errors() -> None:
    with pytest.raises(ValidationError) as exc:
        _Outer.model_validate({"inner": {"x": 2}, "n": "many"})
    errors = from_pydantic(exc.value.errors())
    assert errors == [FieldError(field="inner.x", rule="must be odd"),
                      FieldError(field="inner.y", rule="also wrong"),
                      FieldError(field="n", rule="Input should be a valid integer, unable to "
                                 "parse string as an integer")]


def test_from_pydantic_strips_body_and_dedupes() -> None:
    raw = [{"loc": ("body", "plan", "tp"), "msg": "Value error, bad", "type": "value_error"},
           {"loc": ("body", "plan", "tp"), "msg": "bad", "type": "value_error"},
           {"loc": ("body",), "msg": "Field required", "type": "missing"}]
    assert from_pydantic(raw, strip="body") == [FieldError(field="plan.tp", rule="bad"),
                                                FieldError(field="body", rule="Field required")]


def test_json_error_detail() -> None:
    # json.loads: "Expecting value: line 2 column 8 (char 9)"
    assert json_error_detail("Expecting value", '{\n  "a": }', 9) == (
        "malformed JSON: Expecting value at line 2, column 8")
    assert json_error_detail("Expecting value", None, None) == "malformed JSON: Expecting value"
