"""DeepSpeed: the ds_config JSON (and a torchrun line for the user's training script).

Keys and rules are DeepSpeed's as written in its sources (microsoft/DeepSpeed):

* ``deepspeed/runtime/config.py`` ``DeepSpeedConfig._batch_assertion``: ``train_batch_size ==
  train_micro_batch_size_per_gpu · gradient_accumulation_steps · world_size``, all > 0, where
  world_size is the data-parallel size (the engine passes its data-parallel group; with a
  pipeline, the pipeline engine does). Precision keys ``bf16.enabled`` / ``fp16.enabled``;
  ``zero_optimization.stage`` 0–3 (``deepspeed/runtime/zero/config.py``).
* ``deepspeed/runtime/pipe/engine.py`` ``PipelineEngine.__init__``: "ZeRO-2 and ZeRO-3 are
  incompatible with pipeline parallelism" (stage < 2). Its one schedule is ``TrainSchedule``
  (``deepspeed/runtime/pipe/schedule.py``), 1F1B-like, one stage per rank, with
  gradient_accumulation_steps micro-batches per step.

* ``deepspeed/runtime/engine.py``: native MoE (``deepspeed.moe.layer.MoE``, how a ds_config
  plan runs ep > 1) is refused with ZeRO-3 — ``assert not self.has_moe_layers, "MoE not
  supported with Stage 3"`` (line 1793 at tag v0.17.6, line 1545 at v0.14.0), and at commit
  edaa7221267243c7be7fb49c5d5f5c4fb97b4641 (line 1890, ``_validate_zero3_moe_compatibility``;
  line 2215 in the 0.19.8 wheel) "Native DeepSpeed MoE is not supported with ZeRO Stage 3. Use
  AutoEP or choose ZeRO stage 1/2."

No version selection: the ds_config keys written here (``train_batch_size``,
``train_micro_batch_size_per_gpu``, ``gradient_accumulation_steps``, ``bf16`` / ``fp16``,
``zero_optimization``, ``activation_checkpointing``) and the rules above are the same in every
release from v0.14 to 0.19.8, so ``training.framework_version`` does not change the output.

Tensor parallelism is not in a plain ds_config: DeepSpeed takes it from a model-parallel unit
(mpu) such as Megatron-DeepSpeed's, so a tp > 1 plan is refused here (use the megatron format).
Context parallelism (ring attention over the sequence) is not a DeepSpeed feature either.
"""

from __future__ import annotations

from typing import Any

from runtime.launch.base import MEDIA_JSON, Job, LaunchConfig, Refusals, dumps_json
from runtime.launch.common import refuse_common
from runtime.launch.launcher import launcher_notes, torchrun_script

CONFIG_NAME = "ds_config.json"


def render_deepspeed(job: Job) -> LaunchConfig:
    plan, training = job.plan, job.training
    r = Refusals()
    notes: list[str] = []
    refuse_common(job, r, "DeepSpeed")
    r.check(plan.tp == 1, "plan.tp",
            "plain DeepSpeed has no tensor parallelism for this model: a ds_config takes TP from "
            "a model-parallel unit such as Megatron-DeepSpeed's (deepspeed.initialize(mpu=...)); "
            f"this plan has tp={plan.tp}: use the megatron format")
    r.check(plan.cp == 1, "plan.cp",
            "DeepSpeed has no context parallelism (ring attention over the sequence); its "
            "Ulysses sequence parallelism splits attention heads instead; "
            f"this plan has cp={plan.cp}")
    r.check(training.precision != "fp8", "training.precision",
            "a ds_config trains in bf16 or fp16 (deepspeed/runtime/config.py: bf16 / fp16 "
            "sections); fp8 needs Transformer Engine in the model")
    r.check(training.grad_reduce_dtype != "bf16", "training.grad_reduce_dtype",
            "DeepSpeed's communication_data_type changes only what the reduction sends; its "
            "bf16 optimizer still accumulates fp32 gradients (data_types.grad_accum_dtype "
            "defaults to fp32), so the bf16 gradient memory meshplan estimated is not what "
            "DeepSpeed holds: use grad_reduce_dtype null or fp32")
    r.check(plan.ep == 1 or plan.zero_stage < 3, "plan.zero_stage",
            "DeepSpeed's native MoE (deepspeed.moe.layer.MoE, expert parallelism) is not "
            "supported with ZeRO Stage 3 (deepspeed/runtime/engine.py: 'MoE not supported with "
            "Stage 3', v0.17.6 line 1793; 'Native DeepSpeed MoE is not supported with ZeRO "
            "Stage 3', _validate_zero3_moe_compatibility); this plan has ep="
            f"{plan.ep} with zero_stage=3: use zero_stage 1 or 2")
    if plan.pp > 1 and plan.recompute_num_layers is not None:
        r.add("plan.recompute_num_layers",
              "DeepSpeed's PipelineModule checkpoints every layer, in groups of "
              "activation_checkpoint_interval layers (deepspeed/runtime/pipe/module.py, "
              "PipelineModule.forward); it cannot leave some of a stage's layers unrecomputed "
              f"(recompute_num_layers={plan.recompute_num_layers}): use recompute 'full' "
              "without recompute_num_layers, or the megatron format (Megatron-DeepSpeed has the "
              "same --recompute-method block: megatron/model/transformer.py at "
              "deepspeedai/Megatron-DeepSpeed 4efb479d5317ce9b86096b9d8e3e8030b0b5263b)")
    if plan.pp > 1:
        r.check(plan.virtual_stages == 1, "plan.virtual_stages",
                "DeepSpeed's PipelineModule runs one stage per rank "
                "(deepspeed/runtime/pipe/module.py)")
        if plan.schedule == "GPipe":
            notes.append("DeepSpeed's pipeline runs its TrainSchedule (1F1B-like, "
                         "deepspeed/runtime/pipe/schedule.py), not GPipe: the same bubble, and "
                         "fewer micro-batches' activations kept.")
        else:
            r.check(plan.schedule == "1F1B", "plan.schedule",
                    "DeepSpeed's PipelineEngine has one schedule, TrainSchedule (1F1B-like, "
                    f"deepspeed/runtime/pipe/schedule.py); it cannot run {plan.schedule}")
        r.check(plan.zero_stage < 2, "plan.zero_stage",
                "DeepSpeed's pipeline engine refuses ZeRO-2 and ZeRO-3 "
                "(deepspeed/runtime/pipe/engine.py, PipelineEngine.__init__: 'ZeRO-2 and ZeRO-3 "
                f"are incompatible with pipeline parallelism'); this plan has "
                f"zero_stage={plan.zero_stage}")
    r.raise_if_any()

    cfg: dict[str, Any] = {
        "train_batch_size": training.global_batch_size,
        "train_micro_batch_size_per_gpu": plan.micro_batch_size,
        "gradient_accumulation_steps": job.n_microbatches,
    }
    if training.precision == "fp16":
        cfg["fp16"] = {"enabled": True, "loss_scale": 0}
    else:
        cfg["bf16"] = {"enabled": True}
    zero: dict[str, Any] = {"stage": plan.zero_stage}
    if plan.zero_stage >= 1:
        zero["overlap_comm"] = plan.overlap_grad_reduce
        zero["contiguous_gradients"] = True
    if plan.zero_stage >= 2:
        zero["reduce_scatter"] = True
    cfg["zero_optimization"] = zero
    if plan.recompute != "none":
        cfg["activation_checkpointing"] = {
            "partition_activations": False,
            "cpu_checkpointing": False,
            "contiguous_memory_optimization": False,
        }
    text = dumps_json(cfg)

    if plan.recompute == "full" and plan.recompute_num_layers is not None:
        notes.append(f"Partial recompute: checkpoint the first {plan.recompute_num_layers} of "
                     f"the model's {job.stage_layers[0]} transformer blocks with "
                     "deepspeed.checkpointing.checkpoint and run the others plainly (the "
                     "ds_config's activation_checkpointing section configures the checkpoint "
                     "function, the training script decides which blocks it wraps).")
    elif plan.recompute == "full":
        notes.append("Full recompute: checkpoint every transformer block with "
                     "deepspeed.checkpointing.checkpoint"
                     + (" (PipelineModule(activation_checkpoint_interval=1))"
                        if plan.pp > 1 else "") + ".")
    elif plan.recompute == "selective":
        notes.append("Selective recompute: DeepSpeed recomputes what the model wraps in "
                     "deepspeed.checkpointing.checkpoint; wrap the attention core only "
                     "(Korthikanti et al.'s selective recompute).")
    if plan.pp > 1:
        notes.append(f"Build the model as a PipelineModule with num_stages={plan.pp} whose "
                     f"stages hold {list(job.stage_layers)} transformer layers (embedding on "
                     "the first, norm and LM head on the last); pick partition_method so that "
                     "DeepSpeed's logged partition matches.")
    if plan.ep > 1:
        notes.append(f"Expert parallelism lives in the model: deepspeed.moe.layer.MoE(..., "
                     f"ep_size={plan.ep}, num_experts={job.model.num_local_experts}, "
                     f"k={job.model.num_experts_per_tok})"
                     + (" (MoE inside a PipelineModule needs DeepSpeed >= 0.14.1, "
                        "deepspeedai/DeepSpeed#5338)" if plan.pp > 1 else "") + ".")
    if plan.zero_stage == 3 and plan.zero3_unit == "block":
        notes.append("DeepSpeed ZeRO-3 gathers parameters per submodule (prefetching by "
                     "bucket), not per transformer block as the plan assumes.")
    script = torchrun_script(job, ["train.py", f"--deepspeed_config {CONFIG_NAME}", '"$@"'],
                             title="DeepSpeed")
    notes = [f"{CONFIG_NAME} is the DeepSpeed config: pass it to deepspeed.initialize(config=...) "
             "in your training script (train.py in deepspeed_launch.sh); the optimizer and "
             "learning rate are the script's.", *launcher_notes(job), *notes]
    return LaunchConfig(format="deepspeed", filename=CONFIG_NAME, media_type=MEDIA_JSON,
                        content=text, files={"deepspeed_launch.sh": script}, notes=notes)
