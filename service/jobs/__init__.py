"""Durable search jobs: the queue (claim, lease, heartbeat, finish) and the worker processes.

A search is a row of ``searches``, written before the API answers 202. Workers — processes
started by ``meshplan serve`` or ``meshplan worker``, never the request thread — claim it,
hold a lease that a heartbeat thread renews while the solver runs, and store the result and its
plans in one transaction guarded by the lease. A worker that dies stops renewing; once the
lease expires another worker takes the search up again (``attempts`` + 1, up to
``MESHPLAN_MAX_ATTEMPTS``).
"""
