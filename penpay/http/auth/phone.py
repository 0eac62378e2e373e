"""Kenyan mobile numbers, normalised to E.164 (``+2547XXXXXXXX`` / ``+2541XXXXXXXX``).

Accepted spellings: ``07…``, ``01…``, ``2547…``, ``2541…``, ``+2547…``,
``+2541…``, with optional spaces, dashes or dots between digits. Anything
else is refused rather than guessed, because a wrong number is where an STK
prompt or a B2C payment would go.
"""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[\s\-.()]")
_PATTERNS = (
    re.compile(r"^0([17]\d{8})$"),
    re.compile(r"^254([17]\d{8})$"),
    re.compile(r"^\+254([17]\d{8})$"),
)


class InvalidPhoneNumber(ValueError):
    """The text is not a Kenyan mobile number in an accepted spelling."""


def normalize_kenyan_msisdn(raw: str) -> str:
    """``"0712 345 678"`` -> ``"+254712345678"``; raises :class:`InvalidPhoneNumber`."""
    compact = _SEPARATORS.sub("", raw.strip())
    for pattern in _PATTERNS:
        match = pattern.match(compact)
        if match:
            return "+254" + match.group(1)
    raise InvalidPhoneNumber(
        "expected a Kenyan mobile number such as 0712345678, 254712345678 or +254712345678"
    )


def mask_msisdn(e164: str) -> str:
    """``+254712345678`` -> ``+2547****5678``: enough for a user to recognise, not to dial."""
    return e164[:5] + "****" + e164[-4:]
