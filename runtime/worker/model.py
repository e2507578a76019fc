"""A GPT/Llama-style decoder built from a :class:`~costmodel.specs.model.ModelSpec`.

The module layout follows the operation inventory the cost model times for one block
(``costmodel/layer_cost.py``, after Megatron-LM's ``TransformerLayer``): norm → one fused QKV
GEMM → core attention (``scaled_dot_product_attention``, causal, GQA) → output projection →
residual → norm → one fused MLP-in GEMM (gate and up together when gated) → activation → MLP
down → residual. Fusing QKV and gate/up as Megatron-Core does keeps the GEMM count equal to
the model's, which matters where per-kernel time counts (small models, CPUs).

Both fused weights are laid out per tensor-parallel rank of the plan (``tp``, known when the
model is built), so that the contiguous split of their output rows ``ColwiseParallel`` makes
hands rank r exactly ``[q_r; k_r; v_r]`` (its query heads and their key/value heads; tp must
divide ``num_key_value_heads``) and ``[gate_r; up_r]``. Each rank then separates them with one
``split``/``chunk`` of contiguous column blocks (a view; its backward is one concatenation),
not with strided slices whose backward zero-fills and scatters — cheap on a GPU, costly per
kernel on a CPU. With random initialisation any fixed row order is the same model.

The parameter count equals :meth:`ModelSpec.num_params` for the same config (tested).
The model is split for pipeline parallelism the torchtitan way: a stage is the same class with
the parts it does not own deleted (``embed`` only on the first stage, ``norm``/``lm_head`` only
on the last), so :func:`split_for_stage` needs no tracing.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from costmodel.specs.model import GATED_ACTIVATIONS, ModelSpec

INIT_STD = 0.02
"""Normal init of GPT-2 / Megatron (``init_method_std``); the value does not affect timing."""


def check_supported(spec: ModelSpec) -> list[str]:
    """Reasons the worker cannot build this model (empty = supported)."""
    out = []
    if spec.is_moe:
        out.append("model: mixture-of-experts models are not built by the runtime worker")
    if spec.uses_mla:
        out.append("model: multi-head latent attention (kv_lora_rank) is not built by the "
                   "runtime worker")
    if spec.norms_per_layer != 2 or spec.qk_norm != "none":
        out.append("model: extra norms (norms_per_layer, qk_norm: Gemma-2/3, OLMo-2, Qwen3) "
                   "are not built by the runtime worker")
    if spec.attention_sinks:
        out.append("model: attention sinks (gpt-oss) are not built by the runtime worker")
    if spec.sliding_window is not None or spec.layer_types is not None:
        out.append("model: sliding-window / chunked attention layers are not built by the "
                   "runtime worker (it runs full causal attention)")
    return out


def _activation(name: str) -> tuple[bool, object]:
    """(gated, elementwise function) for a Hugging Face ``hidden_act`` name."""
    n = name.lower()
    gated = n in GATED_ACTIVATIONS
    if n in ("silu", "swiglu", "swish"):
        return gated, F.silu
    if n in ("relu", "reglu"):
        return gated, F.relu
    if n in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        return gated, lambda x: F.gelu(x, approximate="tanh")
    return gated, F.gelu  # gelu, geglu, gelu_glu and anything else GELU-like


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec, tp: int = 1) -> None:
        super().__init__()
        a, g, d = spec.num_attention_heads, spec.kv_heads, spec.head_size
        if a % tp or g % tp:
            raise ValueError(f"tp={tp} must divide num_attention_heads={a} and "
                             f"num_key_value_heads={g}")
        self.q_per_group = a // g
        self.heads = a // tp
        """Query heads computed on one tensor-parallel rank."""
        self.kv_heads = g // tp
        self.head_dim = d
        self.dropout = spec.attention_dropout
        self.selective_recompute = False
        """Recompute the core attention in backward (Korthikanti et al. 2022 §5)."""
        out_bias = spec.attention_bias if spec.attention_out_bias is None \
            else spec.attention_out_bias
        self.qkv = nn.Linear(spec.hidden_size, (a + 2 * g) * d, bias=spec.attention_bias)
        self.out = nn.Linear(a * d, spec.hidden_size, bias=out_bias)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None
                ) -> torch.Tensor:
        b, s, _ = x.shape
        d, hq, hkv = self.head_dim, self.heads, self.kv_heads
        q, k, v = self.qkv(x).split([hq * d, hkv * d, hkv * d], dim=-1)
        q = q.view(b, s, hq, d).transpose(1, 2)
        k = k.view(b, s, hkv, d).transpose(1, 2)
        v = v.view(b, s, hkv, d).transpose(1, 2)
        if rope is not None:
            q, k = _apply_rope(q, rope), _apply_rope(k, rope)
        if self.selective_recompute and self.training:
            o = checkpoint(self._core, q, k, v, use_reentrant=False)
        else:
            o = self._core(q, k, v)
        return self.out(o.transpose(1, 2).reshape(b, s, hq * d))


    def _core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(
            q, k, v, is_causal=True, enable_gqa=self.q_per_group > 1,
            dropout_p=self.dropout if self.training else 0.0)


def _per_rank_rows(w: torch.Tensor, parts: list[int], tp: int) -> torch.Tensor:
    """Rows of a fused weight in canonical order (``parts`` one after another: q, k, v or
    gate, up) reordered for ``tp`` ranks: rank r's slice of every part, then rank r+1's."""
    if tp == 1:
        return w
    pieces = [c.chunk(tp, dim=0) for c in w.split(parts, dim=0)]
    return torch.cat([piece[r] for r in range(tp) for piece in pieces], dim=0)


def rope_tables(seq_len: int, head_dim: int, device: torch.device | str = "cpu"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles, base 10000 (Su et al. 2021), [seq_len, head_dim]."""
    inv = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    ang = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv)
    ang = torch.cat((ang, ang), dim=-1)
    return ang.cos().to(device), ang.sin().to(device)


def _apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotary embedding (Su et al. 2021) in the rotate-half form of Hugging Face Llama."""
    cos, sin = rope
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        gated, self.act = _activation(spec.hidden_act)
        self.gated = spec.gated_mlp if spec.mlp_gated is not None else gated
        f, h = spec.intermediate_size, spec.hidden_size
        self.fc1 = nn.Linear(h, (2 if self.gated else 1) * f, bias=spec.mlp_bias)
        self.fc2 = nn.Linear(f, h, bias=spec.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc1(x)
        if self.gated:
            gate, up = y.chunk(2, dim=-1)
            y = self.act(gate) * up  # type: ignore[operator]
        else:
            y = self.act(y)  # type: ignore[operator]
        return self.fc2(y)


def _norm(spec: ModelSpec) -> nn.Module:
    if spec.norm == "layernorm":
        return nn.LayerNorm(spec.hidden_size)
    return nn.RMSNorm(spec.hidden_size, eps=1e-5)


class Block(nn.Module):
    """One transformer block (pre-norm)."""

    def __init__(self, spec: ModelSpec, tp: int = 1) -> None:
        super().__init__()
        self.attn_norm = _norm(spec)
        self.attn = Attention(spec, tp)
        self.mlp_norm = _norm(spec)
        self.mlp = MLP(spec)
        self.drop = nn.Dropout(spec.hidden_dropout) if spec.hidden_dropout > 0 else None

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> torch.Tensor:
        y = self.attn(self.attn_norm(x), rope)
        x = x + (self.drop(y) if self.drop is not None else y)
        y = self.mlp(self.mlp_norm(x))
        return x + (self.drop(y) if self.drop is not None else y)


class Transformer(nn.Module):
    """Embedding, blocks, final norm and LM head; any of them may be absent in a pipeline
    stage (see :func:`split_for_stage`)."""

    def __init__(self, spec: ModelSpec, seq_len: int, tp: int = 1) -> None:
        super().__init__()
        self.spec = spec
        self.seq_len = seq_len
        self.tp = tp
        h = spec.hidden_size
        self.embed: nn.Embedding | None = nn.Embedding(spec.vocab_size, h)
        self.pos: nn.Embedding | None = None
        if spec.position_embedding == "learned":
            assert spec.max_position_embeddings is not None
            self.pos = nn.Embedding(spec.max_position_embeddings, h)
        self.layers = nn.ModuleDict({str(i): Block(spec, tp)
                                     for i in range(spec.num_hidden_layers)})
        self.norm: nn.Module | None = _norm(spec)
        self.lm_head: nn.Linear | None = nn.Linear(h, spec.vocab_size, bias=False)
        if spec.tie_word_embeddings:
            self.lm_head.weight = self.embed.weight
        self.recompute = "none"
        """none | selective | full (see :func:`set_recompute`)."""
        self.recompute_layers: int | None = None
        """With ``full``: checkpoint only the first this many blocks the model holds (a
        pipeline stage's, once split); None = every block."""
        self.rope_cos: torch.Tensor
        self.rope_sin: torch.Tensor
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        """Deterministic init (same on every rank, so replicas and shards agree), and the
        rotary tables for ``seq_len``."""
        for name, p in self.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
                continue
            # seeded by the parameter's global name: a pipeline stage, a tensor-parallel
            # layout and the whole model hold the same weights, so every layout of a plan
            # computes the same function (tested)
            gen = torch.Generator(device="cpu").manual_seed(seed + zlib.crc32(name.encode()))
            w = torch.randn(p.shape, generator=gen) * INIT_STD
            if name.endswith("attn.qkv.weight"):
                w = self._qkv_rows(w)
            elif name.endswith("mlp.fc1.weight") and self.spec.gated_mlp:
                w = _per_rank_rows(w, [self.spec.intermediate_size] * 2, self.tp)
            p.copy_(w)
        if self.spec.position_embedding == "rope":
            dev = next(iter(self.buffers())).device
            self.rope_cos, self.rope_sin = rope_tables(self.seq_len, self.spec.head_size, dev)

    def _qkv_rows(self, w: torch.Tensor) -> torch.Tensor:
        d = self.spec.head_size
        return _per_rank_rows(w, [self.spec.num_attention_heads * d, self.spec.kv_heads * d,
                                  self.spec.kv_heads * d], self.tp)

    def _rope(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.spec.position_embedding != "rope":
            return None
        return self.rope_cos.to(dtype), self.rope_sin.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is not None:
            tokens = x
            x = self.embed(tokens)
            if self.pos is not None:
                x = x + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        rope = self._rope(x.dtype)
        for i, layer in enumerate(self.layers.values()):
            if (self.recompute == "full" and self.training
                    and (self.recompute_layers is None or i < self.recompute_layers)):
                x = checkpoint(layer, x, rope, use_reentrant=False)
            else:
                x = layer(x, rope)
        if self.norm is not None:
            x = self.norm(x)
        if self.lm_head is not None:
            x = self.lm_head(x)
        return x


def build_model(spec: ModelSpec, seq_len: int, tp: int = 1,
                device: torch.device | str = "meta") -> Transformer:
    """The whole model (fused weights laid out for ``tp`` ranks), by default on the meta device
    (no memory) so that a pipeline stage or a shard can be cut out before anything is
    allocated; materialise with :func:`materialize`."""
    problems = check_supported(spec)
    if problems:
        raise ValueError("; ".join(problems))
    with torch.device(device):
        return Transformer(spec, seq_len, tp)


def set_recompute(model: Transformer, mode: str, num_layers: int | None = None) -> None:
    """Activation recomputation as the plan's ``recompute`` says: ``full`` checkpoints every
    block (only its input is kept), or with ``num_layers`` (``plan.recompute_num_layers``) the
    first that many blocks of the stage, as Megatron's ``--recompute-method block`` does;
    ``selective`` the core attention only."""
    model.recompute = mode
    model.recompute_layers = num_layers if mode == "full" else None
    for block in model.layers.values():
        block.attn.selective_recompute = mode == "selective"  # type: ignore[union-attr]


def materialize(model: Transformer, device: torch.device, dtype: torch.dtype,
                seed: int = 0) -> Transformer:
    """Allocate ``model`` on ``device`` in ``dtype`` and initialise it."""
    model.to_empty(device=device)
    model.init_weights(seed)
    return model.to(dtype)


def split_for_stage(model: Transformer, layers: Sequence[int], first: bool, last: bool
                    ) -> Transformer:
    """Keep the blocks numbered ``layers`` (global indices), the embedding when ``first``, the
    final norm and LM head when ``last``; delete the rest (in place)."""
    keep = {str(i) for i in layers}
    for name in list(model.layers.keys()):
        if name not in keep:
            del model.layers[name]
    if not first:
        model.embed = None
        model.pos = None
    if not last:
        model.norm = None
        model.lm_head = None
    return model


def layer_ranges(layers_per_stage: Sequence[int]) -> list[range]:
    """Global block indices of every stage, stages in model order."""
    out, start = [], 0
    for n in layers_per_stage:
        out.append(range(start, start + n))
        start += n
    return out


def num_params(model: nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def causal_lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over all positions (targets already shifted)."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(0, 1))
