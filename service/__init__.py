"""meshplan's HTTP service and CLI.

A thin layer over :mod:`costmodel` (and later ``solver``): FastAPI endpoints per resource
(``<resource>/endpoints.py``), request/response schemas reusing the domain models, RFC 9457
problem details for every error, and the ``meshplan`` command line. No modelling logic lives
here.
"""

from __future__ import annotations

__version__ = "0.1.0"
