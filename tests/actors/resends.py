"""A property both flows' tests check: a Deriv call is resent only after "not now"."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


def assert_resent_only_after_a_refusal_for_now(
    events: Sequence[Any], sent: list[str], *,
    resent: type | tuple[type, ...], deferred: type | tuple[type, ...],
    unknown: type | tuple[type, ...],
) -> None:
    """A reference goes out again only after Deriv said "not now" to it, and
    never once a call under it had an unknown outcome (it may have moved money).

    ``resent``/``deferred``/``unknown`` are the flow's own event types for a
    resend, a "not now" and an unknown outcome; each carries ``reference``.
    """
    resends = Counter(e.reference for e in events if isinstance(e, resent))
    assert all(sent.count(ref) == 1 + resends[ref] for ref in set(sent)), (sent, resends)
    refused_for_now: set[str] = set()
    outcome_unknown: set[str] = set()  # once unknown, a reference is only ever looked up
    for event in events:
        if isinstance(event, deferred):
            refused_for_now.add(event.reference)
        elif isinstance(event, unknown):
            outcome_unknown.add(event.reference)
        elif isinstance(event, resent):
            assert event.reference not in outcome_unknown, (
                "resent a call that may have moved money"
            )
            assert event.reference in refused_for_now, "resent without a refusal for now"
            refused_for_now.discard(event.reference)
