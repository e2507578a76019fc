"""ModelSpec.from_hf_config against transformers itself (issue 14).

Each ``config.json`` in tests/costmodel/hf_configs/ (SOURCES.md there) and
tests/fixtures/hf_configs/ is built by transformers on the meta device,
``AutoModelForCausalLM.from_config(AutoConfig.for_model(**cfg))`` (no memory, no weights), and
compared with meshplan's reading of the same file:

* parameters: ``sum(p.numel() for p in model.parameters())`` (``parameters()`` yields a tied
  LM head once, as transformers counts it) equals ``ModelSpec.num_params()`` exactly, or
  differs by the amount recorded in :data:`DOCUMENTED` for a part meshplan deliberately counts
  differently (each with its reason);
* wrappers (``text_config``: Gemma-3, Llama-4): meshplan counts the text model, so it equals
  transformers' text model built from ``text_config``; where the fixture has the vision
  config too, the full model's surplus (vision tower + projector) is asserted in
  :data:`NOT_MODELLED`;
* which layers are MoE (a decoder layer holding an ``experts`` module) and each layer's
  attention (``config.layer_types``; without it, sliding in every layer when
  ``config.sliding_window`` is set, as Mistral / Phi-3 mask) agree with transformers'.

Runs when transformers (the ``dev`` extra) is installed; about 10 s for all fixtures.
"""

from __future__ import annotations

import json
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from costmodel.specs.model import ModelSpec

transformers = pytest.importorskip(
    "transformers", reason="transformers (the dev extra) is the oracle of this test")
torch = pytest.importorskip("torch", reason="transformers builds models with torch")

ROOT = Path(__file__).resolve().parents[1]
NEW = ROOT / "costmodel" / "hf_configs"
OLD = ROOT / "fixtures" / "hf_configs"
FILES = {p.stem: p for d in (NEW, OLD) for p in sorted(d.glob("*.json"))}

DOCUMENTED: dict[str, tuple[int, str]] = {
    # meshplan − transformers, and why
    "deepseek-v3": (58 * 256, "e_score_correction_bias (topk_method noaux_tc): a tensor of the "
                    "checkpoint that meshplan counts (router_bias) and transformers keeps as a "
                    "buffer (DeepseekV3TopkRouter, nn.Buffer): 256 per MoE layer × 58"),
}
NOT_MODELLED: dict[str, tuple[int, str]] = {
    # full wrapper model − its text model: what meshplan leaves out (said in spec.notes)
    "gemma-3-12b": (421_290_864, "SigLIP vision tower (27 layers) + Gemma3MultiModalProjector"),
}


def _config(name: str, text_only: bool) -> dict[str, Any]:
    """The fixture as transformers gets it: a wrapper's text model alone when ``text_only``
    (its ``text_config`` with the model_type the wrapper's config class gives it)."""
    cfg: dict[str, Any] = json.loads(FILES[name].read_text())
    cfg.pop("quantization_config", None)  # mxfp4 storage (gpt-oss), not architecture
    if text_only and "text_config" in cfg:
        wrapper = transformers.AutoConfig.for_model(**cfg)
        cfg = {**cfg["text_config"], "model_type": wrapper.text_config.model_type}
    return cfg


@cache
def _build(cfg_json: str) -> tuple[int, tuple[bool, ...], tuple[str, ...], Any]:
    """(parameters, MoE per layer, attention per layer, config) of transformers' model
    (layers empty for a wrapper)."""
    cfg = json.loads(cfg_json)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conf = transformers.AutoConfig.for_model(**cfg)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(conf)
    n = sum(p.numel() for p in model.parameters())
    if "text_config" in cfg:
        return n, (), (), conf
    layers = next(m for k, m in model.named_modules()
                  if k.endswith((".layers", ".h")) and isinstance(m, torch.nn.ModuleList))
    moe = tuple(any(k.endswith("experts") for k, _ in layer.named_modules()) for layer in layers)
    kinds = getattr(conf, "layer_types", None)
    if kinds is None:
        window = getattr(conf, "sliding_window", None)
        kinds = ["sliding_attention" if window else "full_attention"] * len(layers)
    return n, moe, tuple(kinds), conf


def _built(name: str, text_only: bool) -> tuple[int, tuple[bool, ...], tuple[str, ...], Any]:
    return _build(json.dumps(_config(name, text_only), sort_keys=True))


def _spec(name: str) -> ModelSpec:
    return ModelSpec.from_hf_config(json.loads(FILES[name].read_text()))


def _is_wrapper(name: str) -> bool:
    return "text_config" in json.loads(FILES[name].read_text())


def test_at_least_twenty_new_fixtures() -> None:
    assert len(list(NEW.glob("*.json"))) >= 20


@pytest.mark.parametrize("name", sorted(FILES))
def test_parameter_count_equals_transformers(name: str) -> None:
    spec = _spec(name)
    theirs, _, _, _ = _built(name, text_only=True)
    diff, why = DOCUMENTED.get(name, (0, "exact"))
    assert spec.num_params() - theirs == diff, (name, spec.num_params(), theirs, why)


@pytest.mark.parametrize("name", sorted(n for n in FILES if _is_wrapper(n)))
def test_wrapper_counts_the_text_model_and_says_so(name: str) -> None:
    spec = _spec(name)
    assert spec.notes and "counted the text model" in spec.notes[0]
    if "vision_config" in json.loads(FILES[name].read_text()):
        full, _, _, _ = _built(name, text_only=False)
        surplus, _ = NOT_MODELLED[name]
        assert full - spec.num_params() == surplus


@pytest.mark.parametrize("name", sorted(FILES))
def test_layer_kinds_equal_transformers(name: str) -> None:
    """MoE placement (DeepSeek first_k_dense_replace, Qwen decoder_sparse_step /
    mlp_only_layers, Llama-4 interleave_moe_layer_step) and local/global attention."""
    spec = _spec(name)
    _, moe, kinds, conf = _built(name, text_only=True)
    assert spec.moe_layer_mask == moe
    assert tuple(spec.layer_type(i) for i in range(spec.num_hidden_layers)) == kinds
    if "sliding_attention" in kinds:
        assert spec.sliding_window == conf.sliding_window
    if "chunked_attention" in kinds:
        assert spec.attention_chunk_size == conf.attention_chunk_size
