"""The worker's model builder (runtime.worker.model): the parameter count equals the cost
model's ModelSpec count for the same config (Llama/GQA, GPT-2 with learned positions,
LayerNorm, biases and tied embeddings, a non-gated MLP), pipeline stages partition the
parameters, and the tensor-parallel row layout of the fused weights is a permutation of the
canonical one (so every layout holds the same model).
"""

from __future__ import annotations

import pytest

from costmodel.specs.model import ModelSpec

torch = pytest.importorskip("torch")

from runtime.worker.model import (  # noqa: E402
    build_model,
    causal_lm_loss,
    layer_ranges,
    materialize,
    num_params,
    split_for_stage,
)

CONFIGS = {
    "llama-gqa": ModelSpec(num_hidden_layers=3, hidden_size=256, num_attention_heads=8,
                           num_key_value_heads=2, intermediate_size=688, vocab_size=1000),
    "llama-head-dim": ModelSpec(num_hidden_layers=2, hidden_size=256, num_attention_heads=4,
                                num_key_value_heads=4, head_dim=96, intermediate_size=512,
                                vocab_size=512, attention_bias=True),
    "gpt2-style": ModelSpec.from_hf_config({
        "model_type": "gpt2", "n_layer": 2, "n_embd": 128, "n_head": 4, "vocab_size": 777,
        "n_positions": 256}),
    "mlp-relu-untied": ModelSpec(num_hidden_layers=2, hidden_size=128, num_attention_heads=4,
                                 intermediate_size=512, vocab_size=300, hidden_act="relu",
                                 norm="layernorm", mlp_bias=True),
    "tied-llama": ModelSpec(num_hidden_layers=2, hidden_size=128, num_attention_heads=4,
                            intermediate_size=384, vocab_size=300, tie_word_embeddings=True),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_count_equals_model_spec(name: str) -> None:
    spec = CONFIGS[name]
    model = build_model(spec, seq_len=64)  # meta device: no memory
    assert num_params(model) == spec.num_params()


def test_stages_partition_the_parameters() -> None:
    """Checks: the stages of a 1-3-2 split hold, together, exactly the model's parameters
    (embedding only on the first, norm and head only on the last)."""
    spec = CONFIGS["llama-gqa"].model_copy(update={"num_hidden_layers": 6})
    ranges = layer_ranges([1, 3, 2])
    total = 0
    for i, r in enumerate(ranges):
        stage = split_for_stage(build_model(spec, 64), list(r), first=i == 0,
                                last=i == len(ranges) - 1)
        assert sorted(stage.layers.keys(), key=int) == [str(j) for j in r]
        assert (stage.embed is not None) == (i == 0)
        assert (stage.lm_head is not None) == (i == len(ranges) - 1)
        total += num_params(stage)
    assert total == spec.num_params()


def test_tensor_parallel_rows_permute_the_canonical_weights() -> None:
    """Checks: the fused QKV and gate/up weights of a model laid out for tp = 2 hold the same
    rows as the tp = 1 model's, rank 0's half being [q₀; k₀; v₀] and [gate₀; up₀]."""
    spec = CONFIGS["llama-gqa"]
    one = materialize(build_model(spec, 64, tp=1), torch.device("cpu"), torch.float32)
    two = materialize(build_model(spec, 64, tp=2), torch.device("cpu"), torch.float32)
    w1 = one.layers["0"].attn.qkv.weight
    w2 = two.layers["0"].attn.qkv.weight
    d, a, g = spec.head_size, spec.num_attention_heads, spec.kv_heads
    q, k, v = w1.split([a * d, g * d, g * d])
    half = torch.cat([q[: a * d // 2], k[: g * d // 2], v[: g * d // 2]])
    assert torch.equal(w2[: w2.shape[0] // 2], half)
    f = spec.intermediate_size
    gate, up = one.layers["1"].mlp.fc1.weight.split([f, f])
    assert torch.equal(two.layers["1"].mlp.fc1.weight[:f],
                       torch.cat([gate[: f // 2], up[: f // 2]]))
    assert torch.equal(one.lm_head.weight, two.lm_head.weight)


def test_forward_backward_on_cpu() -> None:
    """Checks: one training step of a tiny model gives a finite loss near ln(V) and
    gradients on every parameter."""
    spec = CONFIGS["gpt2-style"].model_copy(update={"hidden_dropout": 0.0,
                                                    "attention_dropout": 0.0})
    model = materialize(build_model(spec, 32), torch.device("cpu"), torch.float32)
    x = torch.randint(0, spec.vocab_size, (2, 32))
    loss = causal_lm_loss(model(x), torch.randint(0, spec.vocab_size, (2, 32)))
    loss.backward()
    assert abs(loss.item() - float(torch.log(torch.tensor(float(spec.vocab_size))))) < 0.5
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("num_layers,want", [(None, [2, 2, 2]), (1, [2, 1, 1]),
                                             (2, [2, 2, 1]), (5, [2, 2, 2])])
def test_partial_recompute_reruns_only_the_first_blocks_of_the_stage(
        num_layers: int | None, want: list[int]) -> None:
    """Checks: with recompute 'full' and recompute_num_layers N the first N blocks of a stage
    run their forward again in the backward (checkpointed), the others once (Megatron's
    block method); null = every block; the gradients equal those without recompute."""
    from runtime.worker.model import set_recompute

    spec = CONFIGS["llama-gqa"]
    grads = []
    for mode, n in (("none", None), ("full", num_layers)):
        model = materialize(build_model(spec, seq_len=16), torch.device("cpu"), torch.float32)
        set_recompute(model, mode, n)
        model.train()
        calls = [0] * spec.num_hidden_layers
        for i, block in enumerate(model.layers.values()):
            # a pre-hook: torch's recompute stops early, before a block's forward returns
            block.register_forward_pre_hook(lambda *_, i=i, c=calls: c.__setitem__(i, c[i] + 1))
        tokens = torch.randint(0, spec.vocab_size, (2, 16), generator=torch.Generator()
                               .manual_seed(0))
        causal_lm_loss(model(tokens), tokens).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        if mode == "full":
            assert calls == want
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
