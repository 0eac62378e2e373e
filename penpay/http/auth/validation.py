"""Input rules for identity: e-mail shape and password length.

Both are deliberately plain: an e-mail is checked for shape only (ownership
is proved by the KYC flow, not by a regular expression), and a password needs
``PASSWORD_LENGTH_MIN`` characters with no composition rules (NIST SP 800-63B).
"""

from __future__ import annotations

import re

PASSWORD_LENGTH_MIN = 12
#: Argon2 hashes any length, but an unbounded body is a cheap CPU attack.
PASSWORD_LENGTH_MAX = 256
EMAIL_LENGTH_MAX = 254
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


def email_problem(email: str) -> str | None:
    """Why ``email`` is not acceptable, or None."""
    if len(email) > EMAIL_LENGTH_MAX or not _EMAIL.match(email):
        return "must be an e-mail address"
    return None


def password_problem(password: str) -> str | None:
    """Why ``password`` is not acceptable, or None."""
    if len(password) < PASSWORD_LENGTH_MIN:
        return f"must be at least {PASSWORD_LENGTH_MIN} characters"
    if len(password) > PASSWORD_LENGTH_MAX:
        return f"must be at most {PASSWORD_LENGTH_MAX} characters"
    return None
