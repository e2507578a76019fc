"""``GET /v1/gpus[/{name}]`` and ``GET /v1/models[/{name}]``."""

from __future__ import annotations

from typing import Any

import pytest

from costmodel.specs.gpus import catalog
from costmodel.specs.presets import get_preset, preset_names, preset_source
from tests.service.support import Api, assert_problem

CONTRACT_GPUS = {
    "V100-SXM-32GB", "A100-SXM-40GB", "A100-SXM-80GB", "H100-SXM-80GB", "H100-PCIe-80GB",
    "H200-SXM-141GB", "B200-SXM-180GB", "L40S-48GB", "L4-24GB", "A10G-24GB", "RTX4090-24GB",
    "MI250X-128GB", "MI300X-192GB",
}


def test_list_gpus_is_the_catalog(api: Api) -> None:
    resp = api.get("/v1/gpus")
    assert resp.status_code == 200
    gpus = resp.json()
    assert [g["name"] for g in gpus] == list(catalog())
    assert {g["name"] for g in gpus} >= CONTRACT_GPUS
    for g in gpus:
        assert g == catalog()[g["name"]].public()


@pytest.mark.parametrize(("name", "canonical"), [
    ("H100-SXM-80GB", "H100-SXM-80GB"),
    ("H100", "H100-SXM-80GB"),
    ("h100-sxm-80gb", "H100-SXM-80GB"),
    ("A100-80GB", "A100-SXM-80GB"),
])
def test_get_gpu_resolves_aliases(api: Api, name: str, canonical: str) -> None:
    resp = api.get(f"/v1/gpus/{name}")
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == canonical


def test_unknown_gpu_is_404_problem(api: Api) -> None:
    body = assert_problem(api.get("/v1/gpus/X100"), 404)
    assert "X100" in body["detail"] and "H100-SXM-80GB" in body["detail"]
    assert body["instance"] == "/v1/gpus/X100"


def test_list_models(api: Api) -> None:
    resp = api.get("/v1/models")
    assert resp.status_code == 200
    models = {m["name"]: m for m in resp.json()}
    assert list(models) == preset_names()
    llama = models["llama3-70b"]
    spec = get_preset("llama3-70b")
    assert llama["num_params"] == spec.num_params()
    assert llama["num_active_params"] == spec.num_active_params()
    assert llama["source"] == preset_source("llama3-70b")
    assert llama["dims"] == spec.model_dump(mode="json")
    mixtral = models["mixtral-8x7b"]
    assert mixtral["num_active_params"] < mixtral["num_params"]


def test_get_model_case_insensitive(api: Api) -> None:
    resp = api.get("/v1/models/LLaMA3-8B")
    assert resp.status_code == 200
    assert resp.json()["name"] == "llama3-8b"


def test_unknown_model_is_404_problem(api: Api) -> None:
    body = assert_problem(api.get("/v1/models/gpt-5"), 404)
    assert "gpt-5" in body["detail"] and "llama3-70b" in body["detail"]


def test_model_dims_are_a_valid_explicit_model(api: Api, example: dict[str, Any]) -> None:
    dims = api.get("/v1/models/llama3-70b").json()["dims"]
    preset = api.post("/v1/estimates", json=example).json()
    example["model"] = dims
    explicit = api.post("/v1/estimates", json=example)
    assert explicit.status_code == 200, explicit.text
    assert explicit.json()["step_time_s"] == pytest.approx(preset["step_time_s"])
