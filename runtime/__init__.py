"""meshplan's runtime side: launch-config emitters and the torch runtime worker.

``runtime.launch`` renders a plan into the files that start it (a torchrun command line, a
torchtitan TOML and overrides, Megatron-LM arguments, a DeepSpeed config, the worker's own plan
JSON, a pipeline-schedule CSV). The emitters are pure: they import ``costmodel`` and nothing of
torch, so the service and the CLI can render configs on machines without a GPU stack.

The torch worker (calibrate, run a plan, report measured against predicted) lives in
``runtime/worker/``; it is the only part of this package that imports torch, and only when it
runs.
"""
