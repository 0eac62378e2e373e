"""Text every store can keep.

PostgreSQL's text and jsonb refuse NUL, and UTF-8 cannot encode a lone
surrogate (which a JSON ``\\ud800`` escape or Python code can produce). The
in-memory twins would take both, so checks made before writing use this one
rule, and the twins and PostgreSQL refuse the same inputs.
"""

from __future__ import annotations


def storable_text(text: str) -> bool:
    """Whether ``text`` holds neither NUL nor a lone surrogate."""
    return "\x00" not in text and not any("\ud800" <= c <= "\udfff" for c in text)
