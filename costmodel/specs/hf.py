"""Hugging Face ``config.json`` → :class:`ModelSpec`, read as transformers reads it.

Every rule names the transformers file it follows; all refer to transformers **5.25.0**
(``src/transformers/models/<type>/configuration_<type>.py`` for defaults and derived fields,
``modeling_<type>.py`` for the weights a layer has). The oracle is
``tests/costmodel/test_hf_transformers.py``: each fixture in ``tests/costmodel/hf_configs/``
is built with transformers on the meta device and its parameter count compared with ours.

A key absent from a config takes the default of that family's config class, as
``AutoConfig.for_model`` does (:data:`FAMILY_DEFAULTS`, copied from the dataclass defaults of
5.25.0). A wrapper config (``text_config`` inside: Gemma-3, Llama-4, Mistral-3, LLaVA-style)
is read as its text model; what is left out is said in :attr:`ModelSpec.notes`. What meshplan
cannot model raises :class:`SpecError` naming the config field (HTTP 422).
"""

from __future__ import annotations

from typing import Any

from costmodel.errors import FieldProblem, SpecError, problem
from costmodel.specs.model import ModelSpec

P = "model.hf_config"

FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    # dataclass defaults of configuration_<type>.py, transformers 5.25.0 (structural keys only)
    "llama": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008,
              "num_hidden_layers": 32, "num_attention_heads": 32, "hidden_act": "silu",
              "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False},
    "mistral": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "hidden_act": "silu", "tie_word_embeddings": False, "sliding_window": 4096},
    "mixtral": {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 14336,
                "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                "hidden_act": "silu", "tie_word_embeddings": False, "sliding_window": None,
                "num_experts_per_tok": 2, "num_local_experts": 8},
    "qwen2": {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
              "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
              "hidden_act": "silu", "tie_word_embeddings": False, "use_sliding_window": False,
              "sliding_window": 4096, "max_window_layers": 28},
    "qwen2_moe": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 5632,
                  "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
                  "hidden_act": "silu", "tie_word_embeddings": False,
                  "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 28,
                  "decoder_sparse_step": 1, "moe_intermediate_size": 1408,
                  "shared_expert_intermediate_size": 5632, "num_experts_per_tok": 4,
                  "num_experts": 60, "qkv_bias": True},
    "qwen3": {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016,
              "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
              "head_dim": 128, "hidden_act": "silu", "tie_word_embeddings": False,
              "attention_bias": False, "use_sliding_window": False, "sliding_window": 4096,
              "max_window_layers": 28},
    "qwen3_moe": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
                  "num_hidden_layers": 24, "num_attention_heads": 32, "num_key_value_heads": 4,
                  "hidden_act": "silu", "tie_word_embeddings": False, "attention_bias": False,
                  "use_sliding_window": False, "sliding_window": 4096,
                  "decoder_sparse_step": 1, "moe_intermediate_size": 768,
                  "num_experts_per_tok": 8, "num_experts": 128},
    "deepseek_v2": {"vocab_size": 102400, "hidden_size": 4096, "intermediate_size": 11008,
                    "num_hidden_layers": 32, "num_attention_heads": 32, "hidden_act": "silu",
                    "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
                    "first_k_dense_replace": 0, "kv_lora_rank": 512, "q_lora_rank": 1536,
                    "n_routed_experts": 64, "n_shared_experts": 2, "qk_nope_head_dim": 128,
                    "qk_rope_head_dim": 64, "topk_method": "greedy", "v_head_dim": 128,
                    "moe_intermediate_size": 1407},
    "deepseek_v3": {"vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
                    "moe_intermediate_size": 2048, "num_hidden_layers": 61,
                    "num_attention_heads": 128, "num_key_value_heads": 128,
                    "n_shared_experts": 1, "n_routed_experts": 256, "kv_lora_rank": 512,
                    "q_lora_rank": 1536, "qk_rope_head_dim": 64, "v_head_dim": 128,
                    "qk_nope_head_dim": 128, "num_experts_per_tok": 8,
                    "first_k_dense_replace": 3, "hidden_act": "silu",
                    "tie_word_embeddings": False, "attention_bias": False},
    "gemma": {"vocab_size": 256000, "hidden_size": 3072, "intermediate_size": 24576,
              "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 16,
              "head_dim": 256, "hidden_act": "gelu_pytorch_tanh", "tie_word_embeddings": True,
              "attention_bias": False},
    "gemma2": {"vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216,
               "num_hidden_layers": 26, "num_attention_heads": 8, "num_key_value_heads": 4,
               "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
               "tie_word_embeddings": True, "attention_bias": False, "sliding_window": 4096},
    "gemma3_text": {"vocab_size": 262208, "hidden_size": 2304, "intermediate_size": 9216,
                    "num_hidden_layers": 26, "num_attention_heads": 8,
                    "num_key_value_heads": 4, "head_dim": 256,
                    "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True,
                    "attention_bias": False, "sliding_window": 4096,
                    "sliding_window_pattern": 6},
    "phi3": {"vocab_size": 32064, "hidden_size": 3072, "intermediate_size": 8192,
             "num_hidden_layers": 32, "num_attention_heads": 32, "hidden_act": "silu",
             "tie_word_embeddings": False, "sliding_window": None},
    "olmo2": {"vocab_size": 50304, "hidden_size": 4096, "intermediate_size": 11008,
              "num_hidden_layers": 32, "num_attention_heads": 32, "hidden_act": "silu",
              "tie_word_embeddings": False, "attention_bias": False},
    "llama4_text": {"vocab_size": 202048, "hidden_size": 5120, "intermediate_size": 8192,
                    "intermediate_size_mlp": 16384, "num_hidden_layers": 48,
                    "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
                    "hidden_act": "silu", "tie_word_embeddings": False,
                    "num_experts_per_tok": 1, "num_local_experts": 16,
                    "interleave_moe_layer_step": 1, "no_rope_layer_interval": 4,
                    "attention_chunk_size": 8192, "attention_bias": False},
    "gpt_oss": {"num_hidden_layers": 36, "num_local_experts": 128, "vocab_size": 201088,
                "hidden_size": 2880, "intermediate_size": 2880, "head_dim": 64,
                "num_attention_heads": 64, "num_key_value_heads": 8, "sliding_window": 128,
                "tie_word_embeddings": False, "hidden_act": "silu", "num_experts_per_tok": 4,
                "attention_bias": True},
}

TEXT_TYPE_OF_WRAPPER = {
    # the text_config model_type each wrapper's config class defaults to (5.25.0
    # configuration_gemma3.py Gemma3Config, configuration_llama4.py Llama4Config,
    # configuration_mistral3.py / configuration_llava.py: a Mistral / Llama text model)
    "gemma3": "gemma3_text", "llama4": "llama4_text", "mistral3": "mistral", "llava": "llama",
}

NOT_A_DECODER = frozenset({
    # state-space, hybrid or linear-attention layers, and encoder(-decoder) models: their
    # blocks are not the transformer block meshplan costs
    "mamba", "mamba2", "falcon_mamba", "jamba", "bamba", "zamba", "zamba2", "falcon_h1",
    "granitemoehybrid", "qwen3_next", "recurrent_gemma", "rwkv", "lfm2", "lfm2_moe",
    "minimax", "kimi_linear", "t5", "mt5", "umt5", "bart", "mbart", "bert", "roberta",
    "whisper", "gemma3n",
})

REQUIRED = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
            "vocab_size")
_LIST_KEYS = frozenset({"layer_types", "mlp_only_layers", "moe_layers", "no_rope_layers",
                        "eos_token_id", "architectures"})
_SCALAR_KEYS = (
    "n_layer", "n_embd", "n_head", "n_inner", "n_positions", "vocab_size",
    "activation_function", "attn_pdrop", "resid_pdrop", "num_hidden_layers", "hidden_size",
    "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
    "max_position_embeddings", "hidden_act", "hidden_activation", "tie_word_embeddings",
    "attention_bias", "qkv_bias", "mlp_bias", "attention_dropout", "hidden_dropout",
    "num_local_experts", "n_routed_experts", "num_experts", "num_experts_per_tok",
    "moe_intermediate_size", "n_shared_experts", "shared_expert_intermediate_size",
    "first_k_dense_replace", "moe_layer_freq", "decoder_sparse_step", "q_lora_rank",
    "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "topk_method",
    "model_type", "sliding_window", "use_sliding_window", "max_window_layers",
    "sliding_window_pattern", "intermediate_size_mlp", "interleave_moe_layer_step",
    "attention_chunk_size", "no_rope_layer_interval", "use_bidirectional_attention",
    "num_nextn_predict_layers")


def from_hf_config(cfg: Any, name: str | None = None) -> ModelSpec:
    """See the module docstring; :meth:`ModelSpec.from_hf_config` is this function."""
    if not isinstance(cfg, dict):
        raise problem(P, "must be a JSON object (a config.json)")
    notes: list[str] = []
    prefix = P
    top_type = str(cfg.get("model_type", "")).lower()
    label = name or cfg.get("_name_or_path") or top_type or "hf-model"
    if "text_config" in cfg:
        text = cfg["text_config"]
        if not isinstance(text, dict):
            raise problem(f"{P}.text_config", "must be a JSON object (the text model's config)")
        text = dict(text)
        text.setdefault("model_type", TEXT_TYPE_OF_WRAPPER.get(top_type, ""))
        if "tie_word_embeddings" not in text and "tie_word_embeddings" in cfg:
            text["tie_word_embeddings"] = cfg["tie_word_embeddings"]
        vision = cfg.get("vision_config")
        vtype = vision.get("model_type", "vision") if isinstance(vision, dict) else None
        left_out = (f"the {vtype} vision tower and the multimodal projector" if vtype
                    else "everything outside text_config")
        notes.append(f"{top_type or 'wrapper'} config: counted the text model (text_config, "
                     f"{text.get('model_type') or 'llama-style'}); {left_out} not modelled")
        cfg, prefix = text, f"{P}.text_config"
    mtype = str(cfg.get("model_type", "")).lower()
    if mtype in NOT_A_DECODER:
        raise problem(f"{prefix}.model_type", f"model_type {mtype!r} is not a decoder-only "
                      "transformer (state-space, hybrid or encoder layers): meshplan cannot "
                      "model it")
    bad = [k for k in _SCALAR_KEYS if isinstance(cfg.get(k), dict | list)]
    bad += [k for k in _LIST_KEYS if k in cfg and cfg[k] is not None
            and not isinstance(cfg[k], list | int)]
    if bad:
        raise SpecError([FieldProblem(f"{prefix}.{k}", "must be a single value, not a list or "
                                      "object" if k in _SCALAR_KEYS else "must be a list")
                         for k in bad])
    if mtype == "gpt2" or ("n_embd" in cfg and "n_layer" in cfg):
        f = _gpt2(cfg)
    else:
        f = _decoder(cfg, mtype, prefix, notes)
    f["name"] = str(label)
    missing = [k for k in REQUIRED if f.get(k) is None]
    if missing:
        raise SpecError([FieldProblem(f"{prefix}.{k}", "required field missing from "
                                      "config.json") for k in missing])
    if notes:
        f["notes"] = tuple(notes)
    try:
        return ModelSpec.model_validate(f)
    except SpecError as exc:
        # ModelSpec.check names "model.<field>"; the user wrote the config: name its field
        raise SpecError([FieldProblem(p.field.replace("model.", f"{prefix}.", 1), p.rule)
                         for p in exc.problems]) from exc


def _gpt2(cfg: dict[str, Any]) -> dict[str, Any]:
    """GPT-2 (``configuration_gpt2.py`` names; ``modeling_gpt2.py``: Conv1D with biases,
    learned positions, LayerNorm, LM head tied to the input embedding)."""
    n_embd = cfg.get("n_embd")
    return dict(
        num_hidden_layers=cfg.get("n_layer"), hidden_size=n_embd,
        num_attention_heads=cfg.get("n_head"), vocab_size=cfg.get("vocab_size"),
        hidden_act=cfg.get("activation_function", "gelu_new"),
        tie_word_embeddings=cfg.get("tie_word_embeddings", True),
        max_position_embeddings=cfg.get("n_positions"), position_embedding="learned",
        norm="layernorm", attention_bias=True, mlp_bias=True,
        attention_dropout=cfg.get("attn_pdrop", 0.1), hidden_dropout=cfg.get("resid_pdrop", 0.1),
        intermediate_size=cfg.get("n_inner") or (4 * n_embd if n_embd else None))


def _decoder(raw: dict[str, Any], mtype: str, prefix: str, notes: list[str]) -> dict[str, Any]:
    """Llama-style decoders, one branch per family where transformers' modules differ."""
    known = mtype in FAMILY_DEFAULTS
    if not known and mtype:
        notes.append(f"model_type {mtype!r} read as a Llama-style decoder (standard names)")
    defaults = dict(FAMILY_DEFAULTS.get(mtype, {}))
    if prefix == P:
        # a top-level config must give its shape: a missing width or depth is an error,
        # not the family's example model; inside text_config the published wrappers (Gemma-3)
        # rely on the text config class's defaults, as transformers does
        for k in REQUIRED:
            defaults.pop(k, None)
    else:
        filled = [k for k in REQUIRED if raw.get(k) is None and k in defaults]
        if filled:
            notes.append(f"{', '.join(filled)} not in text_config: the {mtype} config class "
                         f"default ({', '.join(str(defaults[k]) for k in filled)}) used")
    cfg: dict[str, Any] = {**defaults, **{k: v for k, v in raw.items() if v is not None}}
    # keys whose explicit null means something (no window) keep their null
    for k in ("sliding_window", "attention_chunk_size", "q_lora_rank", "head_dim"):
        if k in raw and raw[k] is None:
            cfg[k] = None

    def get(key: str, default: Any = None) -> Any:
        v = cfg.get(key)
        return default if v is None else v

    f: dict[str, Any] = {}
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads",
                "num_key_value_heads", "head_dim", "intermediate_size", "vocab_size",
                "max_position_embeddings", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                "qk_rope_head_dim", "v_head_dim"):
        if cfg.get(key) is not None:
            f[key] = cfg[key]
    f["hidden_act"] = str(get("hidden_activation") or get("hidden_act", "silu"))
    f["attention_dropout"] = float(get("attention_dropout", 0.0))
    f["hidden_dropout"] = float(get("hidden_dropout", 0.0))
    f["tie_word_embeddings"] = bool(get("tie_word_embeddings", False))
    f["mlp_bias"] = bool(get("mlp_bias", False))
    f["attention_bias"] = bool(get("attention_bias", False))
    if get("use_bidirectional_attention", False):
        raise problem(f"{prefix}.use_bidirectional_attention",
                      "bidirectional (non-causal) attention is not a decoder meshplan models")

    if mtype.startswith("qwen2"):
        # Qwen2Attention / Qwen2MoeAttention: q, k, v with bias (qkv_bias for MoE), o without
        f["attention_bias"] = bool(get("qkv_bias", True)) if mtype == "qwen2_moe" else True
        f["attention_out_bias"] = False
    if mtype.startswith("gemma"):
        # GemmaMLP / Gemma2MLP / Gemma3MLP: gate_proj, up_proj, down_proj whatever the
        # activation (GeGLU with gelu_pytorch_tanh)
        f["mlp_gated"] = True
        if mtype == "gemma" and f["hidden_act"] == "gelu":
            f["hidden_act"] = "gelu_pytorch_tanh"  # GemmaConfig: the legacy "gelu" means tanh
    if mtype in ("gemma2", "gemma3_text"):
        # Gemma2DecoderLayer / Gemma3DecoderLayer: input, post_attention, pre_feedforward
        # and post_feedforward RMSNorm
        f["norms_per_layer"] = 4
    if mtype in ("qwen3", "qwen3_moe", "gemma3_text"):
        f["qk_norm"] = "head"  # Qwen3Attention / Gemma3Attention: RMSNorm(head_dim) on q, k
    if mtype == "olmo2":
        f["qk_norm"] = "width"  # Olmo2Attention: RMSNorm(heads·head_dim), RMSNorm(kv·head_dim)
        # Olmo2DecoderLayer: post_attention_layernorm + post_feedforward_layernorm (2 norms)
    if mtype == "gpt_oss":
        f["attention_sinks"] = True  # GptOssAttention.sinks
        f["attention_bias"] = bool(get("attention_bias", True))
    if mtype in ("gemma", "gemma2", "gemma3_text", "qwen3", "gpt_oss", "llama4_text") and \
            cfg.get("head_dim") is not None:
        f["head_dim"] = cfg["head_dim"]

    _moe(cfg, mtype, prefix, f, notes)
    _attention_pattern(cfg, mtype, prefix, f)
    if f.get("num_key_value_heads") is None:
        f.pop("num_key_value_heads", None)
    if get("num_nextn_predict_layers", 0):
        notes.append(f"num_nextn_predict_layers={cfg['num_nextn_predict_layers']}: the "
                     "multi-token-prediction layers are not modelled (transformers does not "
                     "build them either)")
    if isinstance(raw.get("quantization_config"), dict):
        notes.append("quantization_config ignored: weights are costed in the training "
                     "precision")
    return f


def _moe(cfg: dict[str, Any], mtype: str, prefix: str, f: dict[str, Any],
         notes: list[str]) -> None:
    """Experts, shared experts and which layers are MoE, per family."""
    experts = cfg.get("num_local_experts") or cfg.get("n_routed_experts") or cfg.get(
        "num_experts")
    if not experts:
        return
    L = int(cfg["num_hidden_layers"]) if cfg.get("num_hidden_layers") else None
    f["num_local_experts"] = experts
    f["num_experts_per_tok"] = cfg.get("num_experts_per_tok") or cfg.get("experts_per_token")
    if mtype in ("mixtral", "gpt_oss", "llama4_text") or "moe_intermediate_size" not in cfg:
        # MixtralExperts / GptOssExperts / Llama4TextExperts: experts of intermediate_size
        f["moe_intermediate_size"] = cfg.get("intermediate_size")
    else:
        f["moe_intermediate_size"] = cfg["moe_intermediate_size"]
    if cfg.get("shared_expert_intermediate_size") and mtype == "qwen2_moe":
        # Qwen2MoeSparseMoeBlock: shared_expert(shared_expert_intermediate_size) + its gate
        f["shared_expert_intermediate_size"] = cfg["shared_expert_intermediate_size"]
    if mtype.startswith("deepseek"):
        # DeepseekV2Moe / DeepseekV3MoE: shared_experts = MLP(moe_intermediate_size · n)
        f["n_shared_experts"] = int(cfg.get("n_shared_experts") or 0)
        f["router_bias"] = cfg.get("topk_method") == "noaux_tc"
        k = int(cfg.get("first_k_dense_replace") or 0)
        f["first_k_dense_replace"] = k
        if int(cfg.get("moe_layer_freq") or 1) != 1:
            # modeling_deepseek_v2.py / _v3.py: `layer_idx >= first_k_dense_replace` only;
            # DeepSeek's own modeling_deepseek.py also requires layer_idx % moe_layer_freq == 0
            raise problem(f"{prefix}.moe_layer_freq", "moe_layer_freq other than 1 is ignored "
                          "by transformers but used by DeepSeek's own code: ambiguous, give 1")
    elif mtype == "llama4_text":
        # Llama4TextMoe: experts + router (no bias) + shared_expert = Llama4TextMLP(
        # intermediate_size); dense layers Llama4TextMLP(intermediate_size_mlp); MoE layers
        # config.moe_layers, default range(step - 1, L, step) (configuration_llama4.py)
        f["n_shared_experts"] = 1
        f["intermediate_size"] = cfg.get("intermediate_size_mlp")
        step = int(cfg.get("interleave_moe_layer_step") or 1)
        layers = cfg.get("moe_layers")
        if layers is None and L is not None:
            layers = list(range(step - 1, L, step))
        f["moe_layers"] = tuple(int(i) for i in layers or ())
    elif mtype in ("qwen2_moe", "qwen3_moe"):
        # Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer: MoE where layer_idx not in
        # mlp_only_layers and (layer_idx + 1) % decoder_sparse_step == 0
        step = int(cfg.get("decoder_sparse_step") or 1)
        dense = set(cfg.get("mlp_only_layers") or [])
        if L is not None and (step != 1 or dense):
            f["moe_layers"] = tuple(i for i in range(L)
                                    if i not in dense and (i + 1) % step == 0)
    elif mtype == "gpt_oss":
        # GptOssMLP: router (Linear with bias) + experts with gate_up and down biases
        f["router_bias"] = True
        f["mlp_bias"] = True
    else:
        if mtype != "mixtral":
            notes.append(f"model_type {mtype!r}: every layer read as MoE")
        for key in ("mlp_only_layers", "moe_layers"):
            if cfg.get(key):
                raise problem(f"{prefix}.{key}", f"per-layer MoE placement of model_type "
                              f"{mtype!r} is not known to meshplan")
        for key in ("moe_layer_freq", "decoder_sparse_step", "interleave_moe_layer_step"):
            if int(cfg.get(key) or 1) != 1:
                raise problem(f"{prefix}.{key}", f"MoE interleaving of model_type {mtype!r} "
                              "is not known to meshplan (its rule differs per family)")


def _attention_pattern(cfg: dict[str, Any], mtype: str, prefix: str, f: dict[str, Any]
                       ) -> None:
    """``sliding_window`` / ``attention_chunk_size`` and ``layer_types`` as the family's
    config class derives them (``__post_init__`` of configuration_<type>.py, 5.25.0)."""
    L = int(cfg["num_hidden_layers"]) if cfg.get("num_hidden_layers") else 0
    window = cfg.get("sliding_window")
    if mtype in ("qwen2", "qwen2_moe", "qwen3", "qwen3_moe") and not cfg.get(
            "use_sliding_window", False):
        window = None  # Qwen*Config: sliding_window only with use_sliding_window
    given = cfg.get("layer_types")
    types: list[str] | None
    if given is not None:
        types = [str(t) for t in given]
        if len(types) != L:
            raise problem(f"{prefix}.layer_types", f"{len(types)} entries for "
                          f"num_hidden_layers={L}")
    elif window is None:
        types = None
    elif mtype in ("qwen2", "qwen3"):
        mwl = int(cfg.get("max_window_layers") or 28)
        types = ["sliding_attention" if i >= mwl else "full_attention" for i in range(L)]
    elif mtype == "qwen2_moe":
        mwl = int(cfg.get("max_window_layers") or 28)
        types = ["sliding_attention" if (i + 1) % 2 and i < mwl else "full_attention"
                 for i in range(L)]
    elif mtype in ("gemma2", "gpt_oss"):
        types = ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(L)]
    elif mtype == "gemma3_text":
        pattern = int(cfg.get("sliding_window_pattern") or 6)
        types = ["sliding_attention" if (i + 1) % pattern else "full_attention"
                 for i in range(L)]
    else:
        # Mistral, Mixtral, Phi-3, Qwen3-MoE: the window applies to every layer
        types = None
    if mtype == "llama4_text" and given is None:
        # Llama4TextConfig: chunked_attention where no_rope_layers[i] (RoPE layers) and
        # attention_chunk_size is set; no_rope_layers default int((i + 1) % interval != 0)
        chunk = cfg.get("attention_chunk_size")
        interval = int(cfg.get("no_rope_layer_interval") or 4)
        rope = cfg.get("no_rope_layers") or [int((i + 1) % interval != 0) for i in range(L)]
        types = ["chunked_attention" if r and chunk is not None else "full_attention"
                 for r in rope]
        if chunk is not None:
            f["attention_chunk_size"] = chunk
        window = None
    if types is not None:
        allowed = {"full_attention", "sliding_attention", "chunked_attention"}
        odd = sorted(set(types) - allowed)
        if odd:
            raise problem(f"{prefix}.layer_types", f"layer type(s) {odd} are not attention "
                          f"meshplan models (it knows {sorted(allowed)})")
        if "chunked_attention" in types and cfg.get("attention_chunk_size"):
            f["attention_chunk_size"] = cfg["attention_chunk_size"]
        if "sliding_attention" in types and window is not None:
            f["sliding_window"] = window
        if set(types) != {"full_attention"}:
            f["layer_types"] = tuple(types)
    elif window is not None:
        f["sliding_window"] = window  # every layer sliding
