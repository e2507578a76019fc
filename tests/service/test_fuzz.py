"""Property: no body a client can send to ``POST /v1/estimates`` produces a 500 — nor to
``POST /v1/searches``, ``POST /v1/calibrations``, ``POST /v1/plans/{id}/runs``, nor any id or
query string of the ``GET``/``DELETE`` endpoints (at the end of this file).

Every answer is 200 (an estimate with finite numbers) or a problem+json 400 / 413 / 422. Bodies
are random JSON-ish values; mutations of the documented Llama-3-70B example (and of the same
request with an explicit model or a Hugging Face config.json): wrong types, zeros, negatives,
huge numbers (10**30, beyond 2**64), NaN and infinities (JSON extensions that Python's parser
accepts), deleted and extra keys, nested junk; well-typed requests over the whole domain; raw
bytes that are not JSON (or have more digits than Python will parse).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costmodel.profile import default_profile
from costmodel.specs.gpus import catalog
from costmodel.specs.presets import get_preset, preset_names
from service.app import create_app
from service.calibrations.schemas import H100_PROFILE_EXAMPLE
from service.estimates.schemas import LLAMA3_70B_EXAMPLE
from service.runs.schemas import RUN_EXAMPLE
from service.searches.schemas import LLAMA3_70B_SEARCH_EXAMPLE
from service.settings import Settings
from tests.service.support import SMALL_SEARCH, Api, assert_problem

HF_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "hf_configs"
ALLOWED = {200, 400, 413, 422}

WORDS = [
    "", " ", "h100", "a100", "H100", "H100-SXM-80GB", "MI300X", "llama3-70b", "mixtral-8x7b",
    "GPipe", "1F1B", "Interleaved1F1B", "InterleavedZeroBubble", "ZBVZeroBubble", "DualPipeV",
    "custom", "bf16", "fp16", "fp8", "none", "selective", "full", "silu", "gelu", "learned",
    "rope", "layernorm", "split", "flash", "unfused", "adamw", "sgd", "gpt2", "mixtral",
    "deepseek_v3", "qwen2_moe", "1", "1e400", "null", "\x00", "é",
]
KEYS = [
    "model", "training", "cluster", "plan", "calibration", "preset", "hf_config", "pools",
    "name", "gpu", "nodes", "gpus_per_node", "tp", "pp", "dp", "cp", "ep", "pool",
    "virtual_stages", "layers_per_stage", "micro_batch_size", "global_batch_size", "seq_len",
    "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
    "num_local_experts", "num_experts_per_tok", "n_embd", "n_layer", "n_head", "model_type",
    "intermediate_size", "vocab_size", "node_bandwidth_Gbps", "efficiency", "measurements",
    "calibration_id", "objective", "constraints", "top_k", "time_limit_s", "seed", "fixed",
    "max_gpus", "schedules", "measured", "predicted", "environment", "steps", "step_time_s",
    "step_times_s", "provenance", "gemm", "collectives", "format",
]
NUMBERS = [
    0, -1, 1, 2, 3, 4, 5, 7, 8, 16, 64, 80, 1024, 8192, 10**6, 2**31, 2**53 + 1, 2**63,
    2**64 + 1, 10**30, -(10**30), 0.5, -0.5, 1e-300, 5e-324, 1e308, -1e308,
    math.inf, -math.inf, math.nan,
]

leaves = st.one_of(
    st.none(), st.booleans(), st.sampled_from(NUMBERS), st.integers(),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(WORDS),
    st.text(max_size=12),
)
junk = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner,
                        max_size=4),
    ),
    max_leaves=12,
)


def _hf(name: str) -> dict[str, Any]:
    cfg: dict[str, Any] = json.loads((HF_DIR / f"{name}.json").read_text())
    return cfg


def bases() -> list[dict[str, Any]]:
    """Valid requests that mutations start from: preset, explicit fields, HF configs."""
    out = [copy.deepcopy(LLAMA3_70B_EXAMPLE)]
    explicit = copy.deepcopy(LLAMA3_70B_EXAMPLE)
    explicit["model"] = get_preset("llama3-70b").model_dump(mode="json")
    out.append(explicit)
    for name in ("llama3-70b", "mixtral-8x7b", "deepseek-v3", "gpt2"):
        if (HF_DIR / f"{name}.json").exists():
            req = copy.deepcopy(LLAMA3_70B_EXAMPLE)
            req["model"] = {"hf_config": _hf(name)}
            out.append(req)
    return out


BASES = bases()


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside ``node`` (containers and leaves)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((*prefix, k))
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append((*prefix, i))
            out += paths(v, (*prefix, i))
    return out


def mutations(bases: list[dict[str, Any]],
              ops: tuple[str, ...] = ("replace", "replace", "delete", "extra")
              ) -> st.SearchStrategy[Any]:
    """One of ``bases`` with 1-3 of its values replaced by junk, deleted, or given an extra
    sibling (``ops`` weights the choice)."""
    @st.composite
    def strategy(draw: st.DrawFn) -> Any:
        req = copy.deepcopy(draw(st.sampled_from(bases)))
        for _ in range(draw(st.integers(1, 3))):
            candidates = paths(req)
            if not candidates:
                break
            path = draw(st.sampled_from(candidates))
            parent: Any = req
            for key in path[:-1]:
                parent = parent[key]
            op = draw(st.sampled_from(ops))
            last = path[-1]
            if op == "replace":
                parent[last] = draw(junk)
            elif op == "delete":
                del parent[last]
            elif isinstance(parent, dict):
                parent[draw(st.sampled_from(KEYS))] = draw(junk)
            else:
                parent.append(draw(junk))
        return req

    return strategy()


def mutated_requests() -> st.SearchStrategy[Any]:
    return mutations(BASES, ("replace", "replace", "replace", "delete", "extra"))


pow2 = st.sampled_from([1, 2, 4, 8, 16, 32, 64])
plausible_requests = st.fixed_dictionaries({
    "model": st.one_of(
        st.builds(lambda p: {"preset": p}, st.sampled_from(preset_names())),
        st.sampled_from(BASES).map(lambda b: copy.deepcopy(b["model"])),
    ),
    "training": st.fixed_dictionaries(
        {"global_batch_size": st.sampled_from([1, 8, 64, 256, 1024, 4096]),
         "seq_len": st.sampled_from([128, 2048, 4096, 8192, 131072])},
        optional={"precision": st.sampled_from(["bf16", "fp16", "fp8"]),
                  "optimizer": st.sampled_from(["adamw", "adam", "sgd"]),
                  "train_tokens": st.sampled_from([10**9, 15 * 10**12])}),
    "cluster": st.fixed_dictionaries({"pools": st.lists(
        st.fixed_dictionaries(
            {"name": st.just("p"), "gpu": st.sampled_from(sorted(catalog())),
             "gpus_per_node": st.sampled_from([1, 2, 4, 8]),
             "nodes": st.sampled_from([1, 2, 16, 128, 1024])},
            optional={"price_per_gpu_hour": st.sampled_from([0.0, 1.5, 1e6]),
                      "intra_node_GBps": st.sampled_from([1e-3, 50.0, 900.0]),
                      "inter_node_Gbps": st.sampled_from([1e-3, 25.0, 3200.0])}),
        min_size=1, max_size=1)}),
    "plan": st.fixed_dictionaries(
        {"tp": pow2, "pp": pow2, "dp": pow2, "micro_batch_size": st.sampled_from([1, 2, 4]),
         "schedule": st.sampled_from(["GPipe", "1F1B", "Interleaved1F1B",
                                      "InterleavedZeroBubble", "ZBVZeroBubble", "DualPipeV"]),
         "virtual_stages": st.sampled_from([1, 2, 3, 4])},
        optional={"cp": st.sampled_from([1, 2, 4]), "ep": st.sampled_from([1, 2, 8]),
                  "recompute": st.sampled_from(["none", "selective", "full"]),
                  "sequence_parallel": st.booleans(), "zero_stage": st.integers(0, 3),
                  "vocab_placement": st.sampled_from(["end_stages", "split"]),
                  "activation_offload": st.sampled_from([0.0, 0.5, 1.0]),
                  "overlap_grad_reduce": st.booleans(), "overlap_param_gather": st.booleans(),
                  "tp_comm_overlap": st.booleans(),
                  "attention": st.sampled_from(["flash", "unfused"])}),
})
"""Well-typed requests over the whole domain: they reach the cost model's deeper layers."""

top_level = st.fixed_dictionaries(
    {}, optional={k: junk for k in ("model", "training", "cluster", "plan", "calibration")})


@pytest.fixture(scope="module")
def fuzz_api(sqlite_url: str) -> Any:
    # A lower simulation limit than the default keeps each example fast; the limit itself is
    # tested in test_estimates.py.
    client = Api(create_app(Settings(max_schedule_cells=100_000, database_url=sqlite_url)))
    yield client
    client.close()


def check(api: Api, body: Any) -> None:
    raw = json.dumps(body, allow_nan=True).encode()  # NaN/Infinity: Python's parser takes them
    resp = api.post_raw("/v1/estimates", raw)
    assert resp.status_code in ALLOWED, (resp.status_code, resp.text[:2000], raw[:2000])
    if resp.status_code == 200:
        est = resp.json()
        for key in ("step_time_s", "tokens_per_s", "mfu", "cost_per_hour",
                    "cost_per_million_tokens"):
            assert isinstance(est[key], float | int) and math.isfinite(est[key]), (key, est)
        assert isinstance(est["fits"], bool)
    else:
        assert_problem(resp, resp.status_code)


FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FUZZ
@given(body=junk)
def test_random_json_never_500(fuzz_api: Api, body: Any) -> None:
    check(fuzz_api, body)


@FUZZ
@given(body=top_level)
def test_random_sections_never_500(fuzz_api: Api, body: Any) -> None:
    check(fuzz_api, body)


@settings(FUZZ, max_examples=400)
@given(body=mutated_requests())
def test_mutated_example_never_500(fuzz_api: Api, body: Any) -> None:
    check(fuzz_api, body)


@settings(FUZZ, max_examples=200)
@given(body=plausible_requests)
def test_plausible_requests_never_500(fuzz_api: Api, body: Any) -> None:
    check(fuzz_api, body)


@pytest.mark.parametrize("raw", [
    b"", b"{", b"[1,", b"nul", b'{"model": }', b"\xff\xfe\x00", b'{"a": 1e999999}',
    b"9" * 6000, b'"\\ud800"', b"[" * 5000 + b"]" * 5000, b'{"model": {"preset": "\\u0000"}}',
])
def test_raw_bodies_never_500(fuzz_api: Api, raw: bytes) -> None:
    resp = fuzz_api.post_raw("/v1/estimates", raw)
    assert resp.status_code in ALLOWED - {200}, resp.text
    assert_problem(resp, resp.status_code)


# ---------------------------------------------------------------------------- the other endpoints
SEARCH_BASES = [copy.deepcopy(LLAMA3_70B_SEARCH_EXAMPLE), copy.deepcopy(SMALL_SEARCH)]


def post(api: Api, path: str, body: Any, allowed: set[int]) -> None:
    raw = json.dumps(body, allow_nan=True).encode()
    resp = api.post_raw(path, raw)
    assert resp.status_code in allowed, (resp.status_code, resp.text[:2000], raw[:2000])
    if resp.status_code >= 400:
        assert_problem(resp, resp.status_code)


@pytest.fixture(scope="module")
def stored_plan(fuzz_api: Api, sqlite_url: str) -> str:
    """A plan row to post runs to (stored directly: no search needs to run)."""
    import uuid

    from service.db.engine import Database
    from service.db.models import Plan, SearchJob

    db = Database(sqlite_url)
    with db.session() as s:
        job = SearchJob(request={}, request_hash="0" * 64, cost_model_version="fuzz",
                        status="succeeded", attempts=1, cancel_requested=False)
        s.add(job)
        s.flush()
        plan = Plan(id=uuid.uuid4(), search_id=job.id, rank=1, objective="throughput",
                    objective_value=1.0, plan={}, estimate={"step_time_s": 10.0},
                    explanation={}, request={}, cost_model_version="fuzz")
        s.add(plan)
    db.dispose()
    return str(plan.id)


@FUZZ
@given(body=st.one_of(junk, mutations(SEARCH_BASES)))
def test_searches_never_500(fuzz_api: Api, body: Any) -> None:
    post(fuzz_api, "/v1/searches", body, {200, 202, 400, 413, 422})


@FUZZ
@given(body=st.one_of(junk, mutations([copy.deepcopy(H100_PROFILE_EXAMPLE),
                                       default_profile().model_dump(mode="json")])))
def test_calibrations_never_500(fuzz_api: Api, body: Any) -> None:
    post(fuzz_api, "/v1/calibrations", body, {201, 400, 413, 422})


@FUZZ
@given(body=st.one_of(junk, mutations([copy.deepcopy(RUN_EXAMPLE)])))
def test_runs_never_500(fuzz_api: Api, stored_plan: str, body: Any) -> None:
    post(fuzz_api, f"/v1/plans/{stored_plan}/runs", body, {201, 400, 413, 422})


words = st.one_of(st.text(max_size=40), st.sampled_from(
    ["", "0", "-1", "1e999", "nan", "inf", "00000000-0000-0000-0000-000000000000",
     "%00", "..", "H100", "queued", "succeeded"]))


@FUZZ
@given(method=st.sampled_from(["GET", "DELETE", "POST", "PUT"]),
       resource=st.sampled_from(["searches", "plans", "calibrations"]),
       ident=words, suffix=st.sampled_from(["", "/runs", "/x", "/timeline.svg",
                                            "/launch/torchrun", "/launch/megatron",
                                            "/launch/nope"]),
       params=st.dictionaries(st.sampled_from(["wait", "limit", "offset", "status", "gpu",
                                               "file"]),
                              words, max_size=3))
def test_ids_and_queries_never_500(fuzz_api: Api, method: str, resource: str, ident: str,
                                   suffix: str, params: dict[str, str]) -> None:
    from urllib.parse import quote

    if "wait" in params:  # an existing search would be waited for: only refusals here
        params["wait"] = params["wait"] if params["wait"] in ("", "-1", "nan", "inf",
                                                             "1e999") else "61"
    path = f"/v1/{resource}/{quote(ident, safe='')}{suffix}" if ident else f"/v1/{resource}"
    resp = fuzz_api.request(method, path, params=params, json={})
    assert resp.status_code in {200, 201, 202, 400, 404, 405, 409, 422}, (
        resp.status_code, resp.text[:1000], method, path, params)
    if resp.status_code >= 400:
        assert_problem(resp, resp.status_code)


@FUZZ
@given(fmt=st.one_of(words, st.sampled_from(["torchrun", "torchtitan", "megatron", "deepspeed",
                                             "runtime", "schedule-csv"])),
       file=st.one_of(st.none(), words, st.sampled_from(["plan.json", "launch.sh"])))
def test_launch_of_a_stored_plan_never_500(fuzz_api: Api, stored_plan: str, fmt: str,
                                           file: str | None) -> None:
    """Checks: any format and file name on a stored plan is a 200, a 404 (a format path that
    does not route), a 307 to the same path without a trailing slash, a problem+json 422, or a
    409 (this fixture's plan is stored with an empty
    request, as a plan of an incompatible older cost model would be) — never a 500."""
    from urllib.parse import quote

    params = {} if file is None else {"file": file}
    resp = fuzz_api.get(f"/v1/plans/{stored_plan}/launch/{quote(fmt, safe='')}", params=params)
    if resp.status_code == 307:
        # a format ending in '/' (decoded from %2F) is redirected to the path without the
        # trailing slash (Starlette's redirect_slashes), which then answers as below
        assert resp.headers["location"].rstrip("/") != "", resp.headers
        return
    assert resp.status_code in {200, 404, 409, 422}, (resp.status_code, resp.text[:500], fmt,
                                                      file)
    if resp.status_code >= 400:
        assert_problem(resp, resp.status_code)
    timeline = fuzz_api.get(f"/v1/plans/{stored_plan}/timeline.svg")
    assert "does not validate" in assert_problem(timeline, 409)["detail"]
