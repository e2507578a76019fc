"""What every ``meshplan`` command shares: exit codes, the error that ends a command, settings
and logging, reading request files, printing tables, ``--server`` options and ``--fail-if``
gates."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import ValidationError

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



def remote_options(p: argparse.ArgumentParser, default_timeout: float) -> None:
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


def setup_logging(settings: Settings, *, migrations: bool = False) -> None:
    level = "DEBUG" if settings.log_level == "trace" else settings.log_level.upper()
    logging.basicConfig(level=level, format="%(levelname)s:     %(name)s: %(message)s")
    if not migrations:  # Alembic logs its context at info level on every revision check
        logging.getLogger("alembic").setLevel(logging.WARNING)


def open_database(settings: Settings) -> Database:
    from service.db.engine import Database

    try:
        return Database(settings.effective_database_url)
    except Exception as exc:  # a malformed URL, a driver that is not installed
        raise CLIError(EXIT_INVALID, f"meshplan: invalid setting database_url: {exc}") from None


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the non-None ``overrides`` (command-line options)."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise CLIError(EXIT_INVALID, *setting_problems(exc)) from None


def setting_problems(exc: ValidationError) -> list[str]:
    return [f"meshplan: invalid setting {'.'.join(map(str, e['loc']))}: {e['msg']}"
            for e in exc.errors()]


def parse_gates(texts: Sequence[str], fields: set[str]) -> list[Any]:
    from service import gates

    try:
        return gates.parse(texts, fields)
    except ValueError as exc:
        raise CLIError(EXIT_INVALID, f"meshplan: {exc}") from None


def apply_gates(checks: list[Any], values: dict[str, Any]) -> int:
    from service import gates

    lines = gates.tripped(checks, values)
    for line in lines:
        print(f"meshplan: {line}", file=sys.stderr)
    return EXIT_GATE if lines else EXIT_OK


def read_json(path: str) -> Any:
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


def read_plan_request(path: str) -> Any:
    """The estimate request in the PLAN file of ``launch`` and ``what-if``: the file's JSON
    when it is one (``{model, training, cluster, plan}``, as ``plan --save-plans`` writes),
    or a stored plan's ``request`` (the ``GET /v1/plans/{id}`` answer). A search result is
    refused with what to do instead: it holds plans but not the request they were found for."""
    data = read_json(path)
    if not isinstance(data, dict):
        return data
    if isinstance(data.get("request"), dict):
        return data["request"]
    if "plans" in data and "plan" not in data:
        raise CLIError(
            EXIT_INVALID,
            f"meshplan: {'stdin' if path == '-' else path} is a search result: it holds the "
            "found plans but not the model, training job and cluster they were found for",
            "  write each plan as a request that launch, what-if and estimate take: "
            "meshplan plan FILE --save-plans DIR (then DIR/plan-1.json, ...),",
            "  or run the search on a server and pass the plan's id with --server URL")
    return data


def invalid(problems: Sequence[tuple[str, str]]) -> CLIError:
    lines = [f"meshplan: invalid input ({len(problems)} problem"
             f"{'' if len(problems) == 1 else 's'}):"]
    lines += [f"  {field}: {rule}" for field, rule in problems]
    return CLIError(EXIT_INVALID, *lines)


def client_call(args: argparse.Namespace, fn: Any) -> Any:
    from service.client import Client, ClientError

    api_key = args.api_key or os.environ.get("MESHPLAN_API_KEY") or None
    try:
        with Client(args.server, api_key=api_key, timeout=args.timeout) as client:
            return fn(client)
    except ClientError as exc:
        if exc.kind == "invalid":
            raise invalid(exc.problems) from None
        raise CLIError(EXIT_ERROR, f"meshplan: {exc.message}") from None



def table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(),
              file=out)
