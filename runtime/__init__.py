"""meshplan's runtime: launch-config emitters and the torch runtime worker.

* ``runtime/launch/`` (pure, no torch): render a stored plan as a torchrun, torchtitan,
  Megatron, DeepSpeed, runtime or schedule-CSV launch config.
* ``runtime/worker/`` (imports torch, an optional extra: ``pip install meshplan[runtime]``):
  ``meshplan-runtime calibrate`` measures the local devices into a calibration profile and
  ``meshplan-runtime run PLAN`` executes a plan's layout and reports measured against
  predicted step time.

Importing :mod:`runtime` or :mod:`runtime.cli` does not import torch: the worker modules are
imported inside the commands, so the emitters and the CLI's help work without it.
"""
