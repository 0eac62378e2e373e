"""Integers and ids from query strings and paths, parsed before anything trusts them.

``str.isdigit()`` is not a guard for ``int()``: it accepts digits ``int()``
refuses ("²") and strings longer than ``int()`` converts (4300 digits), and
``uuid.UUID()`` accepts braces, URNs and non-ASCII digits. A client's bad
input must be a 4xx answer, never a 500, and an id must reach the actors in
the one spelling their keys use.
"""

from __future__ import annotations

import re
import unicodedata
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


#: The longest note an operator may give a decision (it is journaled and audited).
NOTE_CHARS_MAX = 500


def note_problem(note: str) -> str | None:
    """Why ``note`` cannot be an operator's note, or None if it can.

    It is written to the journal and to the audit log, where PostgreSQL
    refuses NUL and lone surrogates: a note it cannot store would leave the
    decision made and unaudited. Control characters other than line breaks
    and tabs have no place in a note either.
    """
    if not note.strip() or len(note) > NOTE_CHARS_MAX:
        return f"1 to {NOTE_CHARS_MAX} characters"
    for char in note:
        if char in "\r\n\t":
            continue
        if unicodedata.category(char) in ("Cc", "Cs"):
            return f"no control characters or lone surrogates (found U+{ord(char):04X})"
    return None
