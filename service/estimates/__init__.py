"""Estimates of one explicit plan (``POST /v1/estimates``)."""
