"""Model specification: decoder-only transformers, dense and mixture-of-experts.

Field names are Hugging Face ``config.json`` names (the contract in ARCHITECTURE.md). A spec is
built from explicit fields, from a preset (``costmodel/data/presets.json``) or from a whole
``config.json`` dict (:func:`ModelSpec.from_hf_config`), which accepts the field names of the
families listed in :mod:`costmodel.specs.hf` (read as transformers 5.25 reads them).

Parameter counts are exact sums over the weight tensors of each architecture: GPT-2's
124,439,808, and for Megatron GPT models Narayanan et al. 2021's
``P = 12·l·h²·(1 + 13/(12h) + (V+s)/(12·l·h))`` plus the 2h of the final LayerNorm, which
that formula leaves out and Megatron's model (``final_layernorm``) has.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from costmodel.errors import ProblemCollector

GATED_ACTIVATIONS = frozenset({"silu", "swiglu", "swish", "geglu", "gelu_glu", "reglu"})
"""``hidden_act`` values whose MLP is gated (three weight matrices: gate, up, down)."""

LayerType = Literal["full_attention", "sliding_attention", "chunked_attention"]
"""Attention of one layer, Hugging Face ``layer_types`` names (``configuration_*.py`` of
transformers 5.x): full causal, sliding window (``sliding_window`` keys back, the query's own
included) or chunked (Llama 4: keys of the query's ``attention_chunk_size`` block only)."""


def _at(default: Any) -> Any:
    """``exclude_if`` of a field added after the first release: left out of a dump while at
    its default, so that stored specs, plan files and golden launch configs of the models
    that do not use it stay byte-identical."""
    return lambda v: _same(v, default)


class ModelSpec(BaseModel):
    """A decoder-only transformer. MoE and MLA fields are optional (None = dense / plain MHA)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("custom", description="Free-form name shown in plans and reports.")
    num_hidden_layers: PositiveInt = Field(le=100_000, description="Transformer blocks (HF name).")
    hidden_size: PositiveInt
    num_attention_heads: PositiveInt
    num_key_value_heads: PositiveInt | None = Field(
        None, description="GQA key/value heads; null means as many as attention heads (MHA)."
    )
    head_dim: PositiveInt | None = Field(None, description="null means hidden_size / heads.")
    intermediate_size: PositiveInt = Field(description="FFN size of the dense MLP layers.")
    vocab_size: PositiveInt
    hidden_act: str = Field("silu", description="silu/swiglu/geglu = gated MLP (3 matrices).")
    tie_word_embeddings: bool = False
    max_position_embeddings: PositiveInt | None = None
    position_embedding: Literal["rope", "learned"] = "rope"
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    attention_bias: bool = Field(False, description="Bias on the q, k, v projections.")
    attention_out_bias: bool | None = Field(
        None, description="Bias on the output projection; null = same as attention_bias."
    )
    mlp_bias: bool = False
    attention_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on attention "
                                     "probabilities (GPT-2: attn_pdrop); 0 for Llama-style.")
    hidden_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout after attention "
                                  "and MLP (GPT-2: resid_pdrop; Megatron: hidden_dropout).")
    # --- mixture of experts (Mixtral / Qwen2-MoE / DeepSeek names) ---
    num_local_experts: PositiveInt | None = Field(None, description="Routed experts per MoE layer.")
    num_experts_per_tok: PositiveInt | None = Field(None, description="Routed experts per token.")
    moe_intermediate_size: PositiveInt | None = Field(None, description="FFN size of one expert.")
    n_shared_experts: int = Field(0, ge=0, description="DeepSeek shared experts per MoE layer.")
    shared_expert_intermediate_size: PositiveInt | None = Field(
        None, description="Qwen2-MoE shared expert FFN size (one shared expert of this size)."
    )
    first_k_dense_replace: int = Field(0, ge=0, description="Leading dense layers (DeepSeek).")
    router_bias: bool = Field(False, description="Per-expert routing bias (DeepSeek-V3's "
                              "e_score_correction_bias, topk_method noaux_tc).")
    moe_layer_freq: PositiveInt = Field(
        1, description="Every n-th layer after the dense ones is MoE.")
    # --- multi-head latent attention (DeepSeek-V2/V3) ---
    q_lora_rank: PositiveInt | None = None
    kv_lora_rank: PositiveInt | None = None
    qk_nope_head_dim: PositiveInt | None = None
    qk_rope_head_dim: PositiveInt | None = None
    v_head_dim: PositiveInt | None = None
    # --- added for Hugging Face import (issue 14); left out of dumps at their defaults ---
    mlp_gated: bool | None = Field(
        None, exclude_if=_at(None),
        description="Gated MLP whatever hidden_act says (Gemma: GeGLU with gelu_pytorch_tanh); "
        "null = gated when hidden_act is a gated name.")
    norms_per_layer: int = Field(
        2, exclude_if=_at(2), ge=0, le=8,
        description="hidden_size-wide norms per block: 2 (pre-attention, pre-MLP); Gemma-2/3 4 "
        "(+ post-attention, post-feedforward); OLMo-2 2 (post-attention, post-feedforward).")
    qk_norm: Literal["none", "head", "width"] = Field(
        "none", exclude_if=_at("none"),
        description="RMSNorm on queries and keys: per head over head_dim (Qwen3, Gemma-3), over "
        "the whole projection width (OLMo-2); weightless ones (Llama 4) count as none.")
    attention_sinks: bool = Field(
        False, exclude_if=_at(False), description="A learned sink logit per head (gpt-oss).")
    moe_layers: tuple[int, ...] | None = Field(
        None, exclude_if=_at(None),
        description="Indices of the MoE layers (Llama 4 name); null = the "
        "first_k_dense_replace / moe_layer_freq rule.")
    sliding_window: PositiveInt | None = Field(
        None, exclude_if=_at(None),
        description="Keys a sliding-window layer attends to, its own included (Mistral, "
        "Gemma-2/3, Phi-3, gpt-oss).")
    attention_chunk_size: PositiveInt | None = Field(
        None, exclude_if=_at(None),
        description="Block size of chunked attention layers (Llama 4).")
    layer_types: tuple[LayerType, ...] | None = Field(
        None, exclude_if=_at(None),
        description="Attention per layer (HF name); null = every layer sliding when "
        "sliding_window is set (Mistral), else full.")
    notes: tuple[str, ...] = Field(
        (), exclude_if=_at(()),
        description="What an import left out (a vision tower, MTP layers); shown as warnings "
        "with every estimate.")

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        self.check()
        return self

    # ------------------------------------------------------------------ validation
    def check(self, prefix: str = "model") -> None:
        """Raise :class:`SpecError` for architectural inconsistencies (field + rule)."""
        c = ProblemCollector()
        a, g = self.num_attention_heads, self.kv_heads
        c.check(a % g == 0, f"{prefix}.num_key_value_heads",
                f"num_attention_heads={a} must be divisible by num_key_value_heads={g}")
        if self.head_dim is None and not self.uses_mla:
            c.check(self.hidden_size % a == 0, f"{prefix}.hidden_size",
                    f"hidden_size={self.hidden_size} must be divisible by "
                    f"num_attention_heads={a} (or give head_dim)")
        moe_fields = (self.num_local_experts, self.num_experts_per_tok)
        if any(v is not None for v in moe_fields):
            c.check(all(v is not None for v in moe_fields), f"{prefix}.num_experts_per_tok",
                    "an MoE model needs both num_local_experts and num_experts_per_tok")
            if self.num_local_experts and self.num_experts_per_tok:
                c.check(self.num_experts_per_tok <= self.num_local_experts,
                        f"{prefix}.num_experts_per_tok",
                        f"num_experts_per_tok={self.num_experts_per_tok} must be <= "
                        f"num_local_experts={self.num_local_experts}")
        c.check(self.first_k_dense_replace <= self.num_hidden_layers,
                f"{prefix}.first_k_dense_replace",
                f"first_k_dense_replace={self.first_k_dense_replace} exceeds "
                f"num_hidden_layers={self.num_hidden_layers}")
        mla = (self.kv_lora_rank, self.qk_nope_head_dim, self.qk_rope_head_dim, self.v_head_dim)
        if any(v is not None for v in mla):
            c.check(all(v is not None for v in mla), f"{prefix}.kv_lora_rank",
                    "multi-head latent attention needs kv_lora_rank, qk_nope_head_dim, "
                    "qk_rope_head_dim and v_head_dim together")
        if self.position_embedding == "learned":
            c.check(self.max_position_embeddings is not None,
                    f"{prefix}.max_position_embeddings",
                    "learned position embeddings need max_position_embeddings")
        if self.moe_layers is not None:
            c.check(self.is_moe, f"{prefix}.moe_layers", "moe_layers needs num_local_experts")
            c.check(all(0 <= i < self.num_hidden_layers for i in self.moe_layers),
                    f"{prefix}.moe_layers",
                    f"every index must lie in [0, num_hidden_layers={self.num_hidden_layers})")
        if self.layer_types is not None:
            n = len(self.layer_types)
            c.check(n == self.num_hidden_layers, f"{prefix}.layer_types",
                    f"{n} entries for num_hidden_layers={self.num_hidden_layers}")
            if "sliding_attention" in self.layer_types:
                c.check(self.sliding_window is not None, f"{prefix}.sliding_window",
                        "sliding_attention layers need sliding_window")
            if "chunked_attention" in self.layer_types:
                c.check(self.attention_chunk_size is not None,
                        f"{prefix}.attention_chunk_size",
                        "chunked_attention layers need attention_chunk_size")
        c.raise_if_any()

    # ------------------------------------------------------------------ derived shape
    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def head_size(self) -> int:
        """Per-head size of q and k (without the MLA rope part) — ``head_dim`` or h/a."""
        if self.head_dim is not None:
            return self.head_dim
        return self.hidden_size // self.num_attention_heads

    @property
    def gated_mlp(self) -> bool:
        if self.mlp_gated is not None:
            return self.mlp_gated
        return self.hidden_act.lower() in GATED_ACTIVATIONS

    @property
    def uses_mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def is_moe(self) -> bool:
        return self.num_local_experts is not None

    @property
    def moe_layer_mask(self) -> tuple[bool, ...]:
        """Per layer: True where the FFN is a mixture of experts (DeepSeek/Qwen2-MoE rule)."""
        return _moe_mask(self.num_hidden_layers, self.is_moe, self.first_k_dense_replace,
                         self.moe_layer_freq, self.moe_layers)

    @property
    def num_moe_layers(self) -> int:
        return sum(self.moe_layer_mask)

    @property
    def num_dense_layers(self) -> int:
        return self.num_hidden_layers - self.num_moe_layers

    @property
    def expert_ffn(self) -> int:
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def q_width(self) -> int:
        """Total width of the query projection output (all heads)."""
        if self.uses_mla:
            assert self.qk_nope_head_dim is not None and self.qk_rope_head_dim is not None
            return self.num_attention_heads * (self.qk_nope_head_dim + self.qk_rope_head_dim)
        return self.num_attention_heads * self.head_size

    @property
    def v_width(self) -> int:
        """Total width of the attention value / output-projection input (all heads)."""
        if self.uses_mla:
            assert self.v_head_dim is not None
            return self.num_attention_heads * self.v_head_dim
        return self.num_attention_heads * self.head_size

    # ------------------------------------------------------------------ attention pattern
    def layer_type(self, layer: int) -> LayerType:
        """Attention of layer ``layer`` (``layer_types``; without it every layer is sliding
        when ``sliding_window`` is set, as Mistral's ``MistralAttention`` does)."""
        if self.layer_types is not None:
            return self.layer_types[layer]
        return "sliding_attention" if self.sliding_window is not None else "full_attention"

    def attended_keys(self, layer: int, seq_len: int) -> int:
        """Query-key pairs layer ``layer`` scores over one causal sequence of ``seq_len``:
        full ``s(s+1)/2``; sliding window w: ``Σ_p min(p, w)`` (transformers'
        ``sliding_window_causal_mask_function``: key kept when ``q − k < w``); chunked C:
        ``Σ_p ((p−1) mod C) + 1`` (``chunked_causal_mask_function``), p = 1..s."""
        s = seq_len
        kind = self.layer_type(layer)
        if kind == "sliding_attention":
            assert self.sliding_window is not None
            w = self.sliding_window
            return s * (s + 1) // 2 if w >= s else w * (w + 1) // 2 + (s - w) * w
        if kind == "chunked_attention":
            assert self.attention_chunk_size is not None
            c = self.attention_chunk_size
            full, r = divmod(s, c)
            return full * c * (c + 1) // 2 + r * (r + 1) // 2
        return s * (s + 1) // 2

    def attention_fraction(self, seq_len: int, moe: bool | None = None) -> float:
        """Mean over layers (of one kind: ``moe`` True/False; None = all) of the attended
        pairs relative to full causal attention: 1.0 without sliding or chunked layers. The
        estimator costs a kind of block once, so a stage whose mix of local and global
        layers differs from the model's gets the model's mean (exact for whole-model totals
        and for stages of whole periods: Gemma-2 pairs, Gemma-3 sixes)."""
        layers = [i for i, m in enumerate(self.moe_layer_mask) if moe is None or m == moe]
        if not layers or (self.layer_types is None and self.sliding_window is None):
            return 1.0
        full = seq_len * (seq_len + 1) // 2
        return sum(self.attended_keys(i, seq_len) for i in layers) / (len(layers) * full)

    # ------------------------------------------------------------------ parameter counts
    def _norm_params(self) -> int:
        return self.hidden_size * (2 if self.norm == "layernorm" else 1)

    def _block_norm_params(self) -> int:
        """The hidden-width norms of one block (``norms_per_layer`` of them)."""
        return self.norms_per_layer * self._norm_params()

    def attention_params(self) -> int:
        """Weights (and biases) of one attention block, without its norm."""
        h = self.hidden_size
        out_bias = (self.attention_bias if self.attention_out_bias is None
                    else self.attention_out_bias)
        if self.uses_mla:
            # DeepSeek-V2 §2.1.2: q = W_UQ·norm(W_DQ·x), [k_nope, v] = W_UKV·norm(W_DKV·x),
            # k_rope = W_KR·x (shared across heads), o = W_O·attn.
            assert self.kv_lora_rank is not None and self.qk_rope_head_dim is not None
            a = self.num_attention_heads
            qk_nope = self.q_width // a - self.qk_rope_head_dim
            if self.q_lora_rank:
                q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * self.q_width
            else:
                q = h * self.q_width
            kv_down = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
            kv_up = self.kv_lora_rank * a * (qk_nope + self.v_width // a)
            return q + kv_down + kv_up + self.v_width * h
        kv = 2 * self.kv_heads * self.head_size
        qkv = h * (self.q_width + kv) + ((self.q_width + kv) if self.attention_bias else 0)
        # q/k norms: Qwen3Attention / Gemma3Attention RMSNorm(head_dim) ×2; Olmo2Attention
        # RMSNorm(heads·head_dim) and RMSNorm(kv_heads·head_dim) (transformers 5.x)
        qk_norm = {"none": 0, "head": 2 * self.head_size,
                   "width": self.q_width + self.kv_heads * self.head_size}[self.qk_norm]
        # GptOssAttention.sinks: one learned logit per head
        sinks = self.num_attention_heads if self.attention_sinks else 0
        return qkv + self.v_width * h + (h if out_bias else 0) + qk_norm + sinks

    def attention_params_matmul(self) -> int:
        """Weights of the attention block's GEMMs (no biases, no norms): FLOPs/2 per token."""
        h = self.hidden_size
        if self.uses_mla:
            assert self.kv_lora_rank is not None and self.qk_rope_head_dim is not None
            a = self.num_attention_heads
            qk_nope = self.q_width // a - self.qk_rope_head_dim
            q = (h * self.q_lora_rank + self.q_lora_rank * self.q_width if self.q_lora_rank
                 else h * self.q_width)
            kv = (h * (self.kv_lora_rank + self.qk_rope_head_dim)
                  + self.kv_lora_rank * a * (qk_nope + self.v_width // a))
            return q + kv + self.v_width * h
        return h * (self.q_width + 2 * self.kv_heads * self.head_size) + self.v_width * h

    def mlp_params(self, ffn: int) -> int:
        """One MLP of inner size ``ffn`` (gated: gate+up+down; else up+down), with biases."""
        h = self.hidden_size
        n_in = 2 if self.gated_mlp else 1
        w = (n_in + 1) * h * ffn
        b = (n_in * ffn + h) if self.mlp_bias else 0
        return w + b

    def moe_params(self) -> tuple[int, int]:
        """(total, active-per-token) parameters of one MoE FFN: routed + shared experts + router."""
        assert self.num_local_experts is not None and self.num_experts_per_tok is not None
        expert = self.mlp_params(self.expert_ffn)
        router = self.hidden_size * self.num_local_experts
        if self.router_bias:
            router += self.num_local_experts
        shared = self.n_shared_experts * expert
        if self.shared_expert_intermediate_size:
            # Qwen2-MoE: one shared expert of its own size plus a sigmoid gate (hidden -> 1).
            shared += self.mlp_params(self.shared_expert_intermediate_size) + self.hidden_size
        total = self.num_local_experts * expert + shared + router
        active = self.num_experts_per_tok * expert + shared + router
        return total, active

    def block_param_split(self) -> tuple[int, int, int]:
        """(dense block, MoE block without its routed experts, routed experts of an MoE block)
        parameters — the three kinds that shard differently (routed experts also over ep)."""
        base = self.attention_params() + self._block_norm_params()
        dense = base + self.mlp_params(self.intermediate_size)
        if not self.is_moe:
            return dense, 0, 0
        assert self.num_local_experts is not None
        total, _ = self.moe_params()
        routed = self.num_local_experts * self.mlp_params(self.expert_ffn)
        return dense, base + total - routed, routed

    def layer_params(self, layer: int) -> tuple[int, int]:
        """(total, active) parameters of layer ``layer`` (attention + FFN + its norms)."""
        base = self.attention_params() + self._block_norm_params()
        if self.moe_layer_mask[layer]:
            total, active = self.moe_params()
            return base + total, base + active
        dense = self.mlp_params(self.intermediate_size)
        return base + dense, base + dense

    def embedding_params(self) -> int:
        """Input embedding (+ learned positions)."""
        pos = self.max_position_embeddings or 0
        pos_params = pos * self.hidden_size if self.position_embedding == "learned" else 0
        return self.vocab_size * self.hidden_size + pos_params

    def output_params(self) -> int:
        """Final norm + LM head (0 head weights when tied to the input embedding)."""
        head = 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size
        return self._norm_params() + head

    @property
    def _totals(self) -> tuple[int, int]:
        total = active = self.embedding_params() + self.output_params()
        # layers come in at most two kinds; count each kind once
        n_moe = self.num_moe_layers
        n_dense = self.num_hidden_layers - n_moe
        if n_dense:
            t, a = self.layer_params(self.moe_layer_mask.index(False))
            total += n_dense * t
            active += n_dense * a
        if n_moe:
            t, a = self.layer_params(self.moe_layer_mask.index(True))
            total += n_moe * t
            active += n_moe * a
        return total, active

    def num_params(self) -> int:
        """All parameters (tied embeddings counted once)."""
        return self._totals[0]

    def num_active_params(self) -> int:
        """Parameters a token passes through (routed experts: only the top-k)."""
        return self._totals[1]

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_hf_config(cls, cfg: dict[str, Any], name: str | None = None) -> ModelSpec:
        """Build a spec from a Hugging Face ``config.json`` dict as published, read as
        transformers reads it: :func:`costmodel.specs.hf.from_hf_config` (the families, their
        rules and sources are listed there). Unknown keys are ignored; missing required ones
        and anything meshplan cannot model raise :class:`SpecError` naming the config field."""
        from costmodel.specs.hf import from_hf_config

        return from_hf_config(cfg, name)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    return bool(a == b) and type(a) is type(b)


@lru_cache(maxsize=256)
def _moe_mask(layers: int, moe: bool, first_dense: int, freq: int,
              explicit: tuple[int, ...] | None = None) -> tuple[bool, ...]:
    """Which layers are MoE: the ``explicit`` indices (``moe_layers``) when given, else after
    ``first_dense`` dense layers every ``freq``-th (``first_k_dense_replace`` /
    ``moe_layer_freq``). :func:`costmodel.specs.hf.from_hf_config` turns each family's own
    rule into ``moe_layers`` where it differs. Memoised on the values, not the (copyable)
    spec, so a copied spec cannot see stale data."""
    if not moe:
        return tuple(False for _ in range(layers))
    if explicit is not None:
        chosen = set(explicit)
        return tuple(i in chosen for i in range(layers))
    return tuple(i >= first_dense and (i - first_dense) % freq == 0 for i in range(layers))
