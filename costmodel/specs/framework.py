"""Names of the software stacks a plan is for, their FP8 recipes and attention kernels: the
contract's ``training.framework``, ``training.fp8_recipe`` and ``plan.attention`` values,
written once and imported by the cost model, the search and the launch emitters."""

from __future__ import annotations

from typing import Literal, get_args

Framework = Literal["megatron", "torchtitan", "deepspeed", "fsdp"]
"""``megatron``: Megatron-LM, Megatron-Core, NeMo, Megatron-Bridge; ``torchtitan``;
``deepspeed``: DeepSpeed and Megatron-DeepSpeed; ``fsdp``: plain PyTorch FSDP1/FSDP2 (e.g.
llm-foundry, accelerate)."""
FRAMEWORKS: tuple[str, ...] = get_args(Framework)

FP8Recipe = Literal["delayed", "tensorwise", "rowwise", "mxfp8"]
"""``delayed``: Transformer Engine's delayed scaling; ``tensorwise`` / ``rowwise``: torchao
Float8 (current scaling per tensor / per row); ``mxfp8``: block-scaled MX FP8 (Blackwell)."""
FP8_RECIPES: tuple[str, ...] = get_args(FP8Recipe)

AttentionKernel = Literal["flash", "flash1", "flash2", "flash3", "cudnn", "triton", "unfused"]
"""``flash``: the stack's default fused kernel for the GPU; ``flash1`` / ``flash2`` /
``flash3``: FlashAttention 1, 2, 3 (Dao et al. 2022, Dao 2023, Shah et al. 2024); ``cudnn``:
cuDNN's fused attention (Transformer Engine's default on Hopper/Blackwell); ``triton``: the
Triton flash kernel (llm-foundry 2023); ``unfused``: batched matmuls + softmax through HBM."""
ATTENTION_KERNELS: tuple[str, ...] = get_args(AttentionKernel)
