"""``meshplan-runtime calibrate | run`` (also ``python -m runtime``).

Run under ``torchrun`` (one process per device; NCCL on GPUs) or, on a CPU, with
``--nproc N`` to start N local gloo processes without torchrun. Importing this module does not
import torch; each command imports the worker when it starts and says which extra to install
when torch is missing.

Exit codes: 0 ok, 1 the server could not be reached (or torch is missing), 2 invalid input
(each broken rule printed as ``field: rule``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from costmodel.errors import SpecError

EXIT_OK, EXIT_SERVER, EXIT_INPUT = 0, 1, 2


def _ints(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip().upper()
        if not part:
            continue
        mult = 1
        for suffix, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)):
            if part.endswith(suffix):
                part, mult = part[:-1], m
        try:
            value = int(part) * mult
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated positive "
                                             "integers (K/M/G suffixes allowed)") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: values must be positive")
        out.append(value)
    return out


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return v


def _nonneg(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be >= 0")
    return v


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meshplan-runtime", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--nproc", type=_positive, default=None,
                        help="start N local processes (gloo on a CPU) instead of torchrun")
        sp.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CUDA when present, else the CPU")
        sp.add_argument("--threads", type=_positive, default=None,
                        help="torch intra-op threads per process (default: OMP_NUM_THREADS, "
                        "or 1 per process with --nproc on a CPU)")
        sp.add_argument("--server", default=None, help="meshplan service URL")
        sp.add_argument("--nice", type=int, default=None, metavar="N",
                        help="change the worker processes' scheduling priority by N (e.g. -10 "
                        "on a shared host so that foreign load disturbs the timings less; "
                        "negative values need CAP_SYS_NICE)")

    c = sub.add_parser("calibrate", help="measure the local devices into a calibration profile")
    common(c)
    c.add_argument("--out", default=None, help="write the profile JSON here (default: stdout)")
    c.add_argument("--name", default=None, help="profile name")
    c.add_argument("--gpu", default=None,
                   help="catalog GPU name to record (default: detected from the device name)")
    c.add_argument("--gemm-m", type=_ints, default=None, help="GEMM rows, e.g. 128,512")
    c.add_argument("--gemm-n", type=_ints, default=None, help="GEMM output columns")
    c.add_argument("--gemm-k", type=_ints, default=None, help="GEMM inner dimension")
    c.add_argument("--attn-seq", type=_ints, default=None, help="attention sequence lengths")
    c.add_argument("--attn-batch-heads", type=_ints, default=None,
                   help="attention batch x heads")
    c.add_argument("--head-dim", type=_positive, default=64)
    c.add_argument("--coll-sizes", type=_ints, default=None,
                   help="collective message sizes in bytes, e.g. 4K,64K,1M,16M")
    c.add_argument("--block", action="append", default=[], metavar="HxFxAxGxSxB",
                   help="time a transformer block of hidden H, ffn F, A heads, G KV heads, "
                   "sequence S, micro-batch B (repeatable); at tp 1 and tp = world size")
    c.add_argument("--hidden-act", default="silu", help="activation of the --block shapes")
    c.add_argument("--copy-mib", type=_positive, default=None,
                   help="size of the memory-bandwidth copy")
    c.add_argument("--reps", type=_positive, default=5, help="timed repetitions per point")

    r = sub.add_parser("run", help="run a plan's layout and report measured vs predicted")
    common(r)
    r.add_argument("plans", nargs="+", help="runtime plan JSON (GET /v1/plans/{id}/launch/"
                   "runtime) or an estimate request; several run one after another")
    r.add_argument("--calibration", default=None,
                   help="calibration profile JSON of this machine (for the prediction)")
    r.add_argument("--calibration-id", default=None,
                   help="fetch the calibration profile from --server by id")
    r.add_argument("--plan-id", default=None, help="POST the report to --server "
                   "/v1/plans/{id}/runs (one plan only)")
    for opt, what in (("layers", "num_hidden_layers"), ("hidden", "hidden_size"),
                      ("heads", "num_attention_heads"), ("kv-heads", "num_key_value_heads"),
                      ("ffn", "intermediate_size"), ("vocab", "vocab_size"),
                      ("seq", "training.seq_len"), ("global-batch", "training.global_batch_size")):
        r.add_argument(f"--{opt}", type=_positive, default=None,
                       help=f"scale the plan down: {what}")
    r.add_argument("--steps", type=_positive, default=5, help="measured steps")
    r.add_argument("--warmup", type=_nonneg, default=2, help="steps run before measuring")
    r.add_argument("--schedule-csv", default=None,
                   help="pipeline schedule CSV (torch _Action strings per rank) to run instead "
                   "of the plan's schedule")
    r.add_argument("--seed", type=_nonneg, default=0)
    r.add_argument("--json", action="store_true", help="print the RunReport JSON")
    r.add_argument("--out", default=None, help="also write the reports (JSON list) here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print(f"meshplan-runtime {args.command} needs torch, the 'runtime' extra: "
              "pip install 'meshplan[runtime]' (on a GPU node install the CUDA build of torch "
              "first)", file=sys.stderr)
        return EXIT_SERVER
    try:
        if args.command == "calibrate":
            return _calibrate(args, argv)
        return _run(args)
    except SpecError as exc:
        for prob in exc.problems:
            print(f"{prob.field}: {prob.rule}", file=sys.stderr)
        return EXIT_INPUT
    except _InputError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INPUT
    except _ServerError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_SERVER


class _InputError(Exception):
    pass


class _ServerError(Exception):
    pass


def _launch(nproc: int | None, target: Any, opts: Any, threads: int | None,
            nice: int | None = None) -> Any:
    """Run ``target(opts)`` on every rank: in this process (torchrun, or one process), or in
    ``nproc`` spawned local processes; returns rank 0's result (None on other ranks)."""
    if nproc is None:
        if threads is None and "OMP_NUM_THREADS" in os.environ:
            opts.threads = int(os.environ["OMP_NUM_THREADS"])
        warning = wdist_renice(nice)
        if warning and _rank() == 0:
            print(warning, file=sys.stderr)
        return target(opts)
    from runtime.worker import dist as wdist

    if opts.threads is None:
        opts.threads = 1
    os.environ.setdefault("OMP_NUM_THREADS", str(opts.threads))
    with tempfile.TemporaryDirectory(prefix="meshplan-runtime-") as tmp:
        opts.result_path = str(Path(tmp) / "result.json")
        try:
            wdist.spawn(nproc, target, opts, nice=nice)
        except Exception as exc:  # a rank failed: its traceback is already on stderr
            raise _InputError(f"a worker process failed: {_first_line(exc)}") from None
        return json.loads(Path(opts.result_path).read_text())


def wdist_renice(nice: int | None) -> str | None:
    from runtime.worker.dist import renice

    return renice(nice)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    lines = [t for t in text if t.strip() and not t.startswith(" ")]
    return lines[-1] if lines else type(exc).__name__


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


# ------------------------------------------------------------------ calibrate
def _calibrate(args: argparse.Namespace, argv: list[str] | None) -> int:
    from runtime.worker.calibrate import BlockShape, CalibrateOptions, worker_main

    try:
        blocks = [BlockShape.parse(b) for b in args.block]
    except ValueError as exc:
        raise _InputError(str(exc)) from None
    opts = CalibrateOptions(
        name=args.name, gpu=args.gpu, gemm_m=args.gemm_m or [], gemm_n=args.gemm_n or [],
        gemm_k=args.gemm_k or [], attn_seq=args.attn_seq or [],
        attn_batch_heads=args.attn_batch_heads or [], head_dim=args.head_dim,
        coll_bytes=args.coll_sizes or [], blocks=blocks, hidden_act=args.hidden_act,
        copy_mib=args.copy_mib, reps=args.reps, device=args.device, threads=args.threads,
        argv=["meshplan-runtime", *(argv if argv is not None else sys.argv[1:])])
    if args.gpu is not None:
        from costmodel.specs.gpus import canonical_gpu_name

        try:
            opts.gpu = canonical_gpu_name(args.gpu)
        except ValueError as exc:
            raise _InputError(f"--gpu: {exc}") from None
    prof = _launch(args.nproc, worker_main, opts, args.threads, args.nice)
    if prof is None:  # not rank 0
        return EXIT_OK
    text = json.dumps(prof, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    print(_calibration_summary(prof, args.out), file=sys.stderr)
    if args.server:
        from runtime.http import ServiceError, post_calibration

        try:
            ans = post_calibration(args.server, prof)
        except ServiceError as exc:
            raise _ServerError(str(exc)) from None
        print(f"stored as calibration {ans.get('id')} ({ans.get('name')}, {ans.get('gpu')})",
              file=sys.stderr)
    return EXIT_OK


def _calibration_summary(prof: dict[str, Any], out: str | None) -> str:
    m = prof["measurements"]
    lines = [f"calibration {prof['name']!r} of {prof.get('gpu')}"
             + (f" -> {out}" if out else "")]
    if prof.get("device"):
        d = prof["device"]
        peak = ", ".join(f"{k} {v:.3f}" for k, v in d["peak_tflops"].items())
        lines.append(f"  device {d['name']}: peak {peak} TFLOP/s, memory {d['hbm_GBps']:.1f} "
                     f"GB/s, link {d['intra_node_GBps']:.2f} GB/s")
        arch = (prof.get("efficiency") or {}).get("archs", {}).get(d["arch"])
        if arch:
            lines.append(f"  per-kernel time {arch['kernel_latency_us']:.2f} us (fitted)")
    if m.get("gemm"):
        rates = [g["tflops"] for g in m["gemm"]]
        lines.append(f"  GEMM {len(rates)} shapes: {min(rates) * 1e3:.1f}-{max(rates) * 1e3:.1f}"
                     " GFLOP/s")
    by: dict[str, list[dict[str, Any]]] = {}
    for c in m.get("collectives", []):
        by.setdefault(c["collective"], []).append(c)
    for coll, pts in by.items():
        big = max(pts, key=lambda c: c["bytes"])
        lines.append(f"  {coll}: busbw {big['busbw_GBps']:.2f} GB/s at {big['bytes']} B over "
                     f"{big['group_size']} ranks")
    for ly in m.get("layers", []):
        lines.append(f"  block h={ly['hidden_size']} s={ly['seq_len']} b="
                     f"{ly['micro_batch_size']} tp={ly['tp']}: fwd {ly['fwd_s'] * 1e3:.2f} ms, "
                     f"bwd {ly['bwd_s'] * 1e3:.2f} ms")
    return "\n".join(lines)


# ------------------------------------------------------------------ run
def _run(args: argparse.Namespace) -> int:
    from runtime.worker.run_plan import RunOptions, check_layout, prepare, worker_main

    if args.plan_id and len(args.plans) != 1:
        raise _InputError("--plan-id: give exactly one plan")
    if args.plan_id and not args.server:
        raise _InputError("--plan-id needs --server")
    if args.calibration_id and not args.server:
        raise _InputError("--calibration-id needs --server")
    for path in [*args.plans, *([args.schedule_csv] if args.schedule_csv else [])]:
        if path != "-" and not Path(path).is_file():
            raise _InputError(f"{path}: no such file")
    calibration = None
    if args.calibration:
        if not Path(args.calibration).is_file():
            raise _InputError(f"--calibration {args.calibration}: no such file")
        from costmodel.profile import load_profile

        try:
            calibration = load_profile(Path(args.calibration).read_text()).model_dump(
                mode="json")
        except (ValueError, json.JSONDecodeError) as exc:
            raise _InputError(f"--calibration {args.calibration}: {_first_line(exc)}") from None
    elif args.calibration_id:
        from runtime.http import ServiceError, get_calibration

        try:
            calibration = get_calibration(args.server, args.calibration_id)
        except ServiceError as exc:
            raise _ServerError(str(exc)) from None
    overrides = {"layers": args.layers, "hidden": args.hidden, "heads": args.heads,
                 "kv_heads": args.kv_heads, "ffn": args.ffn, "vocab": args.vocab,
                 "seq": args.seq, "global_batch": args.global_batch}
    opts = RunOptions(plans=list(args.plans), overrides=overrides, steps=args.steps,
                      warmup=args.warmup, calibration=calibration,
                      schedule_csv=args.schedule_csv, device=args.device, threads=args.threads,
                      seed=args.seed)
    world = args.nproc or int(os.environ.get("WORLD_SIZE", "1"))
    problems = check_layout(prepare(opts), world)  # before any process starts
    if problems:
        raise _InputError("\n".join(problems))
    reports = _launch(args.nproc, worker_main, opts, args.threads, args.nice)
    if reports is None:
        return EXIT_OK
    if args.out:
        Path(args.out).write_text(json.dumps(reports, indent=2) + "\n")
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    else:
        print(format_table(reports))
    if args.server and args.plan_id:
        from runtime.http import ServiceError, post_run

        try:
            post_run(args.server, args.plan_id, reports[0])
        except ServiceError as exc:
            raise _ServerError(str(exc)) from None
        print(f"posted to {args.server.rstrip('/')}/v1/plans/{args.plan_id}/runs",
              file=sys.stderr)
    return EXIT_OK


def format_table(reports: list[dict[str, Any]]) -> str:
    """Measured against predicted, one line per plan."""
    head = (f"{'plan':<24} {'steps':>5} {'measured s':>11} {'predicted s':>12} {'error':>8} "
            f"{'ops-only s':>11} {'error':>8}  step times s")
    lines = [head, "-" * len(head)]
    for r in reports:
        m, p = r["measured"], r.get("predicted")
        name = Path(r["environment"].get("plan_file") or "?").name
        meas = m["step_time_s"]
        pred = err = ops = ops_err = "-"
        if p:
            pred, err = f"{p['step_time_s']:.4f}", f"{(p['step_time_s'] - meas) / meas:+.1%}"
            o = p.get("step_time_without_block_measurements_s")
            if o:
                ops, ops_err = f"{o:.4f}", f"{(o - meas) / meas:+.1%}"
        times = " ".join(f"{t:.3f}" for t in m["step_times_s"])
        lines.append(f"{name:<24} {r['steps']:>5} {meas:>11.4f} {pred:>12} {err:>8} {ops:>11} "
                     f"{ops_err:>8}  {times}")
    lines.append("ops-only: the same prediction without the profile's measured blocks (GEMM, "
                 "attention, memory and collective measurements only)")
    return "\n".join(lines)
