"""The root of PenPay's exception hierarchy.

Every exception PenPay raises on purpose derives from :class:`PenPayError`, so
an HTTP boundary or a supervisor can tell a known failure from a bug.
"""


class PenPayError(Exception):
    """Base class of every deliberate PenPay failure."""


class ConfigurationError(PenPayError):
    """A setting is missing or malformed; the message names the variable."""
