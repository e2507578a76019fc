"""Optional API-key authentication (``MESHPLAN_AUTH=1``; off by default)."""
