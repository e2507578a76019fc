"""Creating, listing, revoking and checking API keys; the principal a request acts as."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, true
from sqlalchemy.orm import InstrumentedAttribute, Session

from service.auth import tokens
from service.db.base import utcnow
from service.db.models import ApiKey
from service.exceptions import NotFound, Unauthorized


@dataclass(frozen=True)
class Principal:
    """Who a request acts for. With auth off: nobody in particular, who sees everything."""

    key_id: uuid.UUID | None
    enforced: bool

    def visible(self, owner_column: InstrumentedAttribute[Any]) -> Any:
        """A WHERE clause keeping the rows this principal may see."""
        return owner_column == self.key_id if self.enforced else true()


ANONYMOUS = Principal(key_id=None, enforced=False)


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    token: str
    """The secret itself: shown once, never stored."""


def create_key(session: Session, name: str) -> CreatedKey:
    name = name.strip()
    if not name or len(name) > 200:
        raise ValueError("a key's name must have 1 to 200 characters")
    token = tokens.new_token()
    key = ApiKey(name=name, prefix=tokens.shown_prefix(token), key_hash=tokens.digest(token))
    session.add(key)
    session.flush()
    return CreatedKey(key, token)


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke_key(session: Session, key_id: str) -> ApiKey:
    try:
        ident = uuid.UUID(key_id)
    except ValueError:
        raise NotFound(f"no API key with id {key_id!r}") from None
    key = session.get(ApiKey, ident)
    if key is None:
        raise NotFound(f"no API key with id {key_id!r}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key


def authenticate(session: Session, token: str | None) -> Principal:
    """The principal of ``token``; :class:`Unauthorized` when it is missing or not a live
    key."""
    if not token:
        raise Unauthorized("this server requires an API key: send it as "
                           "'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    key = session.scalars(select(ApiKey).where(ApiKey.key_hash == tokens.digest(token))).first()
    if key is None or key.revoked_at is not None:
        raise Unauthorized("the API key is not valid (unknown or revoked)")
    return Principal(key_id=key.id, enforced=True)

