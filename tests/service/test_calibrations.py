"""``/v1/calibrations`` and their use by estimates and searches (``calibration_id``)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from costmodel.profile import default_profile
from service.calibrations.schemas import H100_PROFILE_EXAMPLE
from service.jobs.worker import Worker
from tests.service.support import SMALL_SEARCH, Api, assert_problem, fields


def profile(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(H100_PROFILE_EXAMPLE)
    body.update(changes)
    return body


def a100_profile() -> dict[str, Any]:
    """A measured-looking A100 profile that halves the default GEMM rate: it must slow the
    A100 plans down, and change nothing on other GPUs."""
    return {"name": "a100-slow", "gpu": None,
            "provenance": {"source": "test: half the default A100 GEMM throughput",
                           "gpu": "A100-80GB"},
            "measurements": {"gemm": [{"m": 8192, "n": 8192, "k": 8192, "dtype": "bf16",
                                       "tflops": 0.5 * 0.76 * 312}]}}


def test_create_get_list(client: Api) -> None:
    resp = client.post("/v1/calibrations", json=H100_PROFILE_EXAMPLE)
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert set(created) == {"id", "name", "gpu", "source", "created"}
    assert created["name"] == "h100-sxm-example" and created["gpu"] == "H100-SXM-80GB"
    one = client.get(f"/v1/calibrations/{created['id']}").json()
    assert one["profile"]["measurements"]["gemm"][0]["tflops"] == 692.0
    other = client.post("/v1/calibrations", json=a100_profile()).json()
    assert other["gpu"] == "A100-SXM-80GB"  # from provenance.gpu, alias resolved
    assert [c["id"] for c in client.get("/v1/calibrations").json()] == [other["id"],
                                                                         created["id"]]
    assert [c["id"] for c in client.get("/v1/calibrations?gpu=H100").json()] == [created["id"]]
    assert [c["id"] for c in client.get("/v1/calibrations?gpu=a100-sxm-80gb").json()] == [
        other["id"]]
    assert client.get("/v1/calibrations?gpu=H200").json() == []
    assert [c["id"] for c in client.get("/v1/calibrations?limit=1&offset=1").json()] == [
        created["id"]]


def test_list_with_an_unknown_gpu_is_422(client: Api) -> None:
    problem = assert_problem(client.get("/v1/calibrations?gpu=Z80"), 422)
    assert fields(problem) == {"gpu"} and "unknown GPU 'Z80'" in problem["detail"]
    assert_problem(client.get("/v1/calibrations?limit=-1"), 422)


@pytest.mark.parametrize("ident", [str(uuid.uuid4()), "x"])
def test_unknown_calibration_is_404(client: Api, ident: str) -> None:
    assert_problem(client.get(f"/v1/calibrations/{ident}"), 404)


@pytest.mark.parametrize(("body", "field"), [
    (profile(gpu=None, provenance={"source": "s"}), "gpu"),
    (profile(gpu=None, provenance={"source": "s", "gpu": "NVIDIA Z80"}), "provenance.gpu"),
    (profile(gpu="Z80"), "gpu"),
    (profile(format="meshplan-calibration/9"), "format"),
    (profile(name=None), "name"),
    (profile(provenance=None), "provenance"),
    (profile(measurements={"gemm": [{"m": 0, "n": 1, "k": 1, "tflops": 1}]}),
     "measurements.gemm.0.m"),
    (profile(efficiency={"archs": {}}), "efficiency.archs"),
    (profile(extra=1), "extra"),
])
def test_invalid_profile_is_422(client: Api, body: dict[str, Any], field: str) -> None:
    problem = assert_problem(client.post("/v1/calibrations", json=body), 422)
    assert any(f == field or f.startswith(field + ".") for f in fields(problem)), problem
    assert client.get("/v1/calibrations").json() == []


def test_default_profile_can_be_stored_for_a_gpu(client: Api) -> None:
    body = default_profile().model_dump(mode="json")
    body.update(name="default-for-h100", gpu="H100")
    assert client.post("/v1/calibrations", json=body).status_code == 201


def test_estimate_with_a_stored_calibration(client: Api, example: dict[str, Any]) -> None:
    """The stored A100 profile slows an A100 plan down and leaves the H100 plan alone."""
    cal = client.post("/v1/calibrations", json=a100_profile()).json()["id"]
    a100 = copy.deepcopy(example)
    a100["plan"]["pool"] = "a100"
    base = client.post("/v1/estimates", json=a100).json()
    slow = client.post("/v1/estimates", json={**a100, "calibration_id": cal})
    assert slow.status_code == 200, slow.text
    assert slow.json()["step_time_s"] > 1.2 * base["step_time_s"]
    h100 = client.post("/v1/estimates", json=example).json()
    assert client.post("/v1/estimates", json={**example, "calibration_id": cal}
                       ).json()["step_time_s"] == h100["step_time_s"]


@pytest.mark.parametrize("endpoint", ["/v1/estimates", "/v1/searches"])
def test_unknown_or_doubled_calibration_is_422(client: Api, example: dict[str, Any],
                                               endpoint: str) -> None:
    body = example if endpoint == "/v1/estimates" else copy.deepcopy(SMALL_SEARCH)
    for cid in (str(uuid.uuid4()), "not-an-id"):
        problem = assert_problem(client.post(endpoint, json={**body, "calibration_id": cid}),
                                 422)
        assert fields(problem) == {"calibration_id"}
    cal = client.post("/v1/calibrations", json=a100_profile()).json()["id"]
    inline = {**a100_profile(), "gpu": "A100"}
    problem = assert_problem(client.post(endpoint, json={**body, "calibration_id": cal,
                                                         "calibration": inline}), 422)
    assert fields(problem) == {"calibration_id"} and "not both" in problem["detail"]


def test_search_with_a_stored_calibration_keeps_it_with_its_plans(client: Api,
                                                                   worker: Worker) -> None:
    cal = client.post("/v1/calibrations", json=a100_profile()).json()["id"]
    plain = client.post("/v1/searches", json=SMALL_SEARCH).json()
    calibrated = client.post("/v1/searches", json={**SMALL_SEARCH, "calibration_id": cal})
    assert calibrated.status_code == 202
    assert calibrated.json()["id"] != plain["id"]  # a different request: its own hash
    assert calibrated.json()["calibration_id"] == cal
    worker.run_until_idle()
    slow = client.get(f"/v1/searches/{calibrated.json()['id']}").json()["result"]["plans"][0]
    fast = client.get(f"/v1/searches/{plain['id']}").json()["result"]["plans"][0]
    assert slow["estimate"]["step_time_s"] > fast["estimate"]["step_time_s"]
    plan = client.get(f"/v1/plans/{slow['id']}").json()
    assert plan["calibration_id"] == cal
    assert plan["request"]["calibration"]["name"] == "a100-slow"
    again = client.post("/v1/estimates", json=plan["request"]).json()
    assert again["step_time_s"] == slow["estimate"]["step_time_s"]
