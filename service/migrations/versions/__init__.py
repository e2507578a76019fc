"""Revisions (one module each)."""
