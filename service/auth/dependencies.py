"""The ``Principal`` dependency: checks the API key of every ``/v1`` request when auth is on.

Declared on the ``/v1`` router, so the operational endpoints (``/healthz``, ``/readyz``,
``/metrics``) and the documentation stay open. Both ways of sending a key are declared as
OpenAPI security schemes, which gives Swagger UI its "Authorize" button.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.auth.service import ANONYMOUS, Principal, authenticate
from service.db.engine import Database
from service.deps import DatabaseDep, SettingsDep

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>` (only when "
                    "the server runs with MESHPLAN_AUTH=1; keys: `meshplan apikey create`).")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="The same key in an `X-API-Key` header.")


async def get_principal(
    settings: SettingsDep,
    db: DatabaseDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    header_key: Annotated[str | None, Security(api_key_header)],
) -> Principal:
    if not settings.auth:
        return ANONYMOUS
    token = header_key or (credentials.credentials if credentials else None)
    return await run_in_threadpool(_authenticate, db, token)


def _authenticate(db: Database, token: str | None) -> Principal:
    # a transaction of its own: the request's unit of work does not start with the key check
    with db.session() as session:
        return authenticate(session, token)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
