"""The ``meshplan`` command line.

``meshplan serve`` runs the HTTP service with embedded worker processes; ``meshplan worker``
runs more workers (on other machines, against the same PostgreSQL); ``meshplan db upgrade``
migrates the database; ``meshplan apikey create|list|revoke`` manages API keys;
``meshplan estimate FILE`` evaluates one plan and ``meshplan plan FILE`` searches the best plans
(in-process, or against ``--server URL``); ``meshplan launch PLAN --format F`` renders a
plan's launch config; ``meshplan gpus`` and ``meshplan models`` list the
catalog and the presets.

Exit codes (ARCHITECTURE.md): 0 ok, 2 invalid input (each ``field: rule`` on stderr; also an
unreadable file, malformed JSON or a bad option), 3 no feasible plan (the plan does not fit in
memory, or the search found none; the reason on stderr), 4 a ``--fail-if`` threshold was
crossed, 1 anything else (the server unreachable or failing).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import ValidationError

from costmodel.errors import SpecError
from costmodel.results import Estimate
from service import __version__
from service.errors import json_error_detail
from service.settings import Settings

if TYPE_CHECKING:
    from service.db.engine import Database

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_INFEASIBLE, EXIT_GATE = 0, 1, 2, 3, 4


class CLIError(Exception):
    """Ends the command with ``code``, after printing ``lines`` to stderr."""

    def __init__(self, code: int, *lines: str) -> None:
        super().__init__(lines[0] if lines else "")
        self.code = code
        self.lines = lines


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshplan",
        description="Plan how to lay out LLM training jobs over GPUs, and what they will cost.",
    )
    parser.add_argument("--version", action="version", version=f"meshplan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve", help="run the HTTP service and its workers",
        description="Run the HTTP service with MESHPLAN_WORKERS embedded worker processes "
        "(settings: MESHPLAN_* variables). The embedded SQLite database is migrated on start; "
        "PostgreSQL needs `meshplan db upgrade` first.")
    serve.add_argument("--host", help="interface to bind (default: MESHPLAN_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: MESHPLAN_PORT or 8000)")
    serve.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"],
                       help="default: MESHPLAN_LOG_LEVEL or info")
    serve.add_argument("--http-workers", type=int, metavar="N",
                       help="API server processes (default: MESHPLAN_HTTP_WORKERS or 1; one "
                       "per core the API may use)")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="embedded worker processes (default: MESHPLAN_WORKERS or 1; 0 = "
                       "none, run `meshplan worker` elsewhere)")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser(
        "worker", help="run search workers",
        description="Run worker processes that claim searches from the database "
        "(MESHPLAN_DATABASE_URL) and run them; stop with SIGTERM or Ctrl-C (a running search "
        "goes back to the queue).")
    worker.add_argument("--processes", type=int, metavar="N",
                        help="worker processes (default: MESHPLAN_WORKERS, at least 1)")
    worker.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"],
                        help="default: MESHPLAN_LOG_LEVEL or info")
    worker.set_defaults(func=cmd_worker)

    db = sub.add_parser("db", help="database migrations",
                        description="Migrate the database in MESHPLAN_DATABASE_URL (default: the "
                        "embedded SQLite file).")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = db_sub.add_parser("upgrade", help="migrate to the latest revision (or REVISION)")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(func=cmd_db_upgrade)
    down = db_sub.add_parser("downgrade", help="migrate back to REVISION ('base' = empty)")
    down.add_argument("revision")
    down.set_defaults(func=cmd_db_downgrade)
    cur = db_sub.add_parser("current", help="print the database's revision; exit 1 when it "
                            "is not the latest")
    cur.set_defaults(func=cmd_db_current)

    keys = sub.add_parser("apikey", help="API keys (for MESHPLAN_AUTH=1)",
                          description="Create, list and revoke API keys in the database.")
    keys_sub = keys.add_subparsers(dest="apikey_command", required=True, metavar="ACTION")
    create = keys_sub.add_parser("create", help="create a key and print it (once)")
    create.add_argument("name", help="who or what the key is for")
    create.set_defaults(func=cmd_apikey_create)
    lst = keys_sub.add_parser("list", help="list keys (never the secrets)")
    lst.set_defaults(func=cmd_apikey_list)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id")
    revoke.set_defaults(func=cmd_apikey_revoke)

    est = sub.add_parser(
        "estimate", help="predict one plan's step time, memory and cost",
        description="Evaluate the plan in FILE: the JSON body of POST /v1/estimates "
        "({model, training, cluster, plan}). Exit 2 on invalid input, 3 if it does not fit, "
        "4 if a --fail-if condition holds.")
    est.add_argument("file", metavar="FILE", help="request JSON file, or - for stdin")
    est.add_argument("--json", action="store_true", help="print the estimate as JSON")
    _remote_options(est, default_timeout=120.0)
    est.set_defaults(func=cmd_estimate)

    plan = sub.add_parser(
        "plan", help="search the best plans for a job and an inventory",
        description="Search FILE: the JSON body of POST /v1/searches ({model, training, "
        "cluster, objective, constraints, top_k, time_limit_s}), in-process or on --server. "
        "Exit 0 when a plan is found, 2 on invalid input, 3 when nothing fits (the reason on "
        "stderr), 4 if a --fail-if condition holds for the best plan.")
    plan.add_argument("file", metavar="FILE", help="request JSON file, or - for stdin")
    plan.add_argument("--json", action="store_true", help="print the search result as JSON")
    _remote_options(plan, default_timeout=600.0)
    plan.set_defaults(func=cmd_plan)

    from runtime.launch import FORMATS

    launch = sub.add_parser(
        "launch", help="render a plan's launch config (torchrun, torchtitan, Megatron-LM, ...)",
        description="Render the launch config of PLAN: a stored plan's id with --server, or "
        "in-process a JSON file holding an estimate request ({model, training, cluster, plan}) "
        "or a stored plan (the GET /v1/plans/{id} answer). Prints the main file (notes on "
        "stderr), or all files into --out DIR. Exit 2 on invalid input or when the framework "
        "cannot run the plan (each field: rule on stderr).")
    launch.add_argument("plan", metavar="PLAN", help="plan id (with --server), or a JSON file "
                        "(- for stdin)")
    launch.add_argument("--format", "-f", required=True, choices=FORMATS, dest="fmt")
    launch.add_argument("--out", metavar="DIR", help="write the config's files into DIR")
    launch.add_argument("--json", action="store_true", help="print the config as JSON")
    launch.add_argument("--server", metavar="URL", help="read the stored plan from a server")
    launch.add_argument("--api-key", metavar="KEY",
                        help="API key for --server (default: MESHPLAN_API_KEY)")
    launch.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="seconds to wait for --server (default 60)")
    launch.set_defaults(func=cmd_launch)

    gpus = sub.add_parser("gpus", help="list the GPU catalog")
    gpus.add_argument("--json", action="store_true", help="print the catalog as JSON")
    gpus.set_defaults(func=cmd_gpus)

    models = sub.add_parser("models", help="list the model presets")
    models.add_argument("--json", action="store_true", help="print the presets as JSON")
    models.set_defaults(func=cmd_models)
    return parser


def _remote_options(p: argparse.ArgumentParser, default_timeout: float) -> None:
    p.add_argument("--server", metavar="URL",
                   help="send the request to a meshplan server (e.g. http://127.0.0.1:8000) "
                   "instead of running in-process")
    p.add_argument("--api-key", metavar="KEY",
                   help="API key for --server (default: MESHPLAN_API_KEY)")
    p.add_argument("--timeout", type=float, default=default_timeout, metavar="S",
                   help=f"seconds to wait for --server (default {default_timeout:g})")
    p.add_argument("--fail-if", action="append", default=[], metavar="COND",
                   help="exit 4 when COND holds for the (best) plan's estimate, e.g. "
                   "'mfu<0.35' or 'cost_per_million_tokens>2.0'; repeatable")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``meshplan``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except CLIError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (e.g. `meshplan plan … | head`): stop quietly, as Unix tools do
        import contextlib
        import os

        # and keep the interpreter's final flush from raising again
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


# ---------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.jobs.worker import WorkerProcesses

    overrides = {"host": args.host, "port": args.port, "log_level": args.log_level,
                 "workers": args.workers, "http_workers": args.http_workers}
    settings = _settings(**overrides)
    _logging(settings)
    db = _database(settings)
    _migrate_embedded(db)
    workers = WorkerProcesses(settings, settings.workers, embedded=True)
    try:
        workers.start()
        if settings.http_workers > 1:
            from service.http_processes import HTTPProcesses, supports_reuseport

            if supports_reuseport() and settings.port:
                db.dispose()  # each API process opens its own
                return HTTPProcesses(settings, settings.http_workers).run()
            # elsewhere uvicorn's process manager (one shared socket); each process builds
            # its app from the environment, so the command-line overrides go there too
            for key, value in overrides.items():
                if value is not None:
                    os.environ[f"MESHPLAN_{key.upper()}"] = str(value)
            uvicorn.run("service.app:create_app", factory=True, workers=settings.http_workers,
                        host=settings.host, port=settings.port, log_level=settings.log_level)
        else:
            uvicorn.run(create_app(settings, db=db), host=settings.host, port=settings.port,
                        log_level=settings.log_level)
    finally:
        workers.stop(timeout=max(10.0, 2 * settings.heartbeat_s))
        db.dispose()
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    import signal

    from service.jobs.worker import WorkerProcesses, process_main

    settings = _settings(log_level=args.log_level)
    n = args.processes if args.processes is not None else max(1, settings.workers)
    if n < 1:
        raise CLIError(EXIT_INVALID, "meshplan: --processes must be at least 1")
    _logging(settings)
    db = _database(settings)
    _migrate_embedded(db)
    _wait_for_schema(db)
    db.dispose()
    if n == 1:
        process_main(settings.model_dump(mode="json"), None)
        return EXIT_OK
    workers = WorkerProcesses(settings, n)
    workers.start()

    def forward(signum: int, frame: Any) -> None:
        for p in workers.processes:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    workers.wait()
    return EXIT_OK


def _wait_for_schema(db: Database, poll_s: float = 5.0) -> None:
    """Workers start once the database is reachable and at the code's revision (during a
    rolling upgrade, `meshplan db upgrade` may still be running)."""
    import time

    from service.db import migrate

    log = logging.getLogger("meshplan.jobs")
    said = ""
    while True:
        try:
            current, head = migrate.current(db), migrate.head()
            if current == head:
                return
            why = f"the database is at revision {current or 'base'}, this version needs " \
                  f"{head}: run `meshplan db upgrade`"
        except Exception as exc:
            why = f"the database {db.safe_url()} is unavailable ({type(exc).__name__})"
        if why != said:
            log.warning("%s; waiting", why)
            said = why
        time.sleep(poll_s)


def _logging(settings: Settings, *, migrations: bool = False) -> None:
    level = "DEBUG" if settings.log_level == "trace" else settings.log_level.upper()
    logging.basicConfig(level=level, format="%(levelname)s:     %(name)s: %(message)s")
    if not migrations:  # Alembic logs its context at info level on every revision check
        logging.getLogger("alembic").setLevel(logging.WARNING)


def _database(settings: Settings) -> Database:
    from service.db.engine import Database

    try:
        return Database(settings.effective_database_url)
    except Exception as exc:  # a malformed URL, a driver that is not installed
        raise CLIError(EXIT_INVALID, f"meshplan: invalid setting database_url: {exc}") from None


def _migrate_embedded(db: Database) -> None:
    from service.db import migrate

    try:
        migrate.upgrade_if_embedded(db)
    except Exception as exc:
        raise CLIError(EXIT_ERROR, f"meshplan: cannot migrate {db.safe_url()}: {exc}") from None


# ---------------------------------------------------------------------------- db, apikey
def _db_command(*, log: bool = False) -> Database:
    settings = _settings()
    if log:  # Alembic reports each migration it runs at info level
        _logging(settings, migrations=True)
    return _database(settings)


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from service.db import migrate

    return _migrate("upgrade", lambda db: migrate.upgrade(db, args.revision))


def cmd_db_downgrade(args: argparse.Namespace) -> int:
    from service.db import migrate

    return _migrate("downgrade", lambda db: migrate.downgrade(db, args.revision))


def _migrate(verb: str, run: Any) -> int:
    """Run one migration command on the configured database and print where it ends."""
    from service.db import migrate

    db = _db_command(log=True)
    try:
        run(db)
        print(f"{db.safe_url()}: at revision {migrate.current(db) or 'base (empty)'}")
    except Exception as exc:
        raise CLIError(EXIT_ERROR, f"meshplan: {verb} of {db.safe_url()} failed: {exc}"
                       ) from None
    finally:
        db.dispose()
    return EXIT_OK


def cmd_db_current(args: argparse.Namespace) -> int:
    from service.db import migrate

    db = _db_command()
    try:
        current, head = migrate.current(db), migrate.head()
    except Exception as exc:
        raise CLIError(EXIT_ERROR, f"meshplan: cannot read {db.safe_url()}: {exc}") from None
    finally:
        db.dispose()
    if current == head:
        print(f"{current} (latest)")
        return EXIT_OK
    print(f"{current or 'base (empty)'} (latest is {head}: run `meshplan db upgrade`)")
    return EXIT_ERROR


def _keys_session(fn: Any) -> Any:
    db = _db_command()
    try:
        with db.session() as session:
            return fn(session)
    except CLIError:
        raise
    except Exception as exc:
        raise CLIError(EXIT_ERROR, f"meshplan: {db.safe_url()}: {exc} (is it migrated? "
                       "`meshplan db upgrade`)") from None
    finally:
        db.dispose()


def cmd_apikey_create(args: argparse.Namespace) -> int:
    from service.auth import service

    def create(session: Any) -> Any:
        try:
            return service.create_key(session, args.name)
        except ValueError as exc:
            raise CLIError(EXIT_INVALID, f"meshplan: {exc}") from None

    created = _keys_session(create)
    print(created.token)
    print(f"created API key {created.key.id} ({created.key.name}); the key above is shown "
          "only now: store it as a secret", file=sys.stderr)
    return EXIT_OK


def cmd_apikey_list(args: argparse.Namespace) -> int:
    from service.auth import service

    rows = _keys_session(lambda s: [
        (str(k.id), k.name, k.prefix + "…", k.created_at.isoformat(timespec="seconds"),
         k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "-")
        for k in service.list_keys(s)])
    _table(("id", "name", "key", "created", "revoked"), rows, sys.stdout)
    return EXIT_OK


def cmd_apikey_revoke(args: argparse.Namespace) -> int:
    from service.auth import service
    from service.exceptions import NotFound

    def revoke(session: Any) -> str:
        try:
            return str(service.revoke_key(session, args.id).name)
        except NotFound as exc:
            raise CLIError(EXIT_INVALID, f"meshplan: {exc}") from None

    name = _keys_session(revoke)
    print(f"revoked API key {args.id} ({name})")
    return EXIT_OK


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the non-None ``overrides`` (command-line options)."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise CLIError(EXIT_INVALID, *_setting_problems(exc)) from None


def _setting_problems(exc: ValidationError) -> list[str]:
    return [f"meshplan: invalid setting {'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors()]


# ---------------------------------------------------------------------------- estimate
def cmd_estimate(args: argparse.Namespace) -> int:
    from service import gates

    checks = _gates(args.fail_if, gates.numeric_fields(Estimate))
    data = _read_json(args.file)
    est = _estimate_remote(data, args) if args.server else _estimate_local(data)
    if args.json:
        json.dump(est.model_dump(mode="json"), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_estimate(est, sys.stdout)
    if not est.fits:
        for line in why_not_fits(est):
            print(line, file=sys.stderr)
        return EXIT_INFEASIBLE
    return _apply_gates(checks, est.model_dump(mode="json"))


def cmd_plan(args: argparse.Namespace) -> int:
    from service import gates
    from solver.results import SearchResult

    checks = _gates(args.fail_if, gates.numeric_fields(Estimate) | {"objective_value"})
    data = _read_json(args.file)
    search_id: str | None = None
    if args.server:
        search = _search_remote(data, args)
        search_id = str(search.get("id"))
        raw = search["result"]
        try:
            result = SearchResult.model_validate(raw)
        except ValidationError as exc:
            raise CLIError(EXIT_ERROR, f"meshplan: unexpected answer from {args.server}: {exc}"
                           ) from None
    else:
        result = _search_local(data)
        raw = result.model_dump(mode="json")
    if args.json:
        json.dump(raw, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_search(result, sys.stdout, search_id=search_id,
                     plan_ids=[p.get("id") for p in raw.get("plans", [])])
    if not result.plans:
        print(f"meshplan: no feasible plan: {result.infeasible_reason}", file=sys.stderr)
        return EXIT_INFEASIBLE
    best = raw["plans"][0]
    return _apply_gates(checks, {**best["estimate"], "objective_value": best["objective_value"]})


def _gates(texts: Sequence[str], fields: set[str]) -> list[Any]:
    from service import gates

    try:
        return gates.parse(texts, fields)
    except ValueError as exc:
        raise CLIError(EXIT_INVALID, f"meshplan: {exc}") from None


def _apply_gates(checks: list[Any], values: dict[str, Any]) -> int:
    from service import gates

    lines = gates.tripped(checks, values)
    for line in lines:
        print(f"meshplan: {line}", file=sys.stderr)
    return EXIT_GATE if lines else EXIT_OK


def _search_local(data: Any) -> Any:
    import solver

    if isinstance(data, dict) and data.get("calibration_id") is not None:
        raise _invalid([("calibration_id", "stored calibrations need a server (--server URL)")])
    try:
        return solver.search(data)
    except SpecError as exc:
        raise _invalid([(p.field, p.rule) for p in exc.problems]) from None


def print_search(result: Any, out: TextIO, *, search_id: str | None = None,
                 plan_ids: Sequence[Any] = ()) -> None:
    """The ranked, explained plans of a search result."""
    from solver.explain import describe

    o = result.optimality
    if search_id:
        print(f"search {search_id}", file=out)
    print(f"objective {o.objective}: {o.status}"
          + (f" (value {o.value:.6g}, bound {o.bound:.6g}, gap {o.gap:.2%})"
             if o.value is not None and o.bound is not None and o.gap is not None else ""),
          file=out)
    for i, rp in enumerate(result.plans):
        e = rp.estimate
        ident = plan_ids[i] if i < len(plan_ids) and plan_ids[i] else None
        print(f"#{rp.rank}  {describe(rp.plan)}" + (f"  [plan {ident}]" if ident else ""),
              file=out)
        print(f"    {e.tokens_per_s:,.0f} tokens/s, MFU {e.mfu:.1%}, "
              f"step {e.step_time_s:.3f} s,"
              f" peak {e.memory.peak_gib:.1f} GiB, ${e.cost_per_hour:,.2f}/hour, "
              f"${e.cost_per_million_tokens:.4f}/M tokens", file=out)
        print(f"    binding: {rp.explanation.binding_constraint}", file=out)
        if rp.explanation.vs_runner_up:
            print(f"    vs next: {rp.explanation.vs_runner_up}", file=out)
    s = result.stats
    print(f"searched {s.candidates:,} plans ({s.fitting:,} fit), simulated {s.simulated}, "
          f"{s.elapsed_s:.2f} s", file=out)


def _read_json(path: str) -> Any:
    name = "stdin" if path == "-" else path
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(EXIT_INVALID, f"meshplan: cannot read {name}: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CLIError(EXIT_INVALID,
                       f"meshplan: {name}: {json_error_detail(exc.msg, text, exc.pos)}") from None


def _invalid(problems: Sequence[tuple[str, str]]) -> CLIError:
    lines = [f"meshplan: invalid input ({len(problems)} problem"
             f"{'' if len(problems) == 1 else 's'}):"]
    lines += [f"  {field}: {rule}" for field, rule in problems]
    return CLIError(EXIT_INVALID, *lines)


def _estimate_local(data: Any) -> Estimate:
    from service.estimates import service

    settings = _settings()
    try:
        req = service.parse_request(data)
        return service.create_estimate(req, settings)
    except SpecError as exc:
        raise _invalid([(p.field, p.rule) for p in exc.problems]) from None


def _client_call(args: argparse.Namespace, fn: Any) -> Any:
    from service.client import Client, ClientError

    api_key = args.api_key or os.environ.get("MESHPLAN_API_KEY") or None
    try:
        with Client(args.server, api_key=api_key, timeout=args.timeout) as client:
            return fn(client)
    except ClientError as exc:
        if exc.kind == "invalid":
            raise _invalid(exc.problems) from None
        raise CLIError(EXIT_ERROR, f"meshplan: {exc.message}") from None


def _estimate_remote(data: Any, args: argparse.Namespace) -> Estimate:
    body = _client_call(args, lambda c: c.estimate(data))
    try:
        return Estimate.model_validate(body)
    except ValidationError as exc:
        raise CLIError(EXIT_ERROR, f"meshplan: unexpected answer from {args.server}: {exc}"
                       ) from None


def _search_remote(data: Any, args: argparse.Namespace) -> dict[str, Any]:
    search: dict[str, Any] = _client_call(args, lambda c: c.search(data, timeout=args.timeout))
    status = search.get("status")
    if status == "succeeded" and isinstance(search.get("result"), dict):
        return search
    error = search.get("error") if isinstance(search.get("error"), dict) else {}
    assert isinstance(error, dict)
    if status == "failed" and error.get("status") == 422:
        raise _invalid([(str(e.get("field")), str(e.get("rule")))
                        for e in error.get("errors") or [] if isinstance(e, dict)]
                       or [("body", str(error.get("detail")))])
    raise CLIError(EXIT_ERROR, f"meshplan: search {search.get('id')} {status}"
                   + (f": {error.get('detail')}" if error.get("detail") else ""))


def print_estimate(est: Estimate, out: TextIO) -> None:
    """The short human summary of an estimate."""
    p = est.plan
    layout = f"tp {p.tp} · pp {p.pp} · dp {p.dp}"
    layout += "".join(f" · {k} {v}" for k, v in (("cp", p.cp), ("ep", p.ep)) if v > 1)
    sched = p.schedule + (f" × {p.virtual_stages} chunks" if p.virtual_stages > 1 else "")
    mem = est.memory
    rows = [
        ("plan", f"{layout}, micro-batch {p.micro_batch_size}, {sched}, "
                 f"recompute {p.recompute}, ZeRO-{p.zero_stage}"),
        ("GPUs", f"{est.num_gpus} × {est.gpu}" + (f" (pool {p.pool})" if p.pool else "")),
        ("step time", f"{est.step_time_s:,.3f} s"),
        ("tokens/s", f"{est.tokens_per_s:,.0f} ({est.tokens_per_s_per_gpu:,.0f} per GPU)"),
        ("MFU", f"{est.mfu:.1%}"),
        ("fits in memory", f"{'yes' if est.fits else 'NO'} (peak {mem.peak_gib:.1f} of "
                           f"{mem.usable_gib:.1f} GiB usable)"),
        ("cost", f"${est.cost_per_hour:,.2f}/hour, "
                 f"${est.cost_per_million_tokens:,.4f} per million tokens"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}", file=out)
    print("peak memory per pipeline rank (GiB):", file=out)
    for s in mem.per_stage:
        mark = "ok" if s.fits else "DOES NOT FIT"
        print(f"  rank {s.rank:<3} {s.total_gib:8.2f} / {s.usable_gib:.2f}  {mark}", file=out)
    for w in est.warnings:
        print(f"warning: {w}", file=out)


def why_not_fits(est: Estimate) -> list[str]:
    lines = [f"meshplan: the plan does not fit in {est.gpu} memory "
             f"({est.memory.usable_gib:.1f} GiB usable per GPU):"]
    for s in est.memory.per_stage:
        if s.fits:
            continue
        parts = [("weights", s.weights_gib), ("grads", s.grads_gib),
                 ("optimizer", s.optimizer_gib), ("activations", s.activations_gib),
                 ("logits", s.logits_gib), ("buffers", s.comm_buffers_gib),
                 ("context", s.cuda_context_gib)]
        shown = ", ".join(f"{k} {v:.1f}" for k, v in parts if v >= 0.05)
        lines.append(f"  pipeline rank {s.rank} needs {s.total_gib:.1f} GiB ({shown})")
    return lines


# ---------------------------------------------------------------------------- launch
def cmd_launch(args: argparse.Namespace) -> int:
    from runtime.launch import LaunchConfig, render

    if args.server:
        body = _client_call(args, lambda c: c.launch(args.plan, args.fmt))
        body.pop("plan_id", None)
        try:
            cfg = LaunchConfig.model_validate(body)
        except ValidationError as exc:
            raise CLIError(EXIT_ERROR, f"meshplan: unexpected answer from {args.server}: {exc}"
                           ) from None
    else:
        data = _read_json(args.plan)
        if isinstance(data, dict) and isinstance(data.get("request"), dict):
            data = data["request"]  # a stored plan as GET /v1/plans/{id} answers it
        try:
            cfg = render(args.fmt, data)
        except SpecError as exc:  # LaunchError included
            raise _invalid([(p.field, p.rule) for p in exc.problems]) from None
    if args.json:
        json.dump(cfg.model_dump(mode="json"), sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.out:
        out = Path(args.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            for name, content in {cfg.filename: cfg.content, **cfg.files}.items():
                (out / name).write_text(content, encoding="utf-8")
                print(out / name)
        except OSError as exc:
            raise CLIError(EXIT_ERROR, f"meshplan: cannot write {out}: {exc}") from None
    else:
        sys.stdout.write(cfg.content if cfg.content.endswith("\n") else cfg.content + "\n")
        for name in cfg.files:
            print(f"meshplan: {cfg.filename} uses {name} as well (--out DIR writes it)",
                  file=sys.stderr)
    for note in cfg.notes:
        print(f"note: {note}", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------------- catalog
def cmd_gpus(args: argparse.Namespace) -> int:
    from service.catalog import service

    gpus = service.list_gpus()
    if args.json:
        json.dump([g.model_dump(mode="json") for g in gpus], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    header = ("name", "memory GiB", "bf16 TFLOPS", "fp8 TFLOPS", "HBM GB/s", "link GB/s",
              "aliases")
    rows = [(g.name, f"{g.memory_gib:g}", _tf(g.peak_tflops.get("bf16")),
             _tf(g.peak_tflops.get("fp8")), f"{g.hbm_GBps:g}",
             f"{g.intra_node} {g.intra_node_GBps:g}", ", ".join(g.aliases)) for g in gpus]
    _table(header, rows, sys.stdout)
    return EXIT_OK


def _tf(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


def cmd_models(args: argparse.Namespace) -> int:
    from service.catalog import service

    models = service.list_models()
    if args.json:
        json.dump([m.model_dump(mode="json") for m in models], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    header = ("name", "params", "active", "layers", "hidden", "heads", "kv heads", "vocab")
    rows = [(m.name, _count(m.num_params), _count(m.num_active_params),
             str(m.dims.num_hidden_layers), str(m.dims.hidden_size),
             str(m.dims.num_attention_heads), str(m.dims.kv_heads), str(m.dims.vocab_size))
            for m in models]
    _table(header, rows, sys.stdout)
    return EXIT_OK


def _count(n: int) -> str:
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(),
              file=out)
