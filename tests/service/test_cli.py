"""The ``meshplan`` CLI: in-process (``service.cli.main``) and as ``python -m service``.

Exit codes: 0 ok, 2 invalid input, 3 the plan does not fit, 1 server unreachable.
"""

from __future__ import annotations

import copy
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from costmodel.results import Estimate
from costmodel.specs.gpus import catalog
from costmodel.specs.presets import preset_names
from service.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "llama3-70b-h100.json"


def run_module(*args: str, stdin: str | None = None, timeout: float = 120
               ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=ROOT, env=env,
                          input=stdin, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def request_file(tmp_path: Path, example: dict[str, Any]) -> Path:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(example))
    return path


@pytest.fixture
def not_fitting(tmp_path: Path, example: dict[str, Any]) -> Path:
    example = copy.deepcopy(example)
    example["plan"] = {"pool": "h100", "tp": 1, "pp": 1, "dp": 16, "schedule": "1F1B"}
    path = tmp_path / "too-big.json"
    path.write_text(json.dumps(example))
    return path


@pytest.fixture
def invalid(tmp_path: Path, example: dict[str, Any]) -> Path:
    example = copy.deepcopy(example)
    example["plan"]["tp"] = 3
    example["cluster"]["pools"][1]["gpu"] = "A1000"
    path = tmp_path / "invalid.json"
    path.write_text(json.dumps(example))
    return path


# ---------------------------------------------------------------------------- estimate, in-process
def test_estimate_human_output(request_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(request_file)]) == 0
    out = capsys.readouterr().out
    for label in ("step time", "tokens/s", "MFU", "fits in memory", "cost",
                  "peak memory per pipeline rank"):
        assert label in out, out
    assert "512 × H100-SXM-80GB (pool h100)" in out
    assert "per million tokens" in out
    assert out.count("\n  rank ") == 4


def test_estimate_json(request_file: Path, example: dict[str, Any],
                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(request_file), "--json"]) == 0
    est = Estimate.model_validate_json(capsys.readouterr().out)
    assert est.fits and est.num_gpus == 512


def test_estimate_from_stdin(example: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(example)))
    assert main(["estimate", "-", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fits"] is True


def test_invalid_input_exits_2_with_every_field(invalid: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(invalid)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "cluster.pools.1.gpu: unknown GPU 'A1000'" in captured.err


def test_cross_field_errors_exit_2(request_file: Path, example: dict[str, Any],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    example["plan"]["tp"] = 3
    request_file.write_text(json.dumps(example))
    assert main(["estimate", str(request_file)]) == 2
    err = capsys.readouterr().err
    assert "  plan.tp: num_attention_heads=64 must be divisible by tp=3" in err
    assert err.startswith("meshplan: invalid input (")


def test_model_rule_keeps_field_path(request_file: Path, example: dict[str, Any],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    example["model"] = {"name": "m", "num_hidden_layers": 2, "hidden_size": 64,
                        "num_attention_heads": 8, "num_key_value_heads": 3,
                        "intermediate_size": 128, "vocab_size": 100}
    request_file.write_text(json.dumps(example))
    assert main(["estimate", str(request_file)]) == 2
    assert "model.num_key_value_heads: num_attention_heads=8 must be divisible" in (
        capsys.readouterr().err)


def test_malformed_json_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"model": \n  }')
    assert main(["estimate", str(path)]) == 2
    assert f"{path}: malformed JSON: Expecting value at line 2, column 3" in (
        capsys.readouterr().err)


def test_not_an_object_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "list.json"
    path.write_text("[]")
    assert main(["estimate", str(path)]) == 2
    assert "body: must be a JSON object" in capsys.readouterr().err


def test_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(tmp_path / "missing.json")]) == 2
    assert "cannot read" in capsys.readouterr().err
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\xfa")
    assert main(["estimate", str(binary)]) == 2


def test_plan_that_does_not_fit_exits_3(not_fitting: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(not_fitting)]) == 3
    captured = capsys.readouterr()
    assert "NO" in captured.out
    assert "does not fit" in captured.err
    assert "pipeline rank 0 needs" in captured.err and "optimizer" in captured.err


def test_not_fitting_json_still_prints_the_estimate(not_fitting: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(not_fitting), "--json"]) == 3
    captured = capsys.readouterr()
    assert json.loads(captured.out)["fits"] is False
    assert "does not fit" in captured.err


# ---------------------------------------------------------------------------- catalog commands
def test_gpus(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gpus"]) == 0
    out = capsys.readouterr().out
    for name in catalog():
        assert name in out
    assert main(["gpus", "--json"]) == 0
    assert [g["name"] for g in json.loads(capsys.readouterr().out)] == list(catalog())


def test_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "llama3-70b" in out and "70.6B" in out
    assert main(["models", "--json"]) == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)] == preset_names()


def test_launch_renders_a_request_file(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Checks: `meshplan launch FILE -f F` prints the emitter's main file in-process, --json
    the whole config, --out DIR writes every file; a stored plan's JSON works as well."""
    from runtime.launch import render

    body = json.loads(EXAMPLE.read_text())
    expected = render("torchtitan", body)
    assert main(["launch", str(EXAMPLE), "-f", "torchtitan"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == expected.content.rstrip("\n")
    stored = tmp_path / "stored.json"
    stored.write_text(json.dumps({"id": "x", "request": body}))
    assert main(["launch", str(stored), "--format", "torchtitan", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == expected.model_dump(mode="json")
    out = tmp_path / "cfg"
    assert main(["launch", str(EXAMPLE), "-f", "torchtitan", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([expected.filename, *expected.files])


def test_launch_refusal_is_exit_2_with_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    """Checks: a plan the framework cannot run exits 2 and names the plan field and rule."""
    body = json.loads(EXAMPLE.read_text())
    body["plan"]["zero_stage"] = 3
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(body, fh)
    assert main(["launch", fh.name, "-f", "megatron"]) == 2
    assert "plan.zero_stage:" in capsys.readouterr().err


def test_launch_framework_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Checks: --framework-version picks the torchtitan release (0.2 writes the TOML); an
    unknown one exits 2 naming training.framework_version and the supported releases."""
    from runtime.launch import render

    body = json.loads(EXAMPLE.read_text())
    out = tmp_path / "cfg"
    assert main(["launch", str(EXAMPLE), "-f", "torchtitan", "--framework-version", "0.2",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [(cfg := render("torchtitan", body, version="0.2")).filename, *cfg.files])
    assert "meshplan_torchtitan.toml" in cfg.files
    assert main(["launch", str(EXAMPLE), "-f", "torchtitan", "--framework-version",
                 "0.1"]) == 2
    err = capsys.readouterr().err
    assert "training.framework_version" in err and "0.3" in err and "0.2" in err


def test_no_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


# ---------------------------------------------------------------------------- python -m service
def test_module_estimate_json(request_file: Path) -> None:
    proc = run_module("estimate", str(request_file), "--json")
    assert proc.returncode == 0, proc.stderr
    assert Estimate.model_validate_json(proc.stdout).fits


def test_module_exit_codes(request_file: Path, invalid: Path, not_fitting: Path) -> None:
    assert run_module("estimate", str(invalid)).returncode == 2
    assert run_module("estimate", str(not_fitting)).returncode == 3
    proc = run_module("estimate", "-", stdin="{not json")
    assert proc.returncode == 2 and "stdin: malformed JSON" in proc.stderr
    assert run_module("--version").stdout.startswith("meshplan ")


# ---------------------------------------------------------------------------- serve + --server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ready(url: str, proc: subprocess.Popen[Any], timeout: float) -> bool:
    """Whether the server at ``url`` answers /readyz with 200 before ``timeout`` seconds
    pass, while ``proc`` runs."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m service serve`` on a free port, for the --server tests."""
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    # the embedded mode: a SQLite file in MESHPLAN_DATA_DIR (a temporary directory, see
    # conftest), migrated on start, and one embedded worker process
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHPLAN_LOG_LEVEL": "warning",
           "MESHPLAN_WORKERS": "1", "MESHPLAN_POLL_S": "0.1"}
    env.pop("MESHPLAN_DATABASE_URL", None)
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port",
             str(port)], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        if not _ready(url, proc, 30):
            pytest.fail(f"server did not start:\n{log.read_text()}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_server_answers_like_in_process(server: str, request_file: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(request_file), "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main(["estimate", str(request_file), "--json", "--server", server]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote == local


def test_server_invalid_input_exits_2(server: str, invalid: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(invalid), "--server", server]) == 2
    assert "cluster.pools.1.gpu: unknown GPU 'A1000'" in capsys.readouterr().err


def test_server_not_fitting_exits_3(server: str, not_fitting: Path) -> None:
    proc = run_module("estimate", str(not_fitting), "--server", server)
    assert proc.returncode == 3, proc.stderr
    assert "does not fit" in proc.stderr


def test_server_serves_docs_and_metrics(server: str) -> None:
    assert httpx.get(f"{server}/docs").status_code == 200
    assert httpx.get(f"{server}/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert "meshplan_http_requests_total" in httpx.get(f"{server}/metrics").text


def test_server_body_limit_over_a_real_socket(server: str) -> None:
    resp = httpx.post(f"{server}/v1/estimates", content=b"{" + b" " * (2 << 20) + b"}",
                      headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert resp.headers["content-type"] == "application/problem+json"


def test_unreachable_server_exits_1(request_file: Path, capsys: pytest.CaptureFixture[str]
                                    ) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    assert main(["estimate", str(request_file), "--server", url, "--timeout", "5"]) == 1
    assert "cannot reach" in capsys.readouterr().err


SMALL_SEARCH = {"model": {"preset": "llama3-8b"},
                "training": {"global_batch_size": 64, "seq_len": 4096},
                "cluster": {"pools": [{"name": "h100", "gpu": "H100", "nodes": 2,
                                       "price_per_gpu_hour": 2.0}]},
                "top_k": 2, "time_limit_s": 20}
"""Llama-3-8B on 16 H100: a search of about a second."""


def test_plan_finds_plans_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "search.json"
    path.write_text(json.dumps(SMALL_SEARCH))
    assert main(["plan", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["optimality"]["status"] == "optimal"
    assert len(result["plans"]) == 2
    assert result["plans"][0]["estimate"]["fits"] is True


def test_plan_nothing_fits_exits_3_with_the_reason(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    req = {**SMALL_SEARCH, "model": {"preset": "llama3-405b"},
           "cluster": {"pools": [{"name": "l4", "gpu": "L4", "nodes": 1}]}}
    path = tmp_path / "search.json"
    path.write_text(json.dumps(req))
    assert main(["plan", str(path)]) == 3
    err = capsys.readouterr().err
    assert "needs at least" in err and "GiB" in err


def test_plan_invalid_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    req = {**SMALL_SEARCH, "objective": "cost_to_train"}
    path = tmp_path / "search.json"
    path.write_text(json.dumps(req))
    assert main(["plan", str(path)]) == 2
    assert "training.train_tokens" in capsys.readouterr().err


def _two_pool_search(a100: str) -> dict[str, Any]:
    """SMALL_SEARCH by cost on 16 H100 and 8 A100 (the second pool named ``a100``)."""
    return {**SMALL_SEARCH, "objective": "cost",
            "cluster": {"pools": [
                {"name": "h100", "gpu": "H100", "nodes": 2, "price_per_gpu_hour": 2.0},
                {"name": a100, "gpu": "A100-SXM-80GB", "nodes": 1,
                 "price_per_gpu_hour": 1.2}]}}


def test_plan_table_shows_each_pools_best_and_the_variants(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With several pools the table ends with the best plan of every pool and what it gives
    against the winner (issue 12: 'the user never sees what the A100 pool would give'), and a
    plan with simulated variants of its layout lists them; both as in --json."""
    req = _two_pool_search("a100")
    path = tmp_path / "search.json"
    path.write_text(json.dumps(req))
    assert main(["plan", str(path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert main(["plan", str(path)]) == 0
    table = capsys.readouterr().out
    assert {pb["pool"] for pb in result["best_per_pool"]} == {"h100", "a100"}
    section = table.split("best per pool:\n", 1)[1]
    for pb in result["best_per_pool"]:
        assert f"  {pb['pool']}: tp={pb['plan']['tp']} " in section
        assert f"({pb['gpu']})" in section and pb["vs_winner"] in section
        assert f"${pb['cost_per_million_tokens']:.4f}/M tokens" in section
    assert "the winner" in section and "of the winner's tokens/s" in section
    with_variants = [p for p in result["plans"] if p["variants"]]
    assert with_variants, "no plan with variants: the test no longer covers them"
    assert table.count("    variants: ") == len(with_variants)
    first = with_variants[0]["variants"][0]
    assert f"${first['objective_value']:.4f}/M tokens" in table


def test_saved_plans_are_requests_that_estimate_launch_and_what_if_take(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`meshplan plan FILE --save-plans DIR` writes each found plan as the estimate request
    that reproduces it (the search's batch size where it chose one): estimating the file gives
    the plan's own figures, and launch and what-if take it; stdout stays the result alone."""
    import costmodel

    req = {**SMALL_SEARCH, "training": {**SMALL_SEARCH["training"], "framework": "deepspeed",
                                        "global_batch_sizes": [32, 64]}}
    path = tmp_path / "search.json"
    path.write_text(json.dumps(req))
    out = tmp_path / "plans"
    assert main(["plan", str(path), "--json", "--save-plans", str(out)]) == 0
    io_ = capsys.readouterr()
    result = json.loads(io_.out)
    assert sorted(p.name for p in out.iterdir()) == [
        f"plan-{p['rank']}.json" for p in result["plans"]]
    assert f"launch --format deepspeed {out / 'plan-1.json'}" in io_.err
    for p in result["plans"]:
        saved = json.loads((out / f"plan-{p['rank']}.json").read_text())
        assert saved["plan"] == p["plan"]
        assert saved["training"]["global_batch_size"] == p["global_batch_size"]
        assert saved["training"]["global_batch_sizes"] is None
        est = costmodel.estimate(saved)
        assert est.step_time_s == p["estimate"]["step_time_s"]
        assert est.memory.peak_gib == p["estimate"]["memory"]["peak_gib"]
    first = str(out / "plan-1.json")
    assert main(["launch", "-f", "deepspeed", first, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "deepspeed"
    scenario = tmp_path / "slow.json"
    scenario.write_text(json.dumps({"ranks": {"0": 1.5}}))
    assert main(["what-if", first, str(scenario), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["baseline"]["step_time_s"] == (
        result["plans"][0]["estimate"]["step_time_s"])


def test_saved_plans_include_each_pools_best(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With several pools, `--save-plans` also writes each pool's best plan as
    best-POOL.json, which estimates to the figures best_per_pool reports for it."""
    import costmodel

    req = _two_pool_search("a100 (spot)")
    path = tmp_path / "search.json"
    path.write_text(json.dumps(req))
    out = tmp_path / "plans"
    assert main(["plan", str(path), "--json", "--save-plans", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    files = {"h100": out / "best-h100.json", "a100 (spot)": out / "best-a100_spot_.json"}
    assert {pb["pool"] for pb in result["best_per_pool"]} == set(files)
    for pb in result["best_per_pool"]:
        est = costmodel.estimate(json.loads(files[pb["pool"]].read_text()))
        assert est.plan.pool == pb["pool"]
        assert est.tokens_per_s == pytest.approx(pb["tokens_per_s"], rel=1e-12)
        assert est.cost_per_million_tokens == pytest.approx(pb["cost_per_million_tokens"],
                                                            rel=1e-12)


def test_a_search_result_given_as_a_plan_says_how_to_get_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`meshplan launch -f F result.json` on `plan --json`'s output: it has no model or
    cluster, so exit 2 with what to run instead, not ten missing and extra fields."""
    path = tmp_path / "search.json"
    path.write_text(json.dumps(SMALL_SEARCH))
    assert main(["plan", str(path), "--json"]) == 0
    result = tmp_path / "result.json"
    result.write_text(capsys.readouterr().out)
    scenario = tmp_path / "slow.json"
    scenario.write_text(json.dumps({"ranks": {"0": 1.5}}))
    for argv in (["launch", "-f", "torchrun", str(result)],
                 ["what-if", str(result), str(scenario)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "is a search result" in err and "--save-plans DIR" in err
        assert "Extra inputs" not in err


class _ClosedPipe(io.StringIO):
    def write(self, s: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_closed_pipe_is_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`meshplan plan FILE | head -1`: when the reader closes the pipe, the command stops
    quietly with 141 (128 + SIGPIPE, as Unix tools do) instead of printing a traceback."""
    path = tmp_path / "search.json"
    path.write_text(json.dumps(SMALL_SEARCH))
    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["plan", str(path)]) == 141
    assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------------------- plan --server
@pytest.fixture
def search_file(tmp_path: Path) -> Path:
    path = tmp_path / "search.json"
    path.write_text(json.dumps(SMALL_SEARCH))
    return path


def test_plan_on_the_server_answers_like_in_process(server: str, search_file: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The embedded worker of `meshplan serve` runs it; same plans as in-process, with the ids
    of the stored plans."""
    assert main(["plan", str(search_file), "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main(["plan", str(search_file), "--json", "--server", server]) == 0
    remote = json.loads(capsys.readouterr().out)
    ids = [p.pop("id") for p in remote["plans"]]
    assert all(httpx.get(f"{server}/v1/plans/{i}").status_code == 200 for i in ids)
    for key in ("plans", "pareto", "optimality", "infeasible_reason"):
        assert remote[key] == local[key], key
    assert main(["plan", str(search_file), "--server", server]) == 0
    out = capsys.readouterr().out
    assert out.startswith("search ") and f"[plan {ids[0]}]" in out


def test_plan_on_the_server_exit_codes(server: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({**SMALL_SEARCH, "objective": "cost_to_train"}))
    assert main(["plan", str(invalid), "--server", server]) == 2
    assert "training.train_tokens" in capsys.readouterr().err
    over = tmp_path / "over.json"
    over.write_text(json.dumps({**SMALL_SEARCH, "time_limit_s": 500}))
    assert main(["plan", str(over), "--server", server]) == 2
    assert "time_limit_s: time_limit_s=500 exceeds this server's limit" in (
        capsys.readouterr().err)
    nothing = tmp_path / "nothing.json"
    nothing.write_text(json.dumps({**SMALL_SEARCH, "model": {"preset": "llama3-405b"},
                                   "cluster": {"pools": [{"name": "l4", "gpu": "L4",
                                                          "nodes": 1}]}}))
    proc = run_module("plan", str(nothing), "--server", server)
    assert proc.returncode == 3, proc.stderr
    assert "no feasible plan" in proc.stderr and "needs at least" in proc.stderr
    url = f"http://127.0.0.1:{_free_port()}"
    assert main(["plan", str(nothing), "--server", url, "--timeout", "5"]) == 1
    assert "cannot reach" in capsys.readouterr().err


def test_fail_if_gates(search_file: Path, request_file: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    """CI gates: exit 4 when a condition holds for the best plan, 0 when none does."""
    assert main(["plan", str(search_file), "--json"]) == 0
    best = json.loads(capsys.readouterr().out)["plans"][0]
    mfu = best["estimate"]["mfu"]
    assert main(["plan", str(search_file), "--fail-if", f"mfu<{mfu / 2}",
                 "--fail-if", "cost_per_million_tokens>1000"]) == 0
    capsys.readouterr()
    assert main(["plan", str(search_file), "--fail-if", f"mfu<{mfu * 2}",
                 "--fail-if", "memory.peak_gib>=0"]) == 4
    err = capsys.readouterr().err
    assert f"--fail-if mfu<{mfu * 2:g}: mfu = " in err
    assert "--fail-if memory.peak_gib>=0: memory.peak_gib = " in err
    assert main(["plan", str(search_file), "--fail-if", "objective_value>1"]) == 4
    capsys.readouterr()
    assert main(["estimate", str(request_file), "--fail-if", "mfu < 0.99"]) == 4
    assert "--fail-if mfu<0.99: mfu = 0.4" in capsys.readouterr().err
    assert main(["estimate", str(request_file), "--fail-if", "step_time_s>1e6"]) == 0


@pytest.mark.parametrize("cond", ["mfu", "mfu<<0.3", "mfu<abc", "speed>1", "memory.per_stage>1",
                                  "plan.schedule>1", "warnings>0", ""])
def test_bad_fail_if_exits_2_before_running(search_file: Path, cond: str,
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import solver

    monkeypatch.setattr(solver, "search", lambda *a, **k: pytest.fail("search ran"))
    assert main(["plan", str(search_file), "--fail-if", cond]) == 2
    assert "--fail-if" in capsys.readouterr().err


def test_calibration_id_needs_a_server(search_file: Path, request_file: Path,
                                       example: dict[str, Any],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    search_file.write_text(json.dumps({**SMALL_SEARCH, "calibration_id": "abc"}))
    assert main(["plan", str(search_file)]) == 2
    assert "calibration_id: stored calibrations need a server" in capsys.readouterr().err
    request_file.write_text(json.dumps({**example, "calibration_id": "abc"}))
    assert main(["estimate", str(request_file)]) == 2
    assert "calibration_id: stored calibrations need a server" in capsys.readouterr().err


def test_server_launch_of_a_stored_plan(server: str, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    """Checks: `meshplan launch ID -f F --server URL` prints what the server renders for the
    stored plan, the same as rendering its stored request in-process."""
    from runtime.launch import render
    from tests.service.support import SMALL_SEARCH

    search = httpx.post(f"{server}/v1/searches", params={"wait": 60}, json=SMALL_SEARCH,
                        timeout=90).json()
    assert search["status"] == "succeeded", search
    plan_id = search["result"]["plans"][0]["id"]
    stored = httpx.get(f"{server}/v1/plans/{plan_id}").json()
    assert main(["launch", plan_id, "-f", "runtime", "--server", server, "--json"]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert remote == render("runtime", stored["request"]).model_dump(mode="json")
    assert main(["launch", "no-such-plan", "-f", "runtime", "--server", server]) == 1
    assert "404" in capsys.readouterr().err


def test_save_plans_from_the_server_writes_the_stored_requests(
        server: str, search_file: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """With --server, `--save-plans` writes the request the server stored with each plan
    (``GET /v1/plans/{id}``), which is what in-process saving writes for the same search."""
    remote, local = tmp_path / "remote", tmp_path / "local"
    assert main(["plan", str(search_file), "--json", "--server", server,
                 "--save-plans", str(remote)]) == 0
    ids = [p["id"] for p in json.loads(capsys.readouterr().out)["plans"]]
    assert main(["plan", str(search_file), "--save-plans", str(local)]) == 0
    capsys.readouterr()
    for rank, plan_id in enumerate(ids, start=1):
        saved = json.loads((remote / f"plan-{rank}.json").read_text())
        assert saved == httpx.get(f"{server}/v1/plans/{plan_id}").json()["request"]
        assert saved == json.loads((local / f"plan-{rank}.json").read_text())


def test_serve_with_several_api_processes(tmp_path: Path, request_file: Path) -> None:
    """Checks: `meshplan serve --http-workers 2` (uvicorn's process manager, each process
    building its app from the environment) answers readiness and estimates, and stops on
    SIGTERM."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MESHPLAN_LOG_LEVEL": "warning",
           "MESHPLAN_DATA_DIR": str(tmp_path)}
    env.pop("MESHPLAN_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--port", str(port), "--http-workers", "2",
         "--workers", "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        assert _ready(url, proc, 60), "server did not start"
        body = json.loads(request_file.read_text())
        answers = [httpx.post(f"{url}/v1/estimates", json=body, timeout=30) for _ in range(4)]
        assert all(a.status_code == 200 for a in answers)
        assert len({a.json()["step_time_s"] for a in answers}) == 1
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
