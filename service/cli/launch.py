"""``meshplan launch PLAN --format F``: a plan's launch config, in-process or from a server."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from costmodel.errors import SpecError
from service.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    CLIError,
    client_call,
    invalid,
    read_plan_request,
)


def register(sub: Any) -> None:
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
    launch.add_argument("--framework-version", metavar="V", dest="framework_version",
                        help="framework release to write for (torchtitan: 0.3, the current "
                        "release, or 0.2, the TOML era); default the plan's "
                        "training.framework_version when training.framework is the format's")
    launch.add_argument("--out", metavar="DIR", help="write the config's files into DIR")
    launch.add_argument("--json", action="store_true", help="print the config as JSON")
    launch.add_argument("--server", metavar="URL", help="read the stored plan from a server")
    launch.add_argument("--api-key", metavar="KEY",
                        help="API key for --server (default: MESHPLAN_API_KEY)")
    launch.add_argument("--timeout", type=float, default=60.0, metavar="S",
                        help="seconds to wait for --server (default 60)")
    launch.set_defaults(func=cmd_launch)


def cmd_launch(args: argparse.Namespace) -> int:
    from runtime.launch import LaunchConfig, render

    if args.server:
        body = client_call(args, lambda c: c.launch(args.plan, args.fmt, args.framework_version))
        body.pop("plan_id", None)
        try:
            cfg = LaunchConfig.model_validate(body)
        except ValidationError as exc:
            raise CLIError(EXIT_ERROR, f"meshplan: unexpected answer from {args.server}: {exc}"
                           ) from None
    else:
        data = read_plan_request(args.plan)
        try:
            cfg = render(args.fmt, data, version=args.framework_version)
        except SpecError as exc:  # LaunchError included
            raise invalid([(p.field, p.rule) for p in exc.problems]) from None
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
