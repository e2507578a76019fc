"""``meshplan estimate FILE`` (one plan) and ``meshplan plan FILE`` (a search), in-process or
against ``--server``, with their printed summaries and ``--fail-if`` gates."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from pydantic import ValidationError

from costmodel.errors import SpecError
from costmodel.results import Estimate
from service.cli.common import (
    EXIT_ERROR,
    EXIT_INFEASIBLE,
    CLIError,
    apply_gates,
    client_call,
    invalid,
    load_settings,
    parse_gates,
    read_json,
    remote_options,
)


def register(sub: Any) -> None:
    est = sub.add_parser(
        "estimate", help="predict one plan's step time, memory and cost",
        description="Evaluate the plan in FILE: the JSON body of POST /v1/estimates "
        "({model, training, cluster, plan}). Exit 2 on invalid input, 3 if it does not fit, "
        "4 if a --fail-if condition holds.")
    est.add_argument("file", metavar="FILE", help="request JSON file, or - for stdin")
    est.add_argument("--json", action="store_true", help="print the estimate as JSON")
    remote_options(est, default_timeout=120.0)
    est.set_defaults(func=cmd_estimate)

    plan = sub.add_parser(
        "plan", help="search the best plans for a job and an inventory",
        description="Search FILE: the JSON body of POST /v1/searches ({model, training, "
        "cluster, objective, constraints, top_k, time_limit_s}), in-process or on --server. "
        "Exit 0 when a plan is found, 2 on invalid input, 3 when nothing fits (the reason on "
        "stderr), 4 if a --fail-if condition holds for the best plan.")
    plan.add_argument("file", metavar="FILE", help="request JSON file, or - for stdin")
    plan.add_argument("--json", action="store_true", help="print the search result as JSON")
    plan.add_argument("--save-plans", metavar="DIR", dest="save_plans",
                      help="write each found plan as DIR/plan-RANK.json: its estimate request "
                      "({model, training, cluster, plan}), which launch, what-if and estimate "
                      "take; with several pools also each pool's best as DIR/best-POOL.json")
    remote_options(plan, default_timeout=600.0)
    plan.set_defaults(func=cmd_plan)


def cmd_estimate(args: argparse.Namespace) -> int:
    from service import gates

    checks = parse_gates(args.fail_if, gates.numeric_fields(Estimate))
    data = read_json(args.file)
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
    return apply_gates(checks, est.model_dump(mode="json"))


def cmd_plan(args: argparse.Namespace) -> int:
    from service import gates
    from solver.results import SearchResult

    checks = parse_gates(args.fail_if, gates.numeric_fields(Estimate) | {"objective_value"})
    data = read_json(args.file)
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
        requests = _stored_requests(raw, args) if args.save_plans else []
    else:
        req, result = _search_local(data)
        raw = result.model_dump(mode="json")
        requests = [req.estimate_request(p["plan"], p.get("global_batch_size"))
                    for p in raw["plans"]]
    if args.save_plans and result.plans:  # before printing: `| head` may end the command
        save_plans(Path(args.save_plans), saved_files(raw, requests))
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
    return apply_gates(checks, {**best["estimate"], "objective_value": best["objective_value"]})


def _search_local(data: Any) -> tuple[Any, Any]:
    """The parsed request and its search result."""
    import solver
    from costmodel.specs.request import parse
    from service.launch_check import framework_refusals
    from solver.request import SearchRequest

    if isinstance(data, dict) and data.get("calibration_id") is not None:
        raise invalid([("calibration_id", "stored calibrations need a server (--server URL)")])
    try:
        req = parse(SearchRequest, data)
        return req, solver.search(req, launchable=framework_refusals)
    except SpecError as exc:
        raise invalid([(p.field, p.rule) for p in exc.problems]) from None


def _stored_requests(raw: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The requests the server stored with each found plan (``GET /v1/plans/{id}``)."""
    out = []
    for p in raw.get("plans", []):
        if not p.get("id"):
            raise CLIError(EXIT_ERROR, f"meshplan: {args.server} returned plan #{p.get('rank')} "
                           "without an id: nothing to save")
        out.append(client_call(args, lambda c, i=str(p["id"]): c.plan(i))["request"])
    return out


def saved_files(raw: dict[str, Any], requests: Sequence[dict[str, Any]]
                ) -> list[tuple[str, dict[str, Any]]]:
    """What ``--save-plans`` writes: ``plan-RANK.json`` for each found plan (its request) and,
    with several pools, ``best-POOL.json`` for each pool's best plan (the same request with that
    plan, at the batch size the search chose for it), so that the comparison the table prints
    can be launched too."""
    files = [(f"plan-{p['rank']}.json", body)
             for p, body in zip(raw["plans"], requests, strict=True)]
    pools = raw.get("best_per_pool") or []
    if len(pools) > 1:
        base = requests[0]
        taken = {name for name, _ in files}
        for i, pb in enumerate(pools):
            name = f"best-{re.sub(r'[^A-Za-z0-9._-]+', '_', pb['pool'])}.json"
            if name in taken:  # two pool names that differ only in unsafe characters
                name = name.removesuffix(".json") + f"-{i}.json"
            taken.add(name)
            training = dict(base["training"])
            if pb.get("global_batch_size") is not None:
                training["global_batch_size"] = pb["global_batch_size"]
            files.append((name, {**base, "training": training, "plan": pb["plan"]}))
    return files


def save_plans(folder: Path, files: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Write ``files`` (name, estimate request) into ``folder`` and say so on stderr, with the
    commands that take them (the launch format of the job's ``training.framework``, torchrun
    without one)."""
    from runtime.launch import FRAMEWORK_FORMATS

    try:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, body in files:
            path = folder / name
            path.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
            paths.append(path)
    except OSError as exc:
        raise CLIError(EXIT_ERROR, f"meshplan: cannot write {folder}: {exc}") from None
    print(f"meshplan: wrote {', '.join(map(str, paths))}", file=sys.stderr)
    framework = files[0][1]["training"].get("framework")
    fmt = FRAMEWORK_FORMATS.get(framework, "torchrun") if framework else "torchrun"
    print(f"  next: meshplan launch --format {fmt} {paths[0]};  meshplan estimate {paths[0]}",
          file=sys.stderr)


def print_search(result: Any, out: TextIO, *, search_id: str | None = None,
                 plan_ids: Sequence[Any] = ()) -> None:
    """The ranked, explained plans of a search result."""
    from solver.explain import describe

    o = result.optimality
    if search_id:
        print(f"search {search_id}", file=out)
    unit = f" {o.unit}" if getattr(o, "unit", "") else ""
    days = (f" = {o.value_days:.2f} days" if getattr(o, "value_days", None) is not None
            else "")
    print(f"objective {o.objective}: {o.status}"
          + (f" (value {o.value:.6g}{unit}{days}, bound {o.bound:.6g}{unit}, gap {o.gap:.2%})"
             if o.value is not None and o.bound is not None and o.gap is not None else ""),
          file=out)
    for i, rp in enumerate(result.plans):
        e = rp.estimate
        ident = plan_ids[i] if i < len(plan_ids) and plan_ids[i] else None
        gbs = getattr(rp, "global_batch_size", None)
        print(f"#{rp.rank}  {describe(rp.plan)}" + (f", global batch {gbs}" if gbs else "")
              + (f"  [plan {ident}]" if ident else ""), file=out)
        print(f"    {e.tokens_per_s:,.0f} tokens/s, MFU {e.mfu:.1%}, "
              f"step {e.step_time_s:.3f} s,"
              f" peak {e.memory.peak_gib:.1f} GiB, ${e.cost_per_hour:,.2f}/hour, "
              f"${e.cost_per_million_tokens:.4f}/M tokens", file=out)
        print(f"    binding: {rp.explanation.binding_constraint}", file=out)
        if rp.explanation.vs_runner_up:
            print(f"    vs next: {rp.explanation.vs_runner_up}", file=out)
        if rp.variants:
            shown = "; ".join(f"{_variant(v)} {_value(v.objective_value, rp.objective_unit)}"
                              for v in rp.variants[:VARIANTS_SHOWN])
            more = len(rp.variants) - VARIANTS_SHOWN
            print(f"    variants: {shown}" + (f" (+{more} more in --json)" if more > 0 else ""),
                  file=out)
    pools = getattr(result, "best_per_pool", None) or []
    if len(pools) > 1:
        print("best per pool:", file=out)
        for pb in pools:
            gbs = f", global batch {pb.global_batch_size}" if pb.global_batch_size else ""
            print(f"  {describe(pb.plan)} ({pb.gpu}){gbs}", file=out)
            extra = ("" if pb.objective_unit in ("tokens/s", "$/M tokens")
                     else f", {_value(pb.objective_value, pb.objective_unit)}")
            print(f"    {pb.tokens_per_s:,.0f} tokens/s, ${pb.cost_per_million_tokens:.4f}/M "
                  f"tokens{extra}; {pb.vs_winner}", file=out)
    s = result.stats
    print(f"searched {s.candidates:,} plans ({s.fitting:,} fit), simulated {s.simulated}, "
          f"{s.elapsed_s:.2f} s", file=out)
    for k in getattr(s, "skipped_pools", None) or []:
        print(f"    pool {k.pool} not searched: {k.reason}", file=out)


VARIANTS_SHOWN = 3
"""Variants of a plan's layout listed in the table (all of them are in ``--json``)."""


def _variant(v: Any) -> str:
    """What a variant changes of its plan's layout, in :func:`solver.explain.describe`'s
    words."""
    parts = [v.schedule + (f"×{v.virtual_stages}" if v.virtual_stages > 1 else ""),
             f"ZeRO-{v.zero_stage}"]
    if v.sequence_parallel:
        parts.append("SP")
    if v.recompute_num_layers:
        parts.append(f"recompute[{v.recompute_num_layers}]")
    return " ".join(parts)


def _value(value: float, unit: str) -> str:
    """An objective value with its unit (``objective_unit``)."""
    if unit == "tokens/s":
        return f"{abs(value):,.0f} tokens/s"
    if unit == "$/M tokens":
        return f"${value:.4f}/M tokens"
    if unit == "$":
        return f"${value:,.0f}"
    return f"{value:.6g} {unit}".rstrip()


def _estimate_local(data: Any) -> Estimate:
    from service.estimates import service

    settings = load_settings()
    try:
        req = service.parse_request(data)
        return service.create_estimate(req, settings)
    except SpecError as exc:
        raise invalid([(p.field, p.rule) for p in exc.problems]) from None



def _estimate_remote(data: Any, args: argparse.Namespace) -> Estimate:
    body = client_call(args, lambda c: c.estimate(data))
    try:
        return Estimate.model_validate(body)
    except ValidationError as exc:
        raise CLIError(EXIT_ERROR, f"meshplan: unexpected answer from {args.server}: {exc}"
                       ) from None


def _search_remote(data: Any, args: argparse.Namespace) -> dict[str, Any]:
    search: dict[str, Any] = client_call(args, lambda c: c.search(data, timeout=args.timeout))
    status = search.get("status")
    if status == "succeeded" and isinstance(search.get("result"), dict):
        return search
    error = search.get("error") if isinstance(search.get("error"), dict) else {}
    assert isinstance(error, dict)
    if status == "failed" and error.get("status") == 422:
        raise invalid([(str(e.get("field")), str(e.get("rule")))
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
                 f"recompute {p.recompute_text}, ZeRO-{p.zero_stage}"),
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
