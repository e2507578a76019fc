"""Measured runs of stored plans (``/v1/plans/{id}/runs``)."""
