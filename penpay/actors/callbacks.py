"""Per-transaction secrets for Daraja callback URLs.

Daraja callbacks are unsigned; the only things that vouch for one are its
source address and the URL it was sent to. Each transaction's callback URL
carries ``<kind><transaction id>.<mac>`` where the MAC is HMAC-SHA256 of the
kind and id under a server key. Checking a token needs no lookup and no actor
activation, so a forged or guessed token is refused in constant time without
touching any state.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

_KINDS = {"d": "deposit", "w": "withdrawal"}
_MAC_BYTES = 24


class CallbackTokens:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the callback key needs at least 32 bytes")
        self._key = key

    def _mac(self, prefix: str, transaction_id: str) -> str:
        digest = hmac.new(self._key, f"{prefix}{transaction_id}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()[:_MAC_BYTES]).decode().rstrip("=")

    def issue(self, kind: str, transaction_id: str) -> str:
        prefix = next(p for p, k in _KINDS.items() if k == kind)
        return f"{prefix}{transaction_id}.{self._mac(prefix, transaction_id)}"

    def verify(self, token: str) -> tuple[str, str] | None:
        """``(kind, transaction_id)`` for a genuine token, else None."""
        head, _, mac = token.partition(".")
        if len(head) < 2 or head[0] not in _KINDS or not mac:
            return None
        transaction_id = head[1:]
        try:
            uuid.UUID(transaction_id)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac(head[0], transaction_id)):
            return None
        return _KINDS[head[0]], transaction_id
