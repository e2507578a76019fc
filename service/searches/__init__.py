"""Durable searches (``/v1/searches``): submitted here, run by workers (:mod:`service.jobs`)."""
