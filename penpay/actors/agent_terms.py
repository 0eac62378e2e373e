"""PenPay's per-transaction limits, kept inside the payment agent's own terms.

Deriv refuses a payment-agent transfer or withdrawal outside the agent's
minimum and maximum (by default USD 10 to 2,000; an agent may have its own,
protocols.md 2.7, 2.9). A deposit under the agent's minimum would be
collected by M-Pesa, refused by Deriv and refunded; a withdrawal under it
refused after the user fetched a code. So once the agent socket is up, the
agent's terms are read and PenPay's limits narrowed to them.
"""

from __future__ import annotations

import logging

from penpay.actors.deriv import DerivError, DerivGateway
from penpay.actors.payments import Payments

log = logging.getLogger(__name__)

#: Deriv's limits for an agent without terms of its own (USD cents).
DERIV_DEFAULT_MIN_CENTS = 1_000
DERIV_DEFAULT_MAX_CENTS = 200_000


async def keep_to_agent_terms(gateway: DerivGateway, payments: Payments) -> None:
    """Narrow ``payments.limits`` to the agent's terms, once connected (run in a nursery)."""
    await gateway.wait_connected()
    agent = gateway.agent
    if agent is None or "admin" not in agent.scopes:
        log.warning(
            "the Deriv agent token lacks the admin scope, so the agent's own limits cannot "
            "be read; keep PenPay's limits inside them (Deriv's default: USD 10 to 2,000)"
        )
        return
    try:
        low, high = await gateway.payment_agent_limits()
    except DerivError as exc:
        log.warning("the payment agent's limits could not be read (%s); PenPay's stand", exc)
        return
    low = DERIV_DEFAULT_MIN_CENTS if low is None else low
    high = DERIV_DEFAULT_MAX_CENTS if high is None else high
    narrowed = payments.limits.within(low, high)
    if narrowed != payments.limits:
        log.warning(
            "PenPay's limits narrowed to the payment agent's (%d to %d USD cents): %s",
            low, high, narrowed,
        )
        payments.limits = narrowed
