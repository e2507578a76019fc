"""The training job: batch, sequence length, precision, optimizer."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

Precision = Literal["bf16", "fp16", "fp8", "fp32"]


class TrainingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    global_batch_size: PositiveInt = Field(description="Sequences per optimizer step.")
    seq_len: PositiveInt = Field(description="Tokens per sequence.")
    precision: Precision = Field(
        "bf16", description="Compute precision of the matmuls; fp8 keeps bf16 master weights "
        "and optimizer states (Transformer Engine recipe); fp32 is plain single precision (what "
        "a CPU run uses; a device needs a measured fp32 peak, as a calibrated device has)."
    )
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    train_tokens: PositiveInt | None = Field(
        None, description="Tokens of the whole run, for time_to_train / cost_to_train."
    )

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_len
