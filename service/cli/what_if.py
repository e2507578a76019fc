"""``meshplan what-if PLAN SCENARIO_FILE``: a plan's step under stragglers, slow links or
jitter (:func:`costmodel.what_if`), in-process or on a server's stored plan."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from pydantic import ValidationError

from costmodel.errors import SpecError
from service.cli.common import (
    EXIT_ERROR,
    EXIT_OK,
    CLIError,
    client_call,
    invalid,
    read_json,
    read_plan_request,
)


def register(sub: Any) -> None:
    cmd = sub.add_parser(
        "what-if", help="a plan's step time with slow GPUs, stages, nodes, pools, links or "
        "jitter",
        description="Evaluate PLAN under the scenario in SCENARIO_FILE (the JSON body of "
        "POST /v1/plans/{id}/what-if: ranks, stages, nodes, pools, links, jitter). PLAN is a "
        "stored plan's id with --server, or in-process a JSON file holding an estimate request "
        "({model, training, cluster, plan}) or a stored plan (the GET /v1/plans/{id} answer). "
        "Exit 2 on invalid input (each field: rule on stderr).")
    cmd.add_argument("plan", metavar="PLAN", help="plan id (with --server), or a JSON file "
                     "(- for stdin)")
    cmd.add_argument("scenario", metavar="SCENARIO_FILE", help="scenario JSON file")
    cmd.add_argument("--json", action="store_true", help="print the answer as JSON")
    cmd.add_argument("--server", metavar="URL", help="evaluate a plan stored on a server")
    cmd.add_argument("--api-key", metavar="KEY",
                     help="API key for --server (default: MESHPLAN_API_KEY)")
    cmd.add_argument("--timeout", type=float, default=120.0, metavar="S",
                     help="seconds to wait for --server (default 120)")
    cmd.set_defaults(func=cmd_what_if)


def cmd_what_if(args: argparse.Namespace) -> int:
    import costmodel
    from costmodel.what_if import WhatIfResult

    scenario = read_json(args.scenario)
    if args.server:
        body = client_call(args, lambda c: c.what_if(args.plan, scenario))
        body.pop("plan_id", None)
        try:
            result = WhatIfResult.model_validate(body)
        except ValidationError as exc:
            raise CLIError(EXIT_ERROR, f"meshplan: unexpected answer from {args.server}: {exc}"
                           ) from None
    else:
        data = read_plan_request(args.plan)
        try:
            result = costmodel.what_if(data, scenario)
        except SpecError as exc:
            raise invalid([(p.field, p.rule) for p in exc.problems]) from None
    if args.json:
        json.dump(result.model_dump(mode="json"), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_what_if(result, sys.stdout)
    return EXIT_OK


def print_what_if(w: Any, out: TextIO) -> None:
    b, s = w.baseline, w.scenario
    print(f"step time      {b.step_time_s:10.3f} s -> {s.step_time_s:10.3f} s "
          f"({w.change:+.2%})", file=out)
    print(f"tokens/s       {b.tokens_per_s:10.0f}   -> {s.tokens_per_s:10.0f}", file=out)
    print(f"$ per M tokens {b.cost_per_million_tokens:10.4f}   -> "
          f"{s.cost_per_million_tokens:10.4f}", file=out)
    cp = w.critical_path
    print(f"critical path: pipeline rank {cp.rank} (x{cp.stage_factor:.3g}), pipeline "
          f"{cp.pipeline_s:.3f} s + tail {cp.tail_s:.3f} s on rank {cp.tail_rank}", file=out)
    print("idle per pipeline rank (s): " + ", ".join(f"{x:.3f}" for x in w.idle_s), file=out)
    if w.jitter is not None:
        j = w.jitter
        print(f"jitter over {j.steps} steps (seed {j.seed}): mean {j.mean_step_time_s:.3f} s, "
              f"p95 {j.p95_step_time_s:.3f} s, max {j.max_step_time_s:.3f} s", file=out)
    if w.straggler_sensitivity is not None:
        z = w.straggler_sensitivity
        print(f"straggler sensitivity: one GPU x{z.factor:g} at stage {z.worst_stage} (rank "
              f"{z.worst_rank}) adds {z.increase_s:.3f} s ({z.increase_fraction:+.2%})",
              file=out)
