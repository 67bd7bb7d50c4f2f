"""Payloads at rest are sealed: AES-256-GCM under a key the roles share, so a database row, a backup or a
file in the bucket holds no readable request or answer (REQ-SEC-01).

A sealed value starts with a marker no V2 protobuf (field number 0) and no JSON body can start with, so
what is stored plain (a redacted answer, a row written before sealing) reads through unchanged. `context`
(a row's identity) is bound to the ciphertext: a value copied into another row does not open there."""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from aisf.services.common.errors import PayloadUnreadable

_MARK = b"\x00aisf-sealed\x01"
_NONCE = 12
_KEY_ID = 4  # the key's fingerprint: a value sealed under another key is named as such, not "corrupt"


def key_from_text(text: str) -> bytes:
    """A key from its text form: 32 bytes in URL-safe base64 (what `secrets.token_urlsafe(32)` gives)."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if len(raw) != 32:
        raise ValueError(f"a payload key is 32 bytes in URL-safe base64, this one decodes to {len(raw)}")
    return raw


def is_sealed(value: bytes) -> bool:
    return value.startswith(_MARK)


class PayloadSeal:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).digest()[:_KEY_ID]

    def seal(self, value: bytes, context: bytes = b"") -> bytes:
        return _MARK + self.key_id + self.encrypt(value, context)

    def open(self, value: bytes, context: bytes = b"") -> bytes:
        """The plain value of a sealed one; a value that is not sealed is returned as it is."""
        if not is_sealed(value):
            return value
        head = len(_MARK)
        self.check_key(value[head : head + _KEY_ID])
        return self.decrypt(value[head + _KEY_ID :], context)

    def check_key(self, key_id: bytes) -> None:
        if key_id != self.key_id:
            raise PayloadUnreadable(
                "sealed under another payload key (AISF_PAYLOAD_KEY differs between roles?)"
            )

    def encrypt(self, value: bytes, context: bytes) -> bytes:
        """nonce + ciphertext + tag, `OVERHEAD` bytes longer than `value`."""
        nonce = os.urandom(_NONCE)
        return nonce + self._aead.encrypt(nonce, value, context)

    def decrypt(self, blob: bytes, context: bytes) -> bytes:
        try:
            return self._aead.decrypt(blob[:_NONCE], blob[_NONCE:], context)
        except InvalidTag:
            raise PayloadUnreadable("a sealed payload does not open: altered, cut short, or moved") from None


OVERHEAD = _NONCE + 16
