"""Liveness, readiness and metrics (``/healthz``, ``/readyz``, ``/metrics``)."""
