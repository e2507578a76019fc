"""The GPU catalog and the model presets (``GET /v1/gpus``, ``GET /v1/models``)."""
