"""Request validation with Daraja's error codes and messages (protocols.md 1.9).

Each check raises :class:`Rejection`, which the routes turn into the
``{"requestId","errorCode","errorMessage"}`` envelope with the HTTP status
Daraja uses for that code.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import msgspec

from penpay.sandbox.daraja.state import NAIROBI

_DECODER = msgspec.json.Decoder(float_hook=Decimal)
_MSISDN = re.compile(r"^254[17]\d{8}$")
_TIMESTAMP = re.compile(r"^\d{14}$")


class Rejection(Exception):
    """A synchronous Daraja error: HTTP ``status`` with ``code``/``message``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message


def bad(what: str) -> Rejection:
    """``400.002.02 Bad Request - Invalid <what>``."""
    return Rejection(400, "400.002.02", f"Bad Request - Invalid {what}")


def decode_json(content_type: str | None, raw: bytes, missing_type_field: str) -> dict[str, Any]:
    """The JSON object body; Daraja blames a field when Content-Type is wrong."""
    if not content_type or "application/json" not in content_type.lower():
        raise bad(missing_type_field)
    try:
        body = _DECODER.decode(raw)
    except msgspec.DecodeError:
        raise Rejection(400, "400.002.05", "Invalid Request Payload") from None
    if not isinstance(body, dict):
        raise Rejection(400, "400.002.05", "Invalid Request Payload")
    return body


def text(body: dict[str, Any], name: str) -> str:
    """A field Daraja accepts as a string or a number, as a string."""
    value = body.get(name)
    if isinstance(value, bool) or value is None:
        raise bad(name)
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise bad(name)


def optional_text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None or isinstance(value, bool):
        return ""
    return str(value).strip()


def whole_kes(body: dict[str, Any], name: str = "Amount") -> int:
    """A whole-shilling amount given as a number or a numeric string.

    Fractional shillings are refused (Daraja: "Only whole numbers are
    supported"), never rounded.
    """
    value = body.get(name)
    if isinstance(value, bool) or value is None:
        raise bad(name)
    try:
        amount = Decimal(value) if isinstance(value, str | int | Decimal) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount != amount.to_integral_value():
        raise bad(name)
    return int(amount)


def msisdn(body: dict[str, Any], name: str) -> str:
    """A 12-digit ``2547…``/``2541…`` number."""
    value = text(body, name)
    if not _MSISDN.match(value):
        raise bad(name)
    return value


def timestamp(body: dict[str, Any], now: datetime, tolerance_s: float | None) -> str:
    """``YYYYMMDDHHmmss`` in Nairobi time, within ``tolerance_s`` of ``now``.

    Daraja refuses a stamp in another zone (a server on UTC is three hours
    off: protocols.md 1.3); None accepts any real calendar time.
    """
    value = text(body, "Timestamp")
    if not _TIMESTAMP.match(value):
        raise bad("Timestamp")
    try:
        stamped = datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=NAIROBI)
    except ValueError:
        raise bad("Timestamp") from None
    if tolerance_s is not None and abs((stamped - now).total_seconds()) > tolerance_s:
        raise bad("Timestamp")
    return value


def url(body: dict[str, Any], name: str) -> str:
    """An absolute http(s) URL with a host."""
    value = text(body, name)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad(name)
    return value


def stk_password(shortcode: str, passkey: str, stamp: str) -> str:
    """``base64(shortcode + passkey + timestamp)``: what Daraja expects."""
    return base64.b64encode(f"{shortcode}{passkey}{stamp}".encode()).decode()


def check_password(body: dict[str, Any], shortcode: str, passkey: str, stamp: str) -> None:
    if text(body, "Password") != stk_password(shortcode, passkey, stamp):
        raise Rejection(500, "500.001.1001", "Wrong credentials")


def max_length(body: dict[str, Any], name: str, limit: int, *, required: bool) -> str:
    value = optional_text(body, name)
    if (required and not value) or len(value) > limit:
        raise bad(name)
    return value
