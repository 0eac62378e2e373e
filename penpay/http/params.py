"""Integers and ids from query strings and paths, parsed before anything trusts them.

``str.isdigit()`` is not a guard for ``int()``: it accepts digits ``int()``
refuses ("²") and strings longer than ``int()`` converts (4300 digits), and
``uuid.UUID()`` accepts braces, URNs and non-ASCII digits. A client's bad
input must be a 4xx answer, never a 500, and an id must reach the actors in
the one spelling their keys use.
"""

from __future__ import annotations

import re
import uuid

_DIGITS = re.compile(r"[0-9]+")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def ascii_int(raw: str, minimum: int, maximum: int) -> int | None:
    """``raw`` as an int in ``[minimum, maximum]`` (``minimum`` ≥ 0), or None.

    Only ASCII digits, and no more of them than ``maximum`` has, so ``int()``
    never sees anything it could raise on or spend time converting.
    """
    if len(raw) > len(str(maximum)) or not _DIGITS.fullmatch(raw):
        return None
    value = int(raw)
    return value if minimum <= value <= maximum else None


def canonical_uuid(raw: str) -> str | None:
    """``raw`` as a lower-case hyphenated UUID string (how ids are keyed), or None."""
    if not _UUID.fullmatch(raw):
        return None
    return str(uuid.UUID(raw))
