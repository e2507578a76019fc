"""The ``meshplan`` command line.

``meshplan serve`` runs the HTTP service with embedded worker processes; ``meshplan worker``
runs more workers (on other machines, against the same PostgreSQL); ``meshplan db upgrade``
migrates the database; ``meshplan apikey create|list|revoke`` manages API keys;
``meshplan estimate FILE`` evaluates one plan and ``meshplan plan FILE`` searches the best plans
(in-process, or against ``--server URL``); ``meshplan launch PLAN --format F`` renders a
plan's launch config; ``meshplan what-if PLAN SCENARIO_FILE`` evaluates a plan under
slowed GPUs, links or jitter; ``meshplan gpus`` and ``meshplan models`` list the
catalog and the presets.

Exit codes (ARCHITECTURE.md): 0 ok, 2 invalid input (each ``field: rule`` on stderr; also an
unreadable file, malformed JSON or a bad option), 3 no feasible plan (the plan does not fit in
memory, or the search found none; the reason on stderr), 4 a ``--fail-if`` threshold was
crossed, 1 anything else (the server unreachable or failing).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from service import __version__
from service.cli import admin, catalog, launch, planning, server, what_if
from service.cli.common import (
    EXIT_ERROR,
    EXIT_GATE,
    EXIT_INFEASIBLE,
    EXIT_INVALID,
    EXIT_OK,
    CLIError,
)

__all__ = ["EXIT_ERROR", "EXIT_GATE", "EXIT_INFEASIBLE", "EXIT_INVALID", "EXIT_OK", "CLIError",
           "build_parser", "main"]

COMMAND_GROUPS = (server, admin, planning, launch, what_if, catalog)
"""One module per command group; each adds its sub-commands with ``register(sub)``."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshplan",
        description="Plan how to lay out LLM training jobs over GPUs, and what they will cost.",
    )
    parser.add_argument("--version", action="version", version=f"meshplan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(sub)
    return parser


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
