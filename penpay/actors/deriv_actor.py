"""The Deriv gateway actor: the one place PenPay calls Deriv from.

It owns the agent's :class:`~penpay.actors.deriv.DerivGateway` (one
WebSocket, kept alive and re-authorised by the gateway itself) and turns
every outcome of a call into an input for the transaction that asked. A
money-moving call whose answer was lost becomes ``DerivUnknown``: it is never
resent here; the transaction looks it up in the agent's statement instead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from penpay.actors import deriv
from penpay.actors.deriv.wire import number_to_cents
from penpay.actors.gateway import GatewayActor
from penpay.actors.saga import (
    Command,
    CreditDeriv,
    DerivCredited,
    DerivLookup,
    DerivRejected,
    DerivUnknown,
    FindDerivTransfer,
    FindDerivWithdrawal,
    Input,
    WithdrawFromDeriv,
)

log = logging.getLogger("penpay.deriv")

#: How far before a transaction's creation its statement lookup starts reading.
#: The creation time is moved onto Deriv's clock (asked with ``time`` at each
#: lookup), so this only has to cover our own clock being stepped between the
#: creation and the lookup. Without a floor, a lookup for a transfer that never
#: happened would read the whole statement of a busy agent (and give up at the
#: page limit, never able to say "absent").
STATEMENT_CLOCK_MARGIN_S = 600

#: How a user's Deriv API token is found (it is stored encrypted with the user).
UserTokenLookup = Callable[[str], Awaitable[str | None]]


class DerivGatewayActor(GatewayActor):
    kind = "deriv-gateway"

    def __init__(
        self, gateway: deriv.DerivGateway, agent_login_id: str, user_token: UserTokenLookup
    ) -> None:
        self.gateway = gateway
        self.agent_login_id = agent_login_id
        self.user_token = user_token
        #: References with a statement lookup under way. A transaction asks
        #: again at every lookup deadline; when Deriv is slow or the call
        #: budget is short, those asks would pile up behind each other, and
        #: the pile would grow faster than the budget drains it.
        self._looking: set[str] = set()

    async def call(self, command: Command, user_id: str) -> Input | None:
        match command:
            case CreditDeriv(login_id, usd_cents, reference):
                return await self._credit(login_id, usd_cents, reference)
            case FindDerivTransfer(reference, since_ms):
                return await self._find_once(reference, f"Agent note: {reference}", since_ms)
            case WithdrawFromDeriv(usd_cents, code, reference):
                return await self._withdraw(user_id, usd_cents, code, reference)
            case FindDerivWithdrawal(reference, since_ms):
                return await self._find_once(reference, f"Client note: {reference}", since_ms)
        raise TypeError(f"not a Deriv command: {command!r}")

    async def _find_once(self, reference: str, note: str, since_ms: int) -> Input | None:
        """:meth:`_find`, unless one for ``reference`` is under way (it will answer)."""
        if reference in self._looking:
            return None
        self._looking.add(reference)
        try:
            return await self._find(reference, note, since_ms)
        finally:
            self._looking.discard(reference)

    async def _credit(self, login_id: str, usd_cents: int, reference: str) -> Input:
        try:
            result = await self.gateway.paymentagent_transfer(login_id, usd_cents, "USD", reference)
        except deriv.OutcomeUnknown as exc:
            return DerivUnknown(reference, exc.reason)
        except deriv.DerivApiError as exc:
            if exc.money_may_have_moved:  # "We have deducted ...": settle by statement
                return DerivUnknown(reference, exc.message)
            return DerivRejected(reference, exc.code, exc.message)
        except deriv.DerivError as exc:
            # Not sent (no connection): provably nothing moved, but the flow only
            # retries after a lookup, so report it as unknown and let it look.
            return DerivUnknown(reference, str(exc))
        if result.transaction_id is None:
            return DerivUnknown(reference, "Deriv answered without a transaction id")
        return DerivCredited(reference, result.transaction_id)

    async def _withdraw(self, user_id: str, usd_cents: int, code: str, reference: str) -> Input:
        token = await self.user_token(user_id)
        if token is None:
            return DerivRejected(reference, "DerivAccountNotLinked", "no Deriv token on file")
        if not code:
            return DerivRejected(reference, "InvalidToken", "no verification code in hand")
        try:
            result = await self.gateway.paymentagent_withdraw(
                token, self.agent_login_id, usd_cents, "USD", code, reference
            )
        except deriv.OutcomeUnknown as exc:
            return DerivUnknown(reference, exc.reason)
        except deriv.DerivApiError as exc:
            if exc.money_may_have_moved:
                return DerivUnknown(reference, exc.message)
            return DerivRejected(reference, exc.code, exc.message)
        except deriv.DerivError as exc:
            return DerivUnknown(reference, str(exc))
        if result.transaction_id is None:
            return DerivUnknown(reference, "Deriv answered without a transaction id")
        return DerivCredited(reference, result.transaction_id)

    async def _find(self, reference: str, note: str, since_ms: int) -> Input | None:
        """Look for our reference in the agent's statement; None: no answer this time.

        Only rows from ``since_ms`` (our clock; less the margin) on are read:
        the transfer cannot be older than the transaction that made it.
        """
        size, pages = 100, 20
        try:
            date_from = await self._deriv_time_of(since_ms) if since_ms else None
            for page in range(pages):
                rows = await self.gateway.statement(
                    limit=size, offset=page * size, date_from=date_from
                )
                for row in rows:
                    longcode = row.get("longcode")
                    tid = row.get("transaction_id")
                    if isinstance(longcode, str) and longcode.endswith(note) and type(tid) is int:
                        if number_to_cents(row.get("amount")) is None:
                            continue
                        return DerivLookup(reference, tid)
                if len(rows) < size:
                    return DerivLookup(reference, None)
        except deriv.DerivError as exc:
            log.info("statement lookup for %r failed: %s", reference, exc)
            return None  # the transaction's lookup deadline asks again
        log.warning("statement lookup for %r reached its page limit", reference)
        return None

    async def _deriv_time_of(self, since_ms: int) -> int:
        """``since_ms`` on Deriv's clock, less the margin: where a lookup starts."""
        offset_s = await self.gateway.server_time() - self.clock.now_ms() // 1000
        return max(since_ms // 1000 + offset_s - STATEMENT_CLOCK_MARGIN_S, 0)

    def unknown(self, command: Command, reason: str) -> Input | None:
        match command:
            case CreditDeriv(reference=reference) | WithdrawFromDeriv(reference=reference):
                return DerivUnknown(reference, reason)
        return None
