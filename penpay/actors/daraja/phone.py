"""Kenyan phone numbers as Daraja wants them: 12 digits, ``2547…``/``2541…``."""

from __future__ import annotations

import re

from penpay.actors.daraja.errors import InvalidPhoneNumber

_SEPARATORS = re.compile(r"[\s\-().]")
# re.ASCII: plain ``\d`` also matches Arabic-Indic, full-width and other
# Unicode digits, which would go out to Daraja as PartyA/PartyB.
_NATIONAL = re.compile(r"0([17]\d{8})", re.ASCII)
_INTERNATIONAL = re.compile(r"\+?254([17]\d{8})", re.ASCII)


def normalize_msisdn(raw: str) -> str:
    """``07…``/``01…``/``2547…``/``2541…``/``+254…`` to ``254XXXXXXXXX``.

    Spaces, dashes, dots and brackets are ignored. Anything else (other
    countries, landlines, wrong lengths) raises :class:`InvalidPhoneNumber`
    rather than guessing, because a wrong digit pays a stranger.
    """
    if not isinstance(raw, str):
        raise InvalidPhoneNumber(f"phone number must be a string, got {type(raw).__name__}")
    compact = _SEPARATORS.sub("", raw.strip())
    match = _NATIONAL.fullmatch(compact) or _INTERNATIONAL.fullmatch(compact)
    if match is None:
        raise InvalidPhoneNumber(
            f"{raw!r} is not a Kenyan mobile number (expected 07XXXXXXXX, 01XXXXXXXX, "
            "2547XXXXXXXX, 2541XXXXXXXX or +254…)"
        )
    return "254" + match.group(1)
