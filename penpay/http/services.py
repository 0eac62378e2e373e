"""What the HTTP layer needs from the rest of PenPay, gathered in one object."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from penpay.engine import ActorSystem


class Services(msgspec.Struct, kw_only=True):
    """Handles the routes use; built by :mod:`penpay.server` or by a test."""

    system: ActorSystem
    #: name -> "is it up?"; ``/readyz`` answers 503 when any is False.
    readiness: dict[str, Callable[[], bool]] = msgspec.field(default_factory=dict)
