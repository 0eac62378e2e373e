"""Per-transaction secrets for Daraja callback URLs.

Daraja callbacks are unsigned; the only things that vouch for one are its
source address and the URL it was sent to. Each transaction's callback URL
carries ``<kind><transaction id>.<mac>`` where the MAC is HMAC-SHA256 of the
kind and id under a server key. Checking a token needs no lookup and no actor
activation, so a forged or guessed token is refused in constant time without
touching any state.

The MAC is written in lowercase hex: Daraja refuses a CallBackURL that
contains "exe", "cmd", "sql", "mpesa", ... in any case (protocols.md 1.11),
and a base64url MAC spelled such a word now and then (about 6 in 2,000).
Hex has no letter past ``f``, and the kind letters and the UUID are
lowercase too, so no token can spell one. Tokens issued before the change
carry a base64url MAC and are still accepted: a transaction in flight keeps
the token it was given.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

_KINDS = {"d": "deposit", "w": "withdrawal"}
_MAC_BYTES = 24


def _hex(digest: bytes) -> str:
    """The MAC as issued now: lowercase hex, 48 characters."""
    return digest.hex()


def _base64url(digest: bytes) -> str:
    """The MAC as issued before hex: unpadded base64url, 32 characters."""
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class CallbackTokens:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the callback key needs at least 32 bytes")
        self._key = key

    def _digest(self, prefix: str, transaction_id: str) -> bytes:
        mac = hmac.new(self._key, f"{prefix}{transaction_id}".encode(), hashlib.sha256)
        return mac.digest()[:_MAC_BYTES]

    def issue(self, kind: str, transaction_id: str) -> str:
        prefix = next(p for p, k in _KINDS.items() if k == kind)
        return f"{prefix}{transaction_id}.{_hex(self._digest(prefix, transaction_id))}"

    def verify(self, token: str) -> tuple[str, str] | None:
        """``(kind, transaction_id)`` for a genuine token (hex or legacy base64url), else None."""
        head, _, mac = token.partition(".")
        if len(head) < 2 or head[0] not in _KINDS or not mac:
            return None
        transaction_id = head[1:]
        try:
            uuid.UUID(transaction_id)
        except ValueError:
            return None
        if not self._matches(mac, self._digest(head[0], transaction_id)):
            return None
        return _KINDS[head[0]], transaction_id

    @staticmethod
    def _matches(mac: str, digest: bytes) -> bool:
        """Compare against both spellings, each in constant time, without short-circuit.

        Both comparisons always run, so the time taken says nothing about
        which form (if either) was close.
        """
        as_hex = hmac.compare_digest(mac.encode(), _hex(digest).encode())
        as_base64 = hmac.compare_digest(mac.encode(), _base64url(digest).encode())
        return as_hex | as_base64
