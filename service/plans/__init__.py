"""Stored plans (``/v1/plans/{id}``): each ranked plan of a finished search."""
