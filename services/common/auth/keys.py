"""API key format and digests: `aisf_<key id>_<secret>`; only a salted HMAC of the secret is stored.

The secret is 256 random bits, so a keyed SHA-256 is as strong as a slow password hash here and costs
microseconds (a key is checked again every few seconds, on the request path)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

PREFIX = "aisf"
_KEY_ID = re.compile(r"[0-9a-f]{12}")


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    token: str
    salt: str
    digest: str


def new_key() -> NewKey:
    key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
    return NewKey(key_id, f"{PREFIX}_{key_id}_{secret}", salt, digest(salt, secret))


def split(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not _KEY_ID.fullmatch(key_id) or len(secret) < 16:
        return None
    return key_id, secret


def digest(salt: str, secret: str) -> str:
    return hmac.new(bytes.fromhex(salt), secret.encode(), hashlib.sha256).hexdigest()


def matches(salt: str, stored: str, secret: str) -> bool:
    return hmac.compare_digest(digest(salt, secret), stored)
