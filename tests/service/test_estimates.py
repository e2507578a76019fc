"""``POST /v1/estimates``: the documented example, every class of bad input, and the 500 path."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import costmodel
from costmodel.results import Estimate
from costmodel.specs.presets import get_preset
from service.app import create_app
from service.errors import INVALID_INPUT, MALFORMED_JSON
from service.settings import Settings
from tests.service.support import Api, assert_problem, fields

URL = "/v1/estimates"
HF_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "hf_configs"


# ---------------------------------------------------------------------------- success
def test_documented_example_evaluates_and_fits(api: Api, example: dict[str, Any]) -> None:
    resp = api.post(URL, json=example)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    # The contract's response fields (ARCHITECTURE.md).
    for key in ("step_time_s", "tokens_per_s", "tokens_per_s_per_gpu", "mfu", "fits",
                "memory", "breakdown", "cost_per_hour", "cost_per_million_tokens"):
        assert key in body
    assert {"peak_gib", "per_stage"} <= set(body["memory"])
    est = Estimate.model_validate(body)
    assert est.fits
    assert est.num_gpus == 8 * 4 * 16 and est.gpu == "H100-SXM-80GB"
    assert len(est.memory.per_stage) == 4
    assert 0 < est.mfu < 1 and est.step_time_s > 0
    assert est.cost_per_hour == pytest.approx(512 * 2.49)


def test_response_is_the_cost_models_estimate(api: Api, example: dict[str, Any]) -> None:
    """The service adds nothing: the body is ``costmodel.estimate(body).model_dump()``."""
    body = api.post(URL, json=example).json()
    assert body == json.loads(costmodel.estimate(example).model_dump_json())


def test_example_is_in_the_openapi_document(api: Api, example: dict[str, Any]) -> None:
    doc = api.get("/openapi.json").json()
    op = doc["paths"][URL]["post"]
    content = op["requestBody"]["content"]["application/json"]
    assert content["schema"] == {"$ref": "#/components/schemas/EstimateRequest"}
    assert content["examples"]["llama3-70b"]["value"] == example
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Estimate"}
    for status in ("400", "413", "422"):
        assert list(op["responses"][status]["content"]) == ["application/problem+json"]


def test_explicit_model_and_hf_config_forms(api: Api, example: dict[str, Any]) -> None:
    preset = api.post(URL, json=example).json()
    example["model"] = get_preset("llama3-70b").model_dump(mode="json")
    explicit = api.post(URL, json=example).json()
    assert explicit["step_time_s"] == pytest.approx(preset["step_time_s"])
    example["model"] = {"hf_config": json.loads((HF_DIR / "llama3-70b.json").read_text())}
    resp = api.post(URL, json=example)
    assert resp.status_code == 200, resp.text
    assert resp.json()["step_time_s"] == pytest.approx(preset["step_time_s"])


def test_plan_that_does_not_fit_is_200_with_fits_false(api: Api,
                                                       example: dict[str, Any]) -> None:
    example["plan"] = {"pool": "h100", "tp": 1, "pp": 1, "dp": 16, "schedule": "1F1B"}
    resp = api.post(URL, json=example)
    assert resp.status_code == 200, resp.text
    assert resp.json()["fits"] is False


# ---------------------------------------------------------------------------- 422: schema
def test_missing_sections(api: Api) -> None:
    body = assert_problem(api.post(URL, json={}), 422)
    assert body["type"] == INVALID_INPUT
    assert fields(body) == {"model", "training", "cluster", "plan"}
    assert all(e["rule"] == "Field required" for e in body["errors"])


def test_missing_nested_field(api: Api, example: dict[str, Any]) -> None:
    del example["training"]["seq_len"]
    body = assert_problem(api.post(URL, json=example), 422)
    assert fields(body) == {"training.seq_len"}


@pytest.mark.parametrize(("path", "value", "field"), [
    (("plan", "tp"), "eight", "plan.tp"),
    (("plan", "tp"), 0, "plan.tp"),
    (("plan", "dp"), -4, "plan.dp"),
    (("plan", "tp"), 2.5, "plan.tp"),
    (("plan", "schedule"), "Zigzag", "plan.schedule"),
    (("plan", "zero_stage"), 4, "plan.zero_stage"),
    (("training", "precision"), "fp4", "training.precision"),
    (("training", "global_batch_size"), [1024], "training.global_batch_size"),
    (("cluster", "pools"), [], "cluster.pools"),
    (("cluster", "pools", 0, "price_per_gpu_hour"), -1, "cluster.pools.0.price_per_gpu_hour"),
    (("cluster", "pools", 0, "preemption_per_hour"), -0.5,
     "cluster.pools.0.preemption_per_hour"),
    (("cluster", "pools", 0, "gpu"), "X100-SXM-1GB", "cluster.pools.0.gpu"),
    (("plan", "tensor_parallel"), 8, "plan.tensor_parallel"),
])
def test_schema_errors_name_the_field(api: Api, example: dict[str, Any], path: tuple[Any, ...],
                                      value: Any, field: str) -> None:
    node: Any = example
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    body = assert_problem(api.post(URL, json=example), 422)
    assert field in fields(body), body


def test_unknown_gpu_lists_known_ones(api: Api, example: dict[str, Any]) -> None:
    example["cluster"]["pools"][1]["gpu"] = "A1000"
    body = assert_problem(api.post(URL, json=example), 422)
    [err] = body["errors"]
    assert err["field"] == "cluster.pools.1.gpu"
    assert "A1000" in err["rule"] and "H100-SXM-80GB" in err["rule"]


def test_unknown_preset(api: Api, example: dict[str, Any]) -> None:
    example["model"] = {"preset": "llama9-1t"}
    body = assert_problem(api.post(URL, json=example), 422)
    [err] = body["errors"]
    assert err["field"] == "model"
    assert "llama9-1t" in err["rule"] and "llama3-70b" in err["rule"]


def test_model_rule_keeps_its_field_path(api: Api, example: dict[str, Any]) -> None:
    """A SpecError raised inside the model's validator reports model.<field>, not model."""
    spec = get_preset("llama3-70b").model_dump(mode="json")
    spec["num_key_value_heads"] = 7
    example["model"] = spec
    body = assert_problem(api.post(URL, json=example), 422)
    assert fields(body) == {"model.num_key_value_heads"}
    assert body["detail"].startswith("model.num_key_value_heads: ")


def test_hf_config_with_missing_fields(api: Api, example: dict[str, Any]) -> None:
    example["model"] = {"hf_config": {"model_type": "llama", "hidden_size": 4096}}
    body = assert_problem(api.post(URL, json=example), 422)
    assert {"model.hf_config.num_hidden_layers", "model.hf_config.vocab_size"} <= fields(body)


def test_hf_config_list_value_is_a_field_error(api: Api, example: dict[str, Any]) -> None:
    """A list where config.json has a number is rejected with that field's path."""
    example["model"] = {"hf_config": {"model_type": "llama", "num_hidden_layers": 2,
                                      "hidden_size": 64, "num_attention_heads": 4,
                                      "intermediate_size": 128, "vocab_size": 100,
                                      "attention_dropout": [0.1]}}
    body = assert_problem(api.post(URL, json=example), 422)
    [err] = body["errors"]
    assert err["field"] == "model.hf_config.attention_dropout"
    assert "single value" in err["rule"]


HF_NEW = Path(__file__).resolve().parents[1] / "costmodel" / "hf_configs"


@pytest.mark.parametrize(("change", "field"), [
    # a Gemma-3 text model with bidirectional attention is not a causal decoder
    ({"text_config": {"use_bidirectional_attention": True}},
     "model.hf_config.text_config.use_bidirectional_attention"),
    # a layer kind meshplan does not cost (Qwen3-Next-style linear attention)
    ({"text_config": {"layer_types": ["linear_attention"] * 48}},
     "model.hf_config.text_config.layer_types"),
    # state-space models
    ({"model_type": "mamba", "text_config": None}, "model.hf_config.model_type"),
])
def test_hf_config_meshplan_cannot_model_is_422_naming_the_field(
        api: Api, example: dict[str, Any], change: dict[str, Any], field: str) -> None:
    """costmodel/specs/hf.py refuses what it cannot model with the config field's path."""
    cfg = json.loads((HF_NEW / "gemma-3-12b.json").read_text())
    for key, value in change.items():
        if value is None:
            del cfg[key]
        elif isinstance(value, dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    example["model"] = {"hf_config": cfg}
    body = assert_problem(api.post(URL, json=example), 422)
    assert fields(body) == {field}


def test_hf_wrapper_config_estimates_its_text_model(api: Api, example: dict[str, Any]) -> None:
    example["model"] = {"hf_config": json.loads((HF_NEW / "gemma-3-12b.json").read_text())}
    resp = api.post(URL, json=example)
    assert resp.status_code == 200, resp.text
    assert any("counted the text model" in w for w in resp.json()["warnings"])


# ---------------------------------------------------------------------------- 422: cross-field
def test_cross_field_rules_reported_together(api: Api, example: dict[str, Any]) -> None:
    example["plan"].update(tp=3, dp=7)
    body = assert_problem(api.post(URL, json=example), 422)
    assert {"plan.tp", "training.global_batch_size"} <= fields(body)
    assert len(body["errors"]) >= 3
    assert body["detail"] == f"{len(body['errors'])} problems with the request; see errors"


@pytest.mark.parametrize(("plan", "field"), [
    ({"pool": "tpu"}, "plan.pool"),
    ({"pool": None}, "plan.pool"),
    ({"dp": 64}, "plan"),  # 8·4·64 = 2048 GPUs > 512 in the pool
    ({"virtual_stages": 1}, "plan.virtual_stages"),  # Interleaved1F1B needs >= 2
    ({"schedule": "custom"}, "plan.custom_schedule"),  # custom needs its per-rank actions
    ({"ep": 2}, "plan.ep"),  # dense model
    # partial recompute: only with full recompute (the example's is selective), and at most
    # the 4 layers of a chunk (80 layers over pp 4 × 5 virtual stages)
    ({"recompute_num_layers": 2}, "plan.recompute_num_layers"),
    ({"recompute": "full", "recompute_num_layers": 5}, "plan.recompute_num_layers"),
])
def test_spec_error_rules(api: Api, example: dict[str, Any], plan: dict[str, Any],
                          field: str) -> None:
    example["plan"].update(plan)
    body = assert_problem(api.post(URL, json=example), 422)
    assert field in fields(body), body


def test_partial_recompute_estimate(api: Api, example: dict[str, Any]) -> None:
    """Checks: recompute_num_layers 2 of the example's 4-layer chunks is accepted and echoed,
    with a peak between full recompute's and no recompute's."""
    peaks = []
    for extra in ({"recompute": "full"}, {"recompute": "full", "recompute_num_layers": 2},
                  {"recompute": "none"}):
        example["plan"].update(extra)
        resp = api.post(URL, json=example)
        assert resp.status_code == 200, resp.text
        assert resp.json()["plan"].get("recompute_num_layers") == extra.get(
            "recompute_num_layers")
        example["plan"].pop("recompute_num_layers", None)
        peaks.append(resp.json()["memory"]["peak_gib"])
    assert peaks[0] < peaks[1] < peaks[2]


def test_sequence_parallel_at_tp_1_is_a_warning(api: Api, example: dict[str, Any]) -> None:
    """Megatron-LM semantics: sequence parallelism with tp 1 is disabled with a warning, not
    refused; the answer also names the stack it assumed and the memory verdict."""
    example["plan"].update({"tp": 1, "sequence_parallel": True, "dp": 16})
    resp = api.post(URL, json=example)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["plan"]["sequence_parallel"] is False
    assert any("sequence_parallel" in w for w in body["warnings"])
    assert "Megatron-Core" in body["stack"]
    assert body["memory"]["fit"] in ("fits", "tight", "does_not_fit")


def test_precision_the_gpu_lacks(api: Api, example: dict[str, Any]) -> None:
    example["cluster"]["pools"][0]["gpu"] = "A100-SXM-80GB"
    example["training"]["precision"] = "fp8"
    body = assert_problem(api.post(URL, json=example), 422)
    assert "training.precision" in fields(body)


# ---------------------------------------------------------------------------- admission limits
def test_huge_global_batch_is_refused_quickly(api: Api, example: dict[str, Any]) -> None:
    example["training"]["global_batch_size"] = 16 * 10**30
    body = assert_problem(api.post(URL, json=example), 422)
    [err] = body["errors"]
    assert err["field"] == "training.global_batch_size"
    assert "MESHPLAN_MAX_SCHEDULE_CELLS" in err["rule"]


def test_schedule_limit_is_a_setting(example: dict[str, Any]) -> None:
    # The example simulates 20 stages × 64 micro-batches = 1280 cells.
    small = Api(create_app(Settings(max_schedule_cells=1279)))
    exact = Api(create_app(Settings(max_schedule_cells=1280)))
    try:
        assert_problem(small.post(URL, json=example), 422)
        assert exact.post(URL, json=example).status_code == 200
    finally:
        small.close()
        exact.close()


def test_layer_limit(example: dict[str, Any]) -> None:
    spec = get_preset("llama3-8b").model_dump(mode="json")
    spec["num_hidden_layers"] = 64
    example["model"] = spec
    api = Api(create_app(Settings(max_layers=63)))
    try:
        body = assert_problem(api.post(URL, json=example), 422)
    finally:
        api.close()
    assert fields(body) == {"model.num_hidden_layers"}


def test_absurd_price_is_rejected_before_it_overflows(api: Api, example: dict[str, Any]) -> None:
    example["cluster"]["pools"][0]["price_per_gpu_hour"] = 1e308  # × 512 GPUs would be inf
    body = assert_problem(api.post(URL, json=example), 422)
    [err] = body["errors"]
    assert err["field"] == "cluster.pools.0.price_per_gpu_hour"


# ---------------------------------------------------------------------------- 400 / 413 / 422 body
def test_malformed_json(api: Api) -> None:
    body = assert_problem(api.post_raw(URL, b'{"model": {"preset": "llama3-70b"},\n "plan": }'),
                          400)
    assert body["type"] == MALFORMED_JSON
    assert body["detail"] == "malformed JSON: Expecting value at line 2, column 10"


def test_undecodable_body(api: Api) -> None:
    body = assert_problem(api.post_raw(URL, b'{"a": "\xff\xfe"}'), 400)
    assert body["type"] == MALFORMED_JSON


def test_json_that_is_not_an_object(api: Api) -> None:
    body = assert_problem(api.post_raw(URL, b"[1, 2]"), 422)
    assert fields(body) == {"body"}


def test_body_without_json_content_type(api: Api, example: dict[str, Any]) -> None:
    body = assert_problem(api.post_raw(URL, json.dumps(example).encode(), "text/plain"), 422)
    assert body["errors"] == [{"field": "body", "rule": "expected a JSON object sent with "
                               "Content-Type: application/json"}]


def test_empty_body(api: Api) -> None:
    body = assert_problem(api.post_raw(URL, b""), 422)
    assert fields(body) == {"body"}


def test_oversized_body_by_content_length(api: Api) -> None:
    huge = b'{"model": "' + b"x" * (1 << 20) + b'"}'
    body = assert_problem(api.post_raw(URL, huge), 413)
    assert body["title"] == "Content Too Large"
    assert str(1 << 20) in body["detail"]


def test_oversized_body_while_reading() -> None:
    """A chunked body (no Content-Length) is cut off once it passes the limit."""
    api = Api(create_app(Settings(max_request_bytes=1000)))

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    try:
        resp = api.request("POST", URL, content=chunks(),
                           headers={"content-type": "application/json"})
    finally:
        api.close()
    assert "content-length" not in {k.lower() for k in resp.request.headers}
    body = assert_problem(resp, 413)
    assert "1000 bytes" in body["detail"]


def test_body_limit_is_a_setting(example: dict[str, Any]) -> None:
    raw = json.dumps(example).encode()
    api = Api(create_app(Settings(max_request_bytes=len(raw))))
    tight = Api(create_app(Settings(max_request_bytes=len(raw) - 1)))
    try:
        assert api.post_raw(URL, raw).status_code == 200
        assert_problem(tight.post_raw(URL, raw), 413)
    finally:
        api.close()
        tight.close()


def test_bad_content_length(api: Api) -> None:
    resp = api.request("POST", URL, content=b"{}",
                       headers={"content-type": "application/json", "content-length": "-5"})
    assert_problem(resp, 400)


# ---------------------------------------------------------------------------- 500
def test_unexpected_error_is_a_generic_500(example: dict[str, Any],
                                           monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    def boom(req: Any) -> Any:
        raise RuntimeError("secret internal state 0xdeadbeef")

    monkeypatch.setattr(costmodel, "estimate", boom)
    api = Api(create_app(), raise_app_exceptions=False)
    try:
        with caplog.at_level(logging.ERROR, logger="meshplan.service"):
            resp = api.post(URL, json=example)
    finally:
        api.close()
    body = assert_problem(resp, 500)
    assert body["type"] == "about:blank" and body["title"] == "Internal Server Error"
    assert "secret" not in resp.text and "RuntimeError" not in resp.text
    assert "secret internal state" in caplog.text  # logged server-side, with the trace
    assert "Traceback" in caplog.text or caplog.records[-1].exc_info


# ---------------------------------------------------------------------------- known cost-model bugs
def test_calibration_missing_archs_is_422(api: Api, example: dict[str, Any]) -> None:
    from importlib import resources

    profile = json.loads(resources.files("costmodel").joinpath(
        "data/profiles/default.json").read_text())
    profile["efficiency"]["archs"] = {}
    example["calibration"] = profile
    resp = api.post(URL, json=example)
    assert_problem(resp, 422)
    assert any(e["field"] == "calibration.efficiency.archs" for e in resp.json()["errors"])


def test_numbers_are_finite(api: Api, example: dict[str, Any]) -> None:
    body = api.post(URL, json=example).json()

    def walk(node: Any) -> None:
        if isinstance(node, float):
            assert math.isfinite(node)
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(body)
