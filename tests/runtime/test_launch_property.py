"""Property: for any valid plan, every format either renders a config that passes the
framework's own rules (framework_rules) or refuses with a LaunchError — never anything else."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from costmodel.errors import SpecError
from runtime.launch import FORMATS, LaunchError, render
from runtime.launch.base import prepare
from tests.runtime.framework_rules import check_deepspeed, check_megatron, check_torchtitan

CHECKS = {"torchtitan": check_torchtitan, "megatron": check_megatron,
          "deepspeed": check_deepspeed}
MODELS = ["llama3-8b", "llama3-70b", "mixtral-8x7b", "mistral-7b", "megatron-gpt-1.7b"]
SCHEDULES = ["GPipe", "1F1B", "Interleaved1F1B", "InterleavedZeroBubble", "ZBVZeroBubble",
             "DualPipeV"]


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    model = draw(st.sampled_from(MODELS))
    tp = draw(st.sampled_from([1, 1, 2, 4, 8, 16]))
    pp = draw(st.sampled_from([1, 2, 3, 4, 8]))
    dp = draw(st.sampled_from([1, 2, 3, 4, 8]))
    cp = draw(st.sampled_from([1, 1, 1, 2, 4]))
    ep = draw(st.sampled_from([1, 1, 2, 4, 8])) if model == "mixtral-8x7b" else 1
    mbs = draw(st.sampled_from([1, 2]))
    schedule = draw(st.sampled_from(SCHEDULES))
    vp = {"GPipe": 1, "1F1B": 1, "ZBVZeroBubble": 2, "DualPipeV": 2}.get(
        schedule, draw(st.sampled_from([1, 2, 3, 4])))
    if draw(st.booleans()):  # half the draws in the shape a plain ds_config can express
        tp, cp, schedule, vp = 1, 1, draw(st.sampled_from(["GPipe", "1F1B"])), 1
    plan: dict[str, Any] = {
        "tp": tp, "pp": pp, "dp": dp, "cp": cp, "ep": ep, "micro_batch_size": mbs,
        "schedule": schedule, "virtual_stages": vp,
        "recompute": draw(st.sampled_from(["none", "selective", "full"])),
        "sequence_parallel": tp > 1 and draw(st.booleans()),
        "zero_stage": draw(st.integers(0, 3)),
        "overlap_grad_reduce": draw(st.booleans()),
        "overlap_param_gather": draw(st.booleans()),
        # rarer features (every framework refuses some): one draw in ten
        "tp_comm_overlap": draw(st.sampled_from([False] * 9 + [True])),
        "activation_offload": draw(st.sampled_from([0.0] * 9 + [0.5])),
        "vocab_placement": draw(st.sampled_from(["end_stages"] * 9 + ["split"])),
        "attention": draw(st.sampled_from(["flash", "unfused"])),
    }
    layers = {"llama3-8b": 32, "llama3-70b": 80, "mixtral-8x7b": 32, "mistral-7b": 32,
              "megatron-gpt-1.7b": 24}[model]
    stages = pp * vp
    if draw(st.booleans()) and stages <= layers:  # an explicit split near the even one
        base = [layers // stages] * stages
        for i in range(layers - sum(base)):
            base[i % stages] += 1
        moves = draw(st.lists(st.tuples(st.integers(0, stages - 1), st.integers(0, stages - 1)),
                              max_size=3))
        for a, b in moves:
            if base[a] > 1:
                base[a] -= 1
                base[b] += 1
        plan["layers_per_stage"] = base
    gbs = dp * mbs * draw(st.sampled_from([1, 2, 3, 4, 8, 16, 32]))
    seq = draw(st.sampled_from([2048, 4096, 4096 + 2 * 8, 8192]))
    nodes = -(-(tp * pp * dp * cp) // 8)
    return {"model": {"preset": model},
            "training": {"global_batch_size": gbs, "seq_len": seq,
                         "precision": draw(st.sampled_from(["bf16"] * 6 + ["fp16", "fp8"]))},
            "cluster": {"pools": [{"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8,
                                   "nodes": max(1, nodes)}]},
            "plan": plan}


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(requests())
def test_every_format_renders_a_valid_config_or_refuses(request: dict[str, Any]) -> None:
    try:
        prepare(request)
    except SpecError:
        assume(False)
    for fmt in FORMATS:
        try:
            cfg = render(fmt, request)
        except LaunchError as exc:
            assert exc.problems and all(p.field and p.rule for p in exc.problems)
            event(f"{fmt}: refused")
            continue
        event(f"{fmt}: rendered")
        assert cfg.format == fmt and cfg.content
        check = CHECKS.get(fmt)
        if check is not None:
            assert check(cfg, request) == [], fmt
