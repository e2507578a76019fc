"""Rejection of inconsistent input by ``costmodel.estimate``: a SpecError naming the dotted
field of the request and the rule (costmodel/errors.py; ARCHITECTURE.md: 422 with a field path,
CLI exit 2), with every problem of a request collected at once.

Rules and their sources (costmodel/specs/request.py::check_plan cites them): heads divisible by
KV heads (GQA groups, Ainslie et al. 2023); heads and FFN divisible by tp (Megatron
``ColumnParallelLinear`` divide()); hidden = heads × head_dim (HF configs without head_dim);
pp ≤ layers; global batch divisible by dp × micro-batch (Megatron/torchtitan); 1F1B needs at
least pp micro-batches (torch.distributed.pipelining Schedule1F1B.__init__).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

import costmodel
from costmodel import SpecError

SMALL_MODEL = {"name": "tiny", "num_hidden_layers": 4, "hidden_size": 512,
               "num_attention_heads": 8, "num_key_value_heads": 8,
               "intermediate_size": 2048, "vocab_size": 1000}
BASE: dict[str, Any] = {
    "model": SMALL_MODEL,
    "training": {"global_batch_size": 8, "seq_len": 128},
    "cluster": {"pools": [{"name": "h100", "gpu": "H100", "gpus_per_node": 8, "nodes": 1,
                           "price_per_gpu_hour": 2.0}]},
    "plan": {"pool": "h100", "tp": 1, "pp": 1, "dp": 1},
}



def errors_of(mutate: Callable[[dict[str, Any]], None]) -> SpecError:
    body = copy.deepcopy(BASE)
    mutate(body)
    with pytest.raises(SpecError) as exc:
        costmodel.estimate(body)
    return exc.value


def fields(err: SpecError) -> list[str]:
    return [p.field for p in err.problems]


def test_base_request_is_valid() -> None:
    """The mutations below each break one rule of this valid request."""
    e = costmodel.estimate(copy.deepcopy(BASE))
    assert e.step_time_s > 0
    assert e.num_gpus == 1


# ---------------------------------------------------------------- model architecture
def test_heads_not_divisible_by_kv_heads_reports_the_rule() -> None:
    err = errors_of(lambda b: b["model"].update(num_key_value_heads=3))
    assert "num_attention_heads=8 must be divisible by num_key_value_heads=3" in str(err)


def test_heads_not_divisible_by_kv_heads_names_the_field() -> None:
    err = errors_of(lambda b: b["model"].update(num_key_value_heads=3))
    assert err.field == "model.num_key_value_heads"
    assert "divisible by num_key_value_heads" in err.rule


def test_hidden_not_divisible_by_heads_reports_the_rule() -> None:
    err = errors_of(lambda b: b["model"].update(hidden_size=500))
    assert "hidden_size=500 must be divisible by num_attention_heads=8" in str(err)


def test_hidden_not_divisible_by_heads_names_the_field() -> None:
    err = errors_of(lambda b: b["model"].update(hidden_size=500))
    assert err.field == "model.hidden_size"
    assert "divisible by num_attention_heads" in err.rule


def test_model_problems_are_collected_as_separate_problems() -> None:
    err = errors_of(lambda b: b["model"].update(num_key_value_heads=3, hidden_size=500))
    assert fields(err) == ["model.num_key_value_heads", "model.hidden_size"]


def test_model_problems_are_all_reported_at_once() -> None:
    """Both broken architecture rules appear in one answer."""
    err = errors_of(lambda b: b["model"].update(num_key_value_heads=3, hidden_size=500))
    assert "num_key_value_heads=3" in str(err)
    assert "hidden_size=500" in str(err)


@pytest.mark.parametrize(("key", "value"), [("hidden_size", 0), ("num_hidden_layers", -1),
                                            ("vocab_size", 0), ("intermediate_size", -4)])
def test_non_positive_model_sizes(key: str, value: int) -> None:
    err = errors_of(lambda b: b["model"].update({key: value}))
    assert err.field == f"model.{key}"
    assert "greater than 0" in err.rule


def test_unknown_preset() -> None:
    err = errors_of(lambda b: b.update(model={"preset": "llama9-1t"}))
    assert err.field == "model"
    assert "unknown model preset 'llama9-1t'" in err.rule
    assert "llama3-70b" in err.rule  # lists the known presets


# ---------------------------------------------------------------- plan
def test_heads_not_divisible_by_tp() -> None:
    err = errors_of(lambda b: b["plan"].update(tp=3))
    assert err.field == "plan.tp"
    assert "num_attention_heads=8 must be divisible by tp=3" in err.rule
    # the FFN rule is reported in the same answer
    assert any("intermediate_size=2048 must be divisible by tp=3" in p.rule
               for p in err.problems if p.field == "plan.tp")


def test_pp_greater_than_layers() -> None:
    err = errors_of(lambda b: b["plan"].update(pp=5))
    assert err.field == "plan.pp"
    assert "pp=5 exceeds num_hidden_layers=4" in err.rule


@pytest.mark.parametrize(("dp", "mbs"), [(3, 1), (2, 3), (1, 16)])
def test_global_batch_not_divisible_by_dp_times_microbatch(dp: int, mbs: int) -> None:
    err = errors_of(lambda b: b["plan"].update(dp=dp, micro_batch_size=mbs))
    assert "training.global_batch_size" in fields(err)
    rule = next(p.rule for p in err.problems if p.field == "training.global_batch_size")
    assert f"divisible by dp × micro_batch_size = {dp} × {mbs}" in rule


def test_layers_per_stage_must_sum_to_layers() -> None:
    err = errors_of(lambda b: b["plan"].update(pp=2, layers_per_stage=[1, 2]))
    assert err.field == "plan.layers_per_stage"
    assert "sum to 3 but num_hidden_layers=4" in err.rule


def test_layers_per_stage_needs_one_entry_per_stage() -> None:
    err = errors_of(lambda b: b["plan"].update(pp=2, layers_per_stage=[4]))
    assert err.field == "plan.layers_per_stage"
    assert "2 entries" in err.rule


def test_unknown_gpu() -> None:
    err = errors_of(lambda b: b["cluster"]["pools"][0].update(gpu="Z100"))
    assert err.field == "cluster.pools.0.gpu"
    assert "unknown GPU 'Z100'" in err.rule
    assert "H100-SXM-80GB" in err.rule  # lists the catalog


@pytest.mark.parametrize(("key", "value"), [("tp", 0), ("pp", 0), ("dp", -1), ("cp", 0),
                                            ("micro_batch_size", 0)])
def test_non_positive_plan_degrees(key: str, value: int) -> None:
    err = errors_of(lambda b: b["plan"].update({key: value}))
    assert err.field == f"plan.{key}"
    assert "greater than 0" in err.rule


def test_non_positive_training_sizes() -> None:
    err = errors_of(lambda b: b["training"].update(global_batch_size=0, seq_len=-5))
    assert fields(err) == ["training.global_batch_size", "training.seq_len"]


def test_unknown_pool_name() -> None:
    err = errors_of(lambda b: b["plan"].update(pool="a100"))
    assert err.field == "plan.pool"
    assert "unknown pool 'a100'" in err.rule


def test_several_pools_need_a_pool_name() -> None:
    def two_pools(b: dict[str, Any]) -> None:
        b["cluster"]["pools"].append({"name": "a100", "gpu": "A100", "nodes": 1})
        b["plan"]["pool"] = None
    err = errors_of(two_pools)
    assert err.field == "plan.pool"
    assert "several pools" in err.rule


def test_1f1b_needs_at_least_pp_microbatches() -> None:
    """torch.distributed.pipelining Schedule1F1B: n_microbatches >= number of stages. With
    gbs 8, dp 1, mbs 4 there are 2 micro-batches for pp 4; the simulator's rule surfaces as
    the request field the micro-batch count comes from."""
    err = errors_of(lambda b: b["plan"].update(pp=4, schedule="1F1B", micro_batch_size=4))
    assert err.field == "training.global_batch_size"
    assert "n_microbatches=2 must be >= pp=4" in err.rule


def test_gpipe_accepts_fewer_microbatches_than_stages() -> None:
    """GPipe has no such rule (all forwards, then all backwards)."""
    body = copy.deepcopy(BASE)
    body["plan"].update(pp=4, schedule="GPipe", micro_batch_size=4)
    assert costmodel.estimate(body).pipeline.num_microbatches == 2


def test_plan_problems_are_collected_at_once() -> None:
    """tp 3, pp 5 and dp 3 break five rules; one SpecError lists them all, in request order."""
    err = errors_of(lambda b: b["plan"].update(tp=3, pp=5, dp=3))
    got = fields(err)
    for f in ("plan.tp", "plan.pp", "training.global_batch_size", "plan"):
        assert f in got
    assert len(err.problems) >= 5
    assert str(err).count(";") == len(err.problems) - 1


def test_sequence_parallel_with_tp_1_is_not_an_error() -> None:
    """Megatron-LM disables sequence parallelism at tp 1 with a warning; so does the estimate
    (no longer a 422)."""
    body = copy.deepcopy(BASE)
    body["plan"].update(sequence_parallel=True, tp=1)
    est = costmodel.estimate(body)
    assert est.plan.sequence_parallel is False
    assert any("sequence_parallel" in w for w in est.warnings)


def test_too_many_gpus_for_the_pool() -> None:
    def sixteen_way_dp(b: dict[str, Any]) -> None:
        b["plan"]["dp"] = 16
        b["training"]["global_batch_size"] = 16
    err = errors_of(sixteen_way_dp)
    assert err.field == "plan"
    assert "16 GPUs exceed pool 'h100' with 8" in err.rule


def test_spec_error_str_lists_field_and_rule() -> None:
    err = errors_of(lambda b: b["plan"].update(pool="a100"))
    assert str(err).startswith("plan.pool: unknown pool")
