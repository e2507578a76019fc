"""Prometheus gauges and counters of the search queue, read from the database at scrape time.

Workers run in other processes (and on other machines), so in-process counters would only see
this replica's share; the database sees all of them. Rows are never deleted, so the attempt
counts only grow and are exposed as counters.
"""

from __future__ import annotations

import logging

from sqlalchemy import func, select

from service.db.base import utcnow
from service.db.engine import Database
from service.db.models import SEARCH_STATUSES, SearchAttempt, SearchJob

logger = logging.getLogger("meshplan.service")

SEARCHES = "meshplan_searches"
ATTEMPTS = "meshplan_search_attempts_total"
OLDEST = "meshplan_search_oldest_queued_seconds"
DB_UP = "meshplan_database_up"
OUTCOMES = ("succeeded", "failed", "cancelled", "released", "lease_expired", "lease_lost")


def render(db: Database) -> str:
    try:
        with db.session() as session:
            by_status = {str(k): int(n) for k, n in session.execute(
                select(SearchJob.status, func.count()).group_by(SearchJob.status))}
            by_outcome = {str(k): int(n) for k, n in session.execute(
                select(SearchAttempt.outcome, func.count())
                .where(SearchAttempt.outcome.is_not(None))
                .group_by(SearchAttempt.outcome))}
            oldest = session.scalar(select(func.min(SearchJob.created_at))
                                    .where(SearchJob.status == "queued"))
            now = session.scalar(select(utcnow()))
    except Exception as exc:
        logger.warning("queue metrics: the database did not answer (%s)", exc)
        return f"# HELP {DB_UP} Whether the database answered this scrape.\n" \
               f"# TYPE {DB_UP} gauge\n{DB_UP} 0\n"
    age = (now - oldest).total_seconds() if oldest is not None and now is not None else 0.0
    lines = [
        f"# HELP {DB_UP} Whether the database answered this scrape.",
        f"# TYPE {DB_UP} gauge", f"{DB_UP} 1",
        f"# HELP {SEARCHES} Searches in the database, by status (queued and running are the "
        "queue; the others have finished).",
        f"# TYPE {SEARCHES} gauge",
        *(f'{SEARCHES}{{status="{s}"}} {by_status.get(s, 0)}' for s in SEARCH_STATUSES),
        f"# HELP {ATTEMPTS} Ended claims of searches by workers, by outcome (lease_expired: "
        "the worker died).",
        f"# TYPE {ATTEMPTS} counter",
        *(f'{ATTEMPTS}{{outcome="{o}"}} {by_outcome.get(o, 0)}' for o in OUTCOMES),
        f"# HELP {OLDEST} Age of the oldest queued search (0 when none waits).",
        f"# TYPE {OLDEST} gauge", f"{OLDEST} {max(0.0, age)!r}",
    ]
    return "\n".join(lines) + "\n"
