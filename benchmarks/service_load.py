"""Load on the running service over loopback: requests/s and p50/p99 latency of
``POST /v1/estimates`` and ``GET /v1/plans/{id}`` at 32 concurrent clients, on SQLite and on
PostgreSQL.

The load generator is ``wrk`` (Debian's package ``wrk``: ``apt-get install wrk``), a closed loop
of N connections, each sending its next request when the previous answer arrived; latency is
wrk's own per-request measurement. This script installs nothing; it starts the service itself:

* ``meshplan serve --http-workers N`` (``--server-workers N``, default 2: one API process
  per core of the 2-core machine) with its embedded search worker, at log level warning (no
  access log);
* against (a) a fresh SQLite file and (b) a fresh PostgreSQL database ``meshplan_bench_<pid>``
  that it creates on ``--pg`` (default 127.0.0.1:5432, user postgres) and drops afterwards;
  where the build has ``meshplan db upgrade`` it migrates the database first;
* waits for ``/readyz``; creates a plan to read with ``POST /v1/searches?wait=60`` (a small
  Llama-3-8B search) and reads ``result.plans[0].id``; where the build has no searches the plan
  row says so instead of a figure;
* warms each endpoint up with ``--warmup`` seconds of the same load, then measures
  ``--duration`` seconds.

Targets (the issue's, on the 2-core development machine): p99 ≤ 150 ms for an estimate and
≤ 50 ms for a plan read, with no errors (non-2xx answers and socket errors). Only measured
figures are printed. The machine is shared, so figures are noisy: the load average before each
run is printed with it.

``--profile DIR`` samples the server with py-spy (``pip install py-spy``) during each measured
run and prints where its time went (collapsed stacks are kept in DIR).

    .venv/bin/python benchmarks/service_load.py                  # both backends, 15 s each
    .venv/bin/python benchmarks/service_load.py --server-workers 2 --duration 30
    .venv/bin/python benchmarks/service_load.py --backends sqlite --profile artifacts/profile
    .venv/bin/python benchmarks/service_load.py --adversarial --duration 20

``--adversarial``: four estimates at the schedule-cells limit in flight and a stream of cheap
estimates, the cheap ones' p50/p99 (target p99 ≤ 250 ms), this code against the same server
with every estimate in-process, in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.estimates.schemas import LLAMA3_70B_EXAMPLE  # noqa: E402

TARGET_P99_MS = {"POST /v1/estimates": 150.0, "GET /v1/plans/{id}": 50.0}
"""The issue's latency targets at 32 clients on the 2-core machine."""

SEARCH_FOR_A_PLAN: dict[str, Any] = {
    "model": {"preset": "llama3-8b"},
    "training": {"global_batch_size": 256, "seq_len": 4096, "precision": "bf16"},
    "cluster": {"pools": [{"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                           "nodes": 4, "price_per_gpu_hour": 2.49}]},
    "objective": "throughput",
    "top_k": 1,
    "time_limit_s": 30,
}
"""A small search (Llama-3-8B on 32 H100s, about a second in-process) whose best plan is read."""

STATS_LUA = r"""
-- Counts answers outside 2xx per thread (wrk itself counts only status > 399) and prints one
-- JSON line with the totals and latency percentiles (microseconds) when the run ends.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0 end
function response(status, headers, body)
  if status < 200 or status > 299 then non2xx = non2xx + 1 end
end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non2xx") end
  local e = summary.errors
  io.write(string.format(
    'MESHPLAN_WRK {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, ' ..
    '"read": %d, "write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"mean_us": %.1f}\n',
    summary.requests, summary.duration, bad, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, latency.mean))
end
"""


@dataclass
class Row:
    backend: str
    endpoint: str
    requests_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    max_ms: float | None = None
    requests: int | None = None
    errors: int | None = None
    server_cpu_ms: float | None = None
    error_detail: dict[str, int] = field(default_factory=dict)
    load_before: float | None = None
    note: str = ""

    @property
    def target_ms(self) -> float:
        return TARGET_P99_MS[self.endpoint]

    @property
    def verdict(self) -> str:
        if self.p99_ms is None:
            return "-"
        return "PASS" if self.p99_ms <= self.target_ms and self.errors == 0 else "FAIL"


class Unavailable(Exception):
    """A row that cannot be measured in this build or on this machine (the reason)."""


# ---------------------------------------------------------------------------- helpers
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
          timeout: float = 120) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _meshplan_has(command: str) -> bool:
    """Whether this build's ``meshplan`` has a subcommand ``command``."""
    out = subprocess.run([sys.executable, "-m", "service", "--help"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    return re.search(rf"^\s+{re.escape(command)}\s", out.stdout, re.MULTILINE) is not None


# ---------------------------------------------------------------------------- databases
@contextlib.contextmanager
def sqlite_database(tmp: Path) -> Iterator[str]:
    yield f"sqlite:///{tmp / 'bench.db'}"


@contextlib.contextmanager
def postgres_database(admin: str) -> Iterator[str]:
    """A fresh database ``meshplan_bench_<pid>`` on the server ``admin`` names (a libpq
    conninfo), dropped afterwards; yields its SQLAlchemy URL."""
    try:
        import psycopg
    except ImportError as exc:
        raise Unavailable("psycopg is not installed (pip install -e '.[postgres]')") from exc
    name = f"meshplan_bench_{os.getpid()}"
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise Unavailable(f"PostgreSQL not reachable ({admin}): {exc}".strip()) from exc
    with conn:
        info = conn.info
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
        user = info.user
        auth = f"{user}:{info.password}@" if info.password else f"{user}@"
        try:
            yield f"postgresql+psycopg://{auth}{info.host}:{info.port}/{name}"
        finally:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------------------- the server
@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    command: list[str]


@contextlib.contextmanager
def running_server(database_url: str, workers: int, tmp: Path,
                   extra_env: dict[str, str] | None = None) -> Iterator[Server]:
    port = _free_port()
    env = {**os.environ, "MESHPLAN_DATABASE_URL": database_url, "MESHPLAN_LOG_LEVEL": "warning",
           "PYTHONPATH": str(ROOT), **(extra_env or {})}
    command = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning", "--http-workers", str(workers)]
    log = tmp / f"server-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, cwd=tmp, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", proc, log, command)
    try:
        _wait_ready(server, time.monotonic() + 180)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_ready(server: Server, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode}:\n"
                               + server.log.read_text(errors="replace")[-4000:])
        with contextlib.suppress(OSError):
            if _http("GET", server.url + "/readyz", timeout=5)[0] == 200:
                return
        time.sleep(0.25)
    raise RuntimeError("the server was not ready in time:\n"
                       + server.log.read_text(errors="replace")[-4000:])


def create_plan(server: Server, headers: dict[str, str]) -> str:
    """The id of the best plan of a small search; :class:`Unavailable` without searches."""
    status, body = _http("POST", server.url + "/v1/searches?wait=60", SEARCH_FOR_A_PLAN,
                         headers)
    if status in (404, 405):
        raise Unavailable("endpoint not available in this build")
    if status not in (200, 201, 202) or not isinstance(body, dict) or "id" not in body:
        raise RuntimeError(f"POST /v1/searches answered {status}: {body}")
    deadline = time.monotonic() + 180
    while not (body.get("result") or {}).get("plans"):
        if body.get("status") in ("failed", "cancelled", "canceled", "error", "infeasible"):
            raise RuntimeError(f"the search ended {body.get('status')}: {body}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the search did not finish in time: {body}")
        time.sleep(0.5)
        status, body = _http("GET", f"{server.url}/v1/searches/{body['id']}", None, headers)
        if status != 200:
            raise RuntimeError(f"GET /v1/searches/{{id}} answered {status}: {body}")
    plan_id = str(body["result"]["plans"][0]["id"])
    status, plan = _http("GET", f"{server.url}/v1/plans/{plan_id}", None, headers)
    if status != 200:
        raise RuntimeError(f"GET /v1/plans/{plan_id} answered {status}: {plan}")
    return plan_id


# ---------------------------------------------------------------------------- wrk
def lua_script(tmp: Path, name: str, method: str, body: Any) -> Path:
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        text = json.dumps(body, separators=(",", ":"))
        assert "]==]" not in text
        lines += [f"wrk.body = [==[{text}]==]",
                  'wrk.headers["Content-Type"] = "application/json"']
    path = tmp / f"{name}.lua"
    path.write_text("\n".join(lines) + "\n" + STATS_LUA)
    return path


def run_wrk(url: str, script: Path, *, connections: int, threads: int, seconds: float,
            headers: Sequence[str]) -> dict[str, Any]:
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
               "--timeout", "60s", "-s", str(script)]
    for h in headers:
        command += ["-H", h]
    out = subprocess.run([*command, url], capture_output=True, text=True,
                         timeout=seconds + 120)
    match = re.search(r"^MESHPLAN_WRK (\{.*\})$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(match.group(1))
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its child processes (uvicorn's workers), from
    /proc: the server's own cost per request, less sensitive to other load than latency."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the command: state ppid ... utime (index 11) stime (12)
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / ticks
    return total


# ---------------------------------------------------------------------------- profiling
@contextlib.contextmanager
def profiling(pid: int, out: Path | None, seconds: float) -> Iterator[None]:
    """py-spy samples ``pid`` (and its worker processes) for ``seconds`` while the body runs."""
    if out is None:
        yield
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists() and not shutil.which(spy):
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    proc = subprocess.Popen(
        [spy, "record", "--pid", str(pid), "--subprocesses", "--rate", "200",
         "--duration", str(max(1, round(seconds))), "--format", "raw", "--output", str(out),
         "--gil",
         "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield
    finally:
        _, err = proc.communicate(timeout=seconds + 120)
        if proc.returncode != 0:
            print(f"py-spy failed: {err.decode(errors='replace')}", file=sys.stderr)


def summarize_profile(path: Path, top: int = 12) -> list[str]:
    """Self and inclusive shares of the sampled functions in py-spy's collapsed stacks."""
    total = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    if not total:
        return ["  (no samples)"]
    lines = [f"  {total} samples; self time:"]
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("  inclusive, project code only:")
    project = [(f, n) for f, n in inclusive.most_common()
               if re.search(r"\((costmodel|solver|service)/", f)][:top]
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in project]
    return lines


def _short(frame: str) -> str:
    """``func (path/to/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py)``."""
    match = re.match(r"(.*) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    func, path = match.groups()
    for marker in ("site-packages/", str(ROOT) + "/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{func} ({path})"


# ---------------------------------------------------------------------------- main
def measure(args: argparse.Namespace, backend: str, database_url: str, tmp: Path,
            migrated: str) -> list[Row]:
    rows: list[Row] = []
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    with running_server(database_url, args.server_workers, tmp) as server:
        print(f"[{backend}] {migrated}; server: {' '.join(server.command[1:4])} ... "
              f"(pid {server.process.pid}) at {server.url}", flush=True)
        targets: list[tuple[str, str, str, Any]] = [
            ("POST /v1/estimates", "/v1/estimates", "POST", LLAMA3_70B_EXAMPLE)]
        unavailable: list[Row] = []
        try:
            plan_id = create_plan(server, headers)
            targets.append(("GET /v1/plans/{id}", f"/v1/plans/{plan_id}", "GET", None))
        except Unavailable as exc:
            unavailable.append(Row(backend, "GET /v1/plans/{id}", note=_one_line(exc)))
        status, answer = _http(targets[0][2], server.url + targets[0][1], targets[0][3],
                               headers)
        if status != 200:
            raise RuntimeError(f"the estimate example answered {status}: {answer}")
        for endpoint, path, method, body in targets:
            script = lua_script(tmp, f"{backend}-{method.lower()}", method, body)
            url = server.url + path
            if args.warmup > 0:
                run_wrk(url, script, connections=args.connections, threads=args.threads,
                        seconds=args.warmup, headers=args.header)
            load = os.getloadavg()[0]
            profile = None
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                slug = re.sub(r"[^a-z]+", "-", f"{backend} {endpoint}".lower()).strip("-")
                profile = args.profile / f"{slug}.txt"
            cpu_before = cpu_seconds(server.process.pid)
            with profiling(server.process.pid, profile, args.duration):
                r = run_wrk(url, script, connections=args.connections, threads=args.threads,
                            seconds=args.duration, headers=args.header)
            cpu = cpu_seconds(server.process.pid) - cpu_before
            socket_errors = {k: r[k] for k in ("connect", "read", "write", "timeout") if r[k]}
            detail = {**({"non2xx": r["non2xx"]} if r["non2xx"] else {}), **socket_errors}
            rows.append(Row(
                backend, endpoint, requests_per_s=r["requests"] / (r["duration_us"] / 1e6),
                p50_ms=r["p50_us"] / 1e3, p99_ms=r["p99_us"] / 1e3, mean_ms=r["mean_us"] / 1e3,
                max_ms=r["max_us"] / 1e3, requests=r["requests"],
                errors=r["non2xx"] + sum(socket_errors.values()), error_detail=detail,
                server_cpu_ms=1e3 * cpu / max(1, r["requests"]), load_before=load))
            if profile is not None and profile.exists():
                print(f"[{backend}] profile of {endpoint} ({profile}):")
                print("\n".join(summarize_profile(profile)), flush=True)
        rows += unavailable
        if server.process.poll() is not None:
            raise RuntimeError(f"the server died during the run:\n"
                               f"{server.log.read_text(errors='replace')[-4000:]}")
    return rows


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    head = ("backend", "endpoint", "requests/s", "p50 ms", "p99 ms", "errors", "target p99",
            "result", "server CPU ms/req")
    body = []
    notes = []
    for r in rows:
        if r.p99_ms is None:
            body.append((r.backend, r.endpoint, "n/a", "n/a", "n/a", "", f"<= {r.target_ms:g} ms",
                         "-", ""))
            notes.append(f"{r.backend} {r.endpoint}: {r.note}")
            continue
        errors = str(r.errors) + (f" {r.error_detail}" if r.error_detail else "")
        body.append((r.backend, r.endpoint, f"{r.requests_per_s:.1f}", f"{r.p50_ms:.1f}",
                     f"{r.p99_ms:.1f}", errors, f"<= {r.target_ms:g} ms", r.verdict,
                     f"{r.server_cpu_ms:.2f}"))
    widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head))]
    print()
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration:g}s (after "
          f"{args.warmup:g}s warm-up), {os.cpu_count()} cores, server: "
          + f"meshplan serve --http-workers {args.server_workers}")
    for line in [head, tuple("-" * w for w in widths), *body]:
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    for note in notes:
        print(note)
    loads = [f"{r.backend} {r.endpoint}: {r.load_before:.2f}" for r in rows
             if r.load_before is not None]
    if loads:
        print("1-minute load average before each run (a shared machine):", "; ".join(loads))


# ---------------------------------------------------------------------------- adversarial
def maximal_estimate() -> dict[str, Any]:
    """The documented request at the schedule-cells admission limit: pp 80 (one layer per
    stage) × 12,500 micro-batches = 1,000,000 cells (~40 s on one core)."""
    body = json.loads(json.dumps(LLAMA3_70B_EXAMPLE))
    body["plan"].update(tp=1, pp=80, dp=1, cp=1, micro_batch_size=1, virtual_stages=1,
                        schedule="1F1B", sequence_parallel=False)
    body["training"]["global_batch_size"] = 12_500
    return body


def adversarial(args: argparse.Namespace, threshold_cells: int, tmp: Path) -> dict[str, Any]:
    """``args.heavy`` maximal estimates in flight while one client sends cheap estimates one
    after another for ``args.duration`` s: the cheap ones' latency percentiles."""
    import threading

    url = f"sqlite:///{tmp / f'adv-{threshold_cells}.db'}"
    env = {"MESHPLAN_HEAVY_ESTIMATE_CELLS": str(threshold_cells), "MESHPLAN_WORKERS": "0"}
    load = os.getloadavg()[0]
    with running_server(url, 1, tmp, env) as server:
        heavy_status: list[int] = []

        def send_heavy() -> None:
            try:
                status, _ = _http("POST", server.url + "/v1/estimates", maximal_estimate(),
                                  timeout=600)
            except OSError:  # the server was stopped before it answered
                status = 0
            heavy_status.append(status)

        heavies = [threading.Thread(target=send_heavy, daemon=True) for _ in range(args.heavy)]
        for t in heavies:
            t.start()
        time.sleep(1.0)  # the large ones are admitted and computing
        latencies: list[float] = []
        errors = 0
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            t0 = time.perf_counter()
            status, _ = _http("POST", server.url + "/v1/estimates", LLAMA3_70B_EXAMPLE,
                              timeout=300)
            latencies.append((time.perf_counter() - t0) * 1e3)
            errors += status != 200
        for t in heavies:  # every large one answered before the server stops
            t.join(timeout=600)
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {"threshold_cells": threshold_cells, "cheap_requests": len(latencies),
            "cheap_errors": errors, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": latencies[-1], "heavy_answered": heavy_status, "load_before": load}


def main_adversarial(args: argparse.Namespace) -> int:
    """This code (large estimates in their own process pool) side by side with the same server
    with the pool threshold above the admission limit (every estimate in-process, the previous
    behaviour), in the same run."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="meshplan-adversarial-") as d:
        for label, threshold in (("pool (default 20,000 cells)", 20_000),
                                 ("in-process (previous)", 10**9)):
            row = adversarial(args, threshold, Path(d))
            rows.append((label, row))
    print(f"{args.heavy} maximal estimates (1,000,000 cells each) in flight + cheap estimates "
          f"(the documented request) one at a time for {args.duration:.0f} s; SQLite, one API "
          f"process; target: cheap p99 <= 250 ms")
    print(f"{'mode':<30} {'cheap n':>8} {'err':>4} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} "
          f"{'load':>5}  large answered (status)")
    for label, r in rows:
        print(f"{label:<30} {r['cheap_requests']:>8} {r['cheap_errors']:>4} {r['p50_ms']:>9.1f} "
              f"{r['p99_ms']:>9.1f} {r['max_ms']:>9.1f} {r['load_before']:>5.2f}  "
              f"{sorted(r['heavy_answered'])} of {args.heavy}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15, help="seconds measured (15)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of warm-up (3)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent clients (32)")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--server-workers", type=int, default=2,
                        help="API processes: meshplan serve --http-workers N (default 2)")
    parser.add_argument("--backends", default="sqlite,postgres",
                        help="comma-separated: sqlite, postgres (default both)")
    parser.add_argument("--pg", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres",
                        help="libpq conninfo of a PostgreSQL server where the benchmark may "
                        "create and drop a database")
    parser.add_argument("--header", action="append", default=[], metavar="'Name: value'",
                        help="extra request header (e.g. authorization), repeatable")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample the server with py-spy during each run")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    parser.add_argument("--adversarial", action="store_true",
                        help="the adversarial mode: --heavy maximal estimates in flight and a "
                        "stream of cheap ones (no wrk needed)")
    parser.add_argument("--heavy", type=int, default=4, help="maximal estimates in flight (4)")
    args = parser.parse_args(argv)
    if args.adversarial:
        return main_adversarial(args)

    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backends: {sorted(unknown)}")
    has_db = _meshplan_has("db")

    rows: list[Row] = []
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix=f"meshplan-load-{backend}-") as d:
            tmp = Path(d)
            try:
                database = (sqlite_database(tmp) if backend == "sqlite"
                            else postgres_database(args.pg))
                with database as url:
                    if has_db:
                        subprocess.run([sys.executable, "-m", "service", "db", "upgrade"],
                                       env={**os.environ, "MESHPLAN_DATABASE_URL": url},
                                       cwd=tmp, check=True, timeout=300)
                        migrated = "migrated with `meshplan db upgrade`"
                    else:
                        migrated = "this build has no database (no `meshplan db`)"
                    rows += measure(args, backend, url, tmp, migrated)
            except Unavailable as exc:
                rows += [Row(backend, e, note=_one_line(exc)) for e in TARGET_P99_MS]
    print_table(rows, args)
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "target_p99_ms": r.target_ms,
                                          "result": r.verdict} for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
