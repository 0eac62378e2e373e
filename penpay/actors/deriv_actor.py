"""The Deriv gateway actor: the one place PenPay calls Deriv from.

It owns the agent's :class:`~penpay.actors.deriv.DerivGateway` (one
WebSocket, kept alive and re-authorised by the gateway itself) and turns
every outcome of a call into an input for the transaction that asked. A
money-moving call whose answer was lost, or whose error answer does not prove
that nothing moved, becomes ``DerivUnknown``: it is never resent here; the
transaction looks it up in the agent's statement instead. An error that proves
nothing moved is ``DerivRejected``, or ``DerivRetryLater`` when it only says
"not now" (:func:`~penpay.actors.deriv.money_call_verdict`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from penpay.actors import deriv
from penpay.actors.gateway import GatewayActor
from penpay.actors.saga import (
    Command,
    CreditDeriv,
    DerivCredited,
    DerivLookup,
    DerivRejected,
    DerivRetryLater,
    DerivUnknown,
    FindDerivTransfer,
    FindDerivWithdrawal,
    Input,
    WithdrawFromDeriv,
)

log = logging.getLogger("penpay.deriv")

#: How far before a transaction's creation its statement lookup starts reading.
#: The creation time is moved onto Deriv's clock (``DerivGateway.deriv_clock_s``:
#: one ``time`` answer, extrapolated on the monotonic clock), so this only has to
#: cover our own clock being stepped between the creation and the lookup.
#: Without a floor, a lookup for a transfer that never happened would read the
#: whole statement of a busy agent (and give up at the page limit, never able
#: to say "absent").
STATEMENT_CLOCK_MARGIN_S = 600

#: How a user's Deriv API token is found (it is stored encrypted with the user).
UserTokenLookup = Callable[[str], Awaitable[str | None]]

#: How long the verification code of a withdrawal Deriv refused "for now" is
#: kept for its resend: Deriv's codes live an hour (protocols.md 2.8).
HELD_CODE_TTL_S = 3600.0

#: At most this much of the conflicting statement rows is reported to the flow.
CONFLICT_CHARS_MAX = 500


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
        #: Verification codes of withdrawals Deriv refused "for now", by reference,
        #: with the trio time they were kept: the transaction resends without
        #: one (it never persists a code, and its shell hands it out only once).
        #: Memory only: after a restart the resend is refused as InvalidToken.
        self._held_codes: dict[str, tuple[str, float]] = {}

    async def call(self, command: Command, user_id: str) -> Input | None:
        match command:
            case CreditDeriv(login_id, usd_cents, reference):
                return await self._credit(login_id, usd_cents, reference)
            case FindDerivTransfer(reference, usd_cents, login_id, since_ms):
                expected = deriv.ExpectedRow.transfer(reference, login_id, usd_cents)
                return await self._find_once(expected, since_ms)
            case WithdrawFromDeriv(usd_cents, code, reference):
                return await self._withdraw(user_id, usd_cents, code, reference)
            case FindDerivWithdrawal(reference, usd_cents, login_id, since_ms):
                expected = deriv.ExpectedRow.withdrawal(reference, login_id, usd_cents)
                return await self._find_once(expected, since_ms)
        raise TypeError(f"not a Deriv command: {command!r}")

    async def _find_once(self, expected: deriv.ExpectedRow, since_ms: int) -> Input | None:
        """:meth:`_find`, unless one for the reference is under way (it will answer)."""
        reference = expected.reference
        if reference in self._looking:
            return None
        self._looking.add(reference)
        try:
            return await self._find(expected, since_ms)
        finally:
            self._looking.discard(reference)

    async def _credit(self, login_id: str, usd_cents: int, reference: str) -> Input:
        try:
            result = await self.gateway.paymentagent_transfer(login_id, usd_cents, "USD", reference)
        except deriv.OutcomeUnknown as exc:
            return DerivUnknown(reference, exc.reason)
        except deriv.DerivApiError as exc:
            return _error_answer(reference, exc)
        except deriv.DerivError as exc:
            # Not sent (no connection): provably nothing moved, but the flow only
            # retries after a lookup, so report it as unknown and let it look.
            return DerivUnknown(reference, str(exc))
        if result.transaction_id is None:
            return DerivUnknown(reference, "Deriv answered without a transaction id")
        return DerivCredited(reference, result.transaction_id)

    async def _withdraw(self, user_id: str, usd_cents: int, code: str, reference: str) -> Input:
        code = code or self._take_held_code(reference)
        token = await self.user_token(user_id)
        if token is None:
            return DerivRejected(reference, "DerivAccountNotLinked", "no Deriv token on file")
        if not code:
            return DerivRejected(reference, "InvalidToken", "no verification code in hand")
        answer = await self._withdraw_with(token, usd_cents, code, reference)
        if isinstance(answer, DerivRetryLater):
            if answer.code not in deriv.REFUSED_BEFORE_ANY_CHECK:
                # "Request too frequent", maintenance: refused after Deriv checked
                # the code, which deletes it (protocols.md 2.8). Nothing moved, and
                # a resend could only be refused: the user asks for a new code.
                detail = f"{answer.message} (the verification code was used up)"
                return DerivRejected(reference, answer.code, detail)
            self._held_codes[reference] = (code, trio.current_time())
        return answer

    async def _withdraw_with(
        self, token: str, usd_cents: int, code: str, reference: str
    ) -> Input:
        try:
            result = await self.gateway.paymentagent_withdraw(
                token, self.agent_login_id, usd_cents, "USD", code, reference
            )
        except deriv.OutcomeUnknown as exc:
            return DerivUnknown(reference, exc.reason)
        except deriv.DerivApiError as exc:
            return _error_answer(reference, exc)
        except deriv.DerivError as exc:
            return DerivUnknown(reference, str(exc))
        if result.transaction_id is None:
            return DerivUnknown(reference, "Deriv answered without a transaction id")
        return DerivCredited(reference, result.transaction_id)

    def _take_held_code(self, reference: str) -> str:
        """The code kept for ``reference``'s resend ("" if none, or too old); forgets it."""
        now = trio.current_time()
        for stale in [r for r, (_, at) in self._held_codes.items() if now - at > HELD_CODE_TTL_S]:
            del self._held_codes[stale]
        code, _ = self._held_codes.pop(reference, ("", now))
        return code

    async def _find(self, expected: deriv.ExpectedRow, since_ms: int) -> Input | None:
        """Look for the call's row in the agent's statement; None: no answer this time.

        Only rows from ``since_ms`` (our clock; less the margin) on are read:
        the transfer cannot be older than the transaction that made it. A row
        counts only with the reference, amount, direction and client expected;
        rows with the reference alone are reported as a conflict.
        """
        reference = expected.reference
        try:
            date_from = await self._deriv_time_of(since_ms) if since_ms else None
            match = await self.gateway.search_statement(expected, date_from=date_from)
        except deriv.ReconciliationIncomplete:
            log.warning("statement lookup for %r reached its page limit", reference)
            return None
        except deriv.DerivError as exc:
            log.info("statement lookup for %r failed: %s", reference, exc)
            return None  # the transaction's lookup deadline asks again
        if match.found is not None:
            return DerivLookup(reference, match.found.transaction_id)
        if not match.conflicts:
            return DerivLookup(reference, None)
        conflict = "; ".join(match.conflicts)[:CONFLICT_CHARS_MAX]
        log.warning("statement rows carry %r but are not its call: %s", reference, conflict)
        return DerivLookup(reference, None, conflict)

    async def _deriv_time_of(self, since_ms: int) -> int:
        """``since_ms`` on Deriv's clock, less the margin: where a lookup starts."""
        offset_s = int(await self.gateway.deriv_clock_s()) - self.clock.now_ms() // 1000
        return max(since_ms // 1000 + offset_s - STATEMENT_CLOCK_MARGIN_S, 0)

    def unknown(self, command: Command, reason: str) -> Input | None:
        match command:
            case CreditDeriv(reference=reference) | WithdrawFromDeriv(reference=reference):
                return DerivUnknown(reference, reason)
        return None


def _error_answer(reference: str, error: deriv.DerivApiError) -> Input:
    """The input for Deriv's error answer to a money call, by what the error proves.

    See :func:`~penpay.actors.deriv.money_call_verdict` (protocols.md 2.7, 2.10):
    only an error that proves nothing moved may refund a deposit or fail a
    withdrawal; any other is settled from the statement.
    """
    match deriv.money_call_verdict(error):
        case deriv.MoneyCallVerdict.NOT_DONE:
            return DerivRejected(reference, error.code, error.message)
        case deriv.MoneyCallVerdict.RETRY_LATER:
            return DerivRetryLater(reference, error.code, error.message)
    return DerivUnknown(reference, f"{error.code}: {error.message}")
