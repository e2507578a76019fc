"""API key tokens and how they are stored.

A token is ``mpk_`` + 32 random bytes (``secrets.token_urlsafe``, 256 bits). Only its SHA-256
digest is stored, and a key is looked up by that digest. A fast unsalted hash is the right tool
here, unlike for passwords: slow salted KDFs (bcrypt, scrypt, argon2) exist to make guessing
*low-entropy* secrets expensive, but 2^256 possible tokens cannot be enumerated at any hash
speed, and a salt defends against precomputed tables that cannot exist for such a space. The
fast digest keeps every authenticated request to one indexed lookup instead of a deliberately
slow computation per request (GitHub's and PyPI's API tokens are handled the same way). A
leaked database does not reveal usable keys.
"""

from __future__ import annotations

import hashlib
import secrets

PREFIX = "mpk_"
TOKEN_BYTES = 32
SHOWN_CHARS = 12
"""Characters of a token kept in clear (``mpk_`` + 8) to tell keys apart in listings."""


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def shown_prefix(token: str) -> str:
    return token[:SHOWN_CHARS]

