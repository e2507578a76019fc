"""``meshplan serve`` (the HTTP service with embedded workers) and ``meshplan worker``."""

from __future__ import annotations

import argparse
import logging
import os
from typing import TYPE_CHECKING, Any

from service.cli.common import (
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_OK,
    CLIError,
    load_settings,
    open_database,
    setup_logging,
)

if TYPE_CHECKING:
    from service.db.engine import Database


def register(sub: Any) -> None:
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


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.http_protocol import uvicorn_options
    from service.jobs.worker import WorkerProcesses

    overrides = {"host": args.host, "port": args.port, "log_level": args.log_level,
                 "workers": args.workers, "http_workers": args.http_workers}
    settings = load_settings(**overrides)
    setup_logging(settings)
    db = open_database(settings)
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
                        host=settings.host, port=settings.port, log_level=settings.log_level,
                        **uvicorn_options(settings))
        else:
            uvicorn.run(create_app(settings, db=db), host=settings.host, port=settings.port,
                        log_level=settings.log_level, **uvicorn_options(settings))
    finally:
        workers.stop(timeout=max(10.0, 2 * settings.heartbeat_s))
        db.dispose()
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    import signal

    from service.jobs.worker import WorkerProcesses, process_main

    settings = load_settings(log_level=args.log_level)
    n = args.processes if args.processes is not None else max(1, settings.workers)
    if n < 1:
        raise CLIError(EXIT_INVALID, "meshplan: --processes must be at least 1")
    setup_logging(settings)
    db = open_database(settings)
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


def _migrate_embedded(db: Database) -> None:
    from service.db import migrate

    try:
        migrate.upgrade_if_embedded(db)
    except Exception as exc:
        raise CLIError(EXIT_ERROR, f"meshplan: cannot migrate {db.safe_url()}: {exc}") from None
