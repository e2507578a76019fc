"""The ``meshplan`` command line.

``meshplan serve`` runs the HTTP service; ``meshplan estimate FILE`` evaluates one plan
(in-process, or against ``--server URL``); ``meshplan plan FILE`` searches the best plans
(in-process); ``meshplan gpus`` and ``meshplan models`` list the catalog and the presets.

Exit codes (ARCHITECTURE.md): 0 ok, 2 invalid input (each ``field: rule`` on stderr; also an
unreadable file or malformed JSON), 3 the plan does not fit in memory (the reason on stderr),
1 anything else (the server unreachable or failing).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from pydantic import ValidationError

from costmodel.errors import SpecError
from costmodel.results import Estimate
from service import __version__
from service.errors import json_error_detail
from service.settings import Settings

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_INFEASIBLE = 0, 1, 2, 3


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

    serve = sub.add_parser("serve", help="run the HTTP service",
                           description="Run the HTTP service (settings: MESHPLAN_* variables).")
    serve.add_argument("--host", help="interface to bind (default: MESHPLAN_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: MESHPLAN_PORT or 8000)")
    serve.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"],
                       help="default: MESHPLAN_LOG_LEVEL or info")
    serve.set_defaults(func=cmd_serve)

    est = sub.add_parser(
        "estimate", help="predict one plan's step time, memory and cost",
        description="Evaluate the plan in FILE: the JSON body of POST /v1/estimates "
        "({model, training, cluster, plan}). Exit 2 on invalid input, 3 if it does not fit.")
    est.add_argument("file", metavar="FILE", help="request JSON file, or - for stdin")
    est.add_argument("--json", action="store_true", help="print the estimate as JSON")
    est.add_argument("--server", metavar="URL",
                     help="POST to a meshplan server (e.g. http://127.0.0.1:8000) instead of "
                     "evaluating in-process")
    est.add_argument("--timeout", type=float, default=120.0, metavar="S",
                     help="seconds to wait for --server (default 120)")
    est.set_defaults(func=cmd_estimate)

    plan = sub.add_parser(
        "plan", help="search the best plans for a job and an inventory",
        description="Search FILE: the JSON body of POST /v1/searches ({model, training, "
        "cluster, objective, constraints, top_k, time_limit_s}), in-process. Exit 0 when a "
        "plan is found, 2 on invalid input, 3 when nothing fits (the reason on stderr).")
    plan.add_argument("file", metavar="FILE", help="request JSON file, or - for stdin")
    plan.add_argument("--json", action="store_true", help="print the search result as JSON")
    plan.set_defaults(func=cmd_plan)

    gpus = sub.add_parser("gpus", help="list the GPU catalog")
    gpus.add_argument("--json", action="store_true", help="print the catalog as JSON")
    gpus.set_defaults(func=cmd_gpus)

    models = sub.add_parser("models", help="list the model presets")
    models.add_argument("--json", action="store_true", help="print the presets as JSON")
    models.set_defaults(func=cmd_models)
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


# ---------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from service.app import create_app

    settings = _settings(host=args.host, port=args.port, log_level=args.log_level)
    logging.basicConfig(level=settings.log_level.upper() if settings.log_level != "trace"
                        else "DEBUG", format="%(levelname)s:     %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level=settings.log_level)
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
    data = _read_json(args.file)
    est = _estimate_remote(data, args.server, args.timeout) if args.server \
        else _estimate_local(data)
    if args.json:
        json.dump(est.model_dump(mode="json"), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_estimate(est, sys.stdout)
    if not est.fits:
        for line in why_not_fits(est):
            print(line, file=sys.stderr)
        return EXIT_INFEASIBLE
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    import solver
    from solver.explain import describe

    data = _read_json(args.file)
    try:
        result = solver.search(data)
    except SpecError as exc:
        raise _invalid([(p.field, p.rule) for p in exc.problems]) from None
    if args.json:
        json.dump(result.model_dump(mode="json"), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        o = result.optimality
        print(f"objective {o.objective}: {o.status}"
              + (f" (value {o.value:.6g}, bound {o.bound:.6g}, gap {o.gap:.2%})"
                 if o.value is not None and o.bound is not None and o.gap is not None else ""))
        for rp in result.plans:
            e = rp.estimate
            print(f"#{rp.rank}  {describe(rp.plan)}")
            print(f"    {e.tokens_per_s:,.0f} tokens/s, MFU {e.mfu:.1%}, "
                  f"step {e.step_time_s:.3f} s,"
                  f" peak {e.memory.peak_gib:.1f} GiB, ${e.cost_per_hour:,.2f}/hour, "
                  f"${e.cost_per_million_tokens:.4f}/M tokens")
            print(f"    binding: {rp.explanation.binding_constraint}")
            if rp.explanation.vs_runner_up:
                print(f"    vs next: {rp.explanation.vs_runner_up}")
        s = result.stats
        print(f"searched {s.candidates:,} plans ({s.fitting:,} fit), simulated {s.simulated}, "
              f"{s.elapsed_s:.2f} s")
    if not result.plans:
        print(f"meshplan: no feasible plan: {result.infeasible_reason}", file=sys.stderr)
        return EXIT_INFEASIBLE
    return EXIT_OK


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


def _estimate_remote(data: Any, server: str, timeout: float) -> Estimate:
    import httpx

    url = server.rstrip("/") + "/v1/estimates"
    try:
        resp = httpx.post(url, json=data, timeout=timeout)
    except httpx.HTTPError as exc:
        raise CLIError(EXIT_ERROR, f"meshplan: cannot reach {url}: {exc}") from None
    try:
        body = resp.json()
    except ValueError:
        body = None
    if resp.status_code == 200 and isinstance(body, dict):
        try:
            return Estimate.model_validate(body)
        except ValidationError as exc:
            raise CLIError(EXIT_ERROR, f"meshplan: unexpected answer from {url}: {exc}"
                           ) from None
    detail = body.get("detail") if isinstance(body, dict) else None
    if resp.status_code in (400, 413, 422) and isinstance(body, dict):
        errors = body.get("errors") or []
        problems = [(str(e.get("field")), str(e.get("rule"))) for e in errors
                    if isinstance(e, dict)]
        raise _invalid(problems or [("body", str(detail or resp.reason_phrase))])
    raise CLIError(EXIT_ERROR, f"meshplan: {url} answered {resp.status_code}: "
                   f"{detail or resp.text[:200]}")


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
