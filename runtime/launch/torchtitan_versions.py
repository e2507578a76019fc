"""What differs between torchtitan releases, in one table (``training.framework_version``).

Each entry was read from the release's wheel on PyPI (``pip download torchtitan==X --no-deps``):

* **0.3** (0.3.0, the current release): Python configs. ``torchtitan/config/manager.py``
  ``ConfigManager._load_config`` requires ``--module`` and ``--config`` (a function of the
  module's ``config_registry``) and reads no TOML; ``torchtitan/trainer.py`` ``Trainer.Config``
  holds the sections. Activation checkpointing is a tyro subcommand
  (``torchtitan/distributed/activation_checkpoint.py``, ``ActivationCheckpointingConfig``:
  ``activation_checkpoint:selective | full | memory-budget | none``), which must come after
  every other option (tyro gives the options after a subcommand to that subcommand); there is
  no ``--activation_checkpoint.mode``. ``Trainer.Config._validate_cuda_graphs`` refuses
  ``pipeline_parallel_degree > 1`` unless ``--training.disable_cuda_graphs``, and expert
  parallelism with the default token dispatcher likewise. ``enable_async_tensor_parallel``
  moved to ``[compile]`` (``CompileConfig``, which also requires ``compile.enable``);
  ``expert_tensor_parallel_degree`` is gone (``ParallelismConfig``: EP borrows ranks from FSDP
  and TP, efsdp = dp_shard·cp·tp / ep, ``ParallelDims.build_mesh``);
  ``enable_sequence_parallel`` is new. The sequence-length divisor is (tp with sequence
  parallelism) · (2·cp when cp > 1) (``Trainer.__init__``). The LM head's module is
  ``lm_head`` (``pipeline_parallel.py``, ``_generate_llm_fqn_per_model_part``). FP8 is a
  converter in the model config (``model_registry(..., converters=[...])``), not an option.
* **0.2** (0.2.2): the TOML era. ``torchtitan/config/manager.py`` loads ``--job.config_file``
  into ``torchtitan/config/job_config.py`` ``JobConfig``; ``[activation_checkpoint] mode`` and
  ``selective_ac_option``; ``[parallelism] enable_async_tensor_parallel`` and
  ``expert_tensor_parallel_degree`` (1 or tp); ``[model] name / flavor / converters``. The
  sequence-length divisor is tp · 2·cp (``ParallelDims.seq_len_divisor``); with
  expert_tensor_parallel_degree = tp, efsdp = dp_shard·cp / ep
  (``ParallelDims._validate_meshes``). The LM head's module is ``output``.

The rules both releases share (degrees, the layer split, the schedules) are in
:mod:`runtime.launch.torchtitan`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runtime.launch.base import LaunchError

FIELD = "training.framework_version"


@dataclass(frozen=True)
class TorchtitanRelease:
    """How one torchtitan release spells a plan (see the module docstring for the sources)."""

    version: str
    """``training.framework_version`` value (major.minor)."""
    release: str
    """The PyPI release whose source the entry was read from."""
    python_configs: bool
    """True: ``--module/--config`` and CLI overrides only; False: ``--job.config_file`` TOML."""
    ac_subcommand: bool
    """Activation checkpointing as the ``activation_checkpoint:<mode>`` subcommand (last on the
    command line) rather than ``--activation_checkpoint.mode``."""
    cuda_graphs_switch: bool
    """``--training.disable_cuda_graphs`` exists and pipeline / expert parallelism need it."""
    async_tp_section: str
    """Section of ``enable_async_tensor_parallel``."""
    expert_tensor_parallel: bool
    """``parallelism.expert_tensor_parallel_degree`` exists (set to tp)."""
    sequence_parallel_switch: bool
    """``parallelism.enable_sequence_parallel`` exists (tensor parallelism without SP)."""
    cp_doubles_only_when_used: bool
    """seq_len divisor has the 2·cp factor only when cp > 1 (else always)."""
    ddp_only_alone: bool
    """Unsharded data parallelism (data_parallel_replicate_degree) only without other
    parallelism (0.2: ``parallelize_llama``, 'DDP has not supported > 1D parallelism'); 0.3
    wraps every model in ``apply_fsdp_to_decoder`` with dp_replicate as the HSDP replicate axis
    (``models/llama3/parallelize.py``), so replication combines with tp / pp."""
    lm_head_module: str
    """Module name of the LM head in ``module_fqns_per_model_part``."""
    presets: dict[str, tuple[str, str]] = field(default_factory=dict)
    """meshplan preset → (module, config function) for Python configs, (model.name,
    model.flavor) for TOML configs; only presets of the same shape."""
    fp8_presets: dict[tuple[str, str], str] = field(default_factory=dict)
    """(preset, fp8 recipe) → config function with that FP8 converter (Python configs)."""

    def seq_len_divisor(self, tp: int, cp: int, sequence_parallel: bool) -> int:
        tp_part = tp if (sequence_parallel or not self.sequence_parallel_switch) else 1
        cp_part = 2 * cp if (cp > 1 or not self.cp_doubles_only_when_used) else 1
        return tp_part * cp_part

    def seq_len_rule(self) -> tuple[str, str]:
        """The divisor's formula and the file that holds it."""
        if self.cp_doubles_only_when_used:
            return ("(tp with sequence parallelism)·(2·cp when cp > 1)",
                    f"torchtitan {self.release}, trainer.py, Trainer.__init__")
        return ("tp·2·cp", f"torchtitan {self.release}, distributed/parallel_dims.py, "
                "ParallelDims.seq_len_divisor")

    def expert_borrow(self, tp: int) -> int:
        """The ranks EP borrows besides dp_shard·cp: tp when experts are not tensor-parallel
        in their own right (0.3), 1 when expert_tensor_parallel_degree = tp (0.2)."""
        return 1 if self.expert_tensor_parallel else tp


_TORCHTITAN = (
    TorchtitanRelease(
        version="0.3", release="0.3.0", python_configs=True, ac_subcommand=True,
        cuda_graphs_switch=True, async_tp_section="compile", expert_tensor_parallel=False,
        sequence_parallel_switch=True, cp_doubles_only_when_used=True, ddp_only_alone=False,
        lm_head_module="lm_head",
        # torchtitan/models/llama3/config_registry.py, models/deepseek_v3/config_registry.py
        presets={"llama3-8b": ("llama3", "llama3_8b"), "llama3-70b": ("llama3", "llama3_70b"),
                 "llama3-405b": ("llama3", "llama3_405b"),
                 "deepseek-v3": ("deepseek_v3", "deepseek_v3_671b")},
        fp8_presets={("llama3-8b", "mxfp8"): "llama3_8b_mxfp8",
                     ("deepseek-v3", "rowwise"): "deepseek_v3_671b_float8"},
    ),
    TorchtitanRelease(
        version="0.2", release="0.2.2", python_configs=False, ac_subcommand=False,
        cuda_graphs_switch=False, async_tp_section="parallelism", expert_tensor_parallel=True,
        sequence_parallel_switch=False, cp_doubles_only_when_used=False, ddp_only_alone=True,
        lm_head_module="output",
        # torchtitan/models/llama3/__init__.py, models/deepseek_v3/__init__.py (flavors)
        presets={"llama3-8b": ("llama3", "8B"), "llama3-70b": ("llama3", "70B"),
                 "llama3-405b": ("llama3", "405B"), "deepseek-v3": ("deepseek_v3", "671B")},
    ),
)
TORCHTITAN_RELEASES: dict[str, TorchtitanRelease] = {r.version: r for r in _TORCHTITAN}
TORCHTITAN_CURRENT = "0.3"


def torchtitan_release(version: str | None) -> TorchtitanRelease:
    """The table entry of ``version`` (``None`` = the current release; ``"0.3.0"`` = ``"0.3"``).

    Raises :class:`LaunchError` on ``training.framework_version`` for a release not in it."""
    if version is None:
        return TORCHTITAN_RELEASES[TORCHTITAN_CURRENT]
    rel = TORCHTITAN_RELEASES.get(version)
    if rel is None:
        rel = next((r for r in _TORCHTITAN if version in (r.release,)
                    or version.startswith(r.version + ".")), None)
    if rel is None:
        raise LaunchError(FIELD, f"the torchtitan emitter has no release {version!r}; "
                          f"supported: {', '.join(TORCHTITAN_RELEASES)} (current "
                          f"{TORCHTITAN_CURRENT})")
    return rel
