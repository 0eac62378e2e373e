"""Payments: the application service between HTTP and the transaction actors.

It holds the business rules a request must pass before any money moves
(user status, a linked Deriv account, per-transaction limits, daily caps, a
locked FX quote) and the bookkeeping around a transaction's life: tying the
request's Idempotency-Key to one transaction id before the transaction
starts, and keeping the read model current as the actors report changes.
HTTP routes only translate requests and :class:`PaymentRefused` into wire
formats.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Protocol

import trio

from penpay.actors import deposit, withdrawal
from penpay.actors.callbacks import CallbackTokens
from penpay.actors.daraja import InvalidPhoneNumber, normalize_msisdn
from penpay.actors.deriv import DerivApiError, DerivError, DerivGateway, InvalidToken
from penpay.actors.fx import FxPolicy, Quote, TransactionType
from penpay.actors.index import REFUSED, TransactionIndex, TransactionRow
from penpay.actors.policy import Limits
from penpay.actors.saga import Resolve, Status
from penpay.actors.transaction import (
    AbandonIfNotStarted,
    DepositActor,
    GetState,
    TransactionActor,
    TransactionRefused,
    WithdrawalActor,
)
from penpay.actors.views import transaction_view
from penpay.engine import ActorSystem, EngineError
from penpay.errors import PenPayError
from penpay.money import Currency, MoneyError

log = logging.getLogger("penpay.payments")

NAIROBI = timezone(timedelta(hours=3))
#: A reserved transaction not started this long after its creation is closed by
#: :meth:`Payments.sweep_unstarted`: no Start can still be in flight by then.
UNSTARTED_GRACE_S = 300.0
#: How often :func:`run_unstarted_sweeper` looks.
UNSTARTED_SWEEP_INTERVAL_S = 60.0


class User(Protocol):
    """What the payments rules read of a user."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def status(self) -> str: ...

    @property
    def deriv_login_id(self) -> str | None: ...


class UserDirectory(Protocol):
    """Decrypts what is stored encrypted with a user, and records a Deriv link."""

    def phone_of(self, user: Any) -> str | None: ...

    def deriv_token_of(self, user: Any) -> str | None: ...

    async def link_deriv(
        self, user_id: uuid.UUID, *, login_id: str, currency: str, full_name: str, token: str
    ) -> Any: ...


class PaymentRefused(PenPayError):
    """A request that cannot proceed; ``status`` and ``code`` are the HTTP answer."""

    def __init__(self, status: int, code: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field


def _same_request(row: TransactionRow, quote: Quote, currency: Currency) -> None:
    """Refuse a key that already names a different transaction.

    The idempotency store forgets a finished key after 72 hours, but the key
    stays bound to its transaction here for good: reused later for another
    type or amount, it must not restart (or be answered with) the old one.
    """
    amount = (row.usd_cents, quote.usd_cents) if currency is Currency.USD else (
        row.kes_cents, quote.kes_cents
    )
    if row.type != quote.type.value or amount[0] != amount[1]:
        raise PaymentRefused(
            422, "idempotency_key_reused",
            "this Idempotency-Key was used for a different transaction",
        )


def day_start(now: datetime) -> datetime:
    """Midnight in Nairobi (caps reset on the user's calendar day), as UTC."""
    local = now.astimezone(NAIROBI)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


@dataclass
class Payments:
    system: ActorSystem
    index: TransactionIndex
    auth: UserDirectory
    deriv: DerivGateway | None
    tokens: CallbackTokens
    fx: FxPolicy
    limits: Limits
    #: Why new money movements must be refused now (a provider is down), or None.
    #: Refusing with 503 beats queueing money behind an outage.
    unavailable: Callable[[], str | None] = lambda: None
    #: Per user: held while a request's daily cap is checked and its row reserved.
    _admitting: dict[uuid.UUID, trio.Lock] = field(default_factory=dict, init=False, repr=False)

    # ------------------------------------------------------------------ quotes

    def quote(self, type: TransactionType, amount_cents: int, currency: Currency) -> Quote:
        try:
            return self.fx.quote(type, amount_cents, currency, self.system.clock.now_ms())
        except MoneyError as exc:
            raise PaymentRefused(422, "validation_failed", str(exc), "amount_cents") from None

    # ----------------------------------------------------------- eligibility

    def _eligible(self, user: User) -> None:
        reason = self.unavailable()
        if reason is not None:
            raise PaymentRefused(503, "temporarily_unavailable", reason)
        if user.status != "active":
            raise PaymentRefused(403, "account_inactive", f"the account is {user.status}")
        if not user.deriv_login_id or self.auth.deriv_token_of(user) is None:
            detail = "link a Deriv account first (PUT /me/deriv-account)"
            raise PaymentRefused(422, "deriv_account_not_linked", detail)

    def _phone(self, user: User, requested: str | None) -> str:
        raw = requested or self.auth.phone_of(user)
        if raw is None:
            raise PaymentRefused(422, "validation_failed", "no phone number", "phone_number")
        try:
            return normalize_msisdn(raw)
        except InvalidPhoneNumber as exc:
            raise PaymentRefused(422, "validation_failed", str(exc), "phone_number") from None

    async def _check_limits(self, user: User, quote: Quote) -> None:
        used = await self.index.used_usd_cents(
            user.id, quote.type.value, day_start(self.system.clock.now())
        )
        refusal = self.limits.refusal(quote.type, quote.usd_cents, used)
        if refusal is not None:
            code, detail = refusal
            raise PaymentRefused(422, code, detail, "amount_cents")

    @contextlib.asynccontextmanager
    async def _one_admission_at_a_time(self, user_id: uuid.UUID) -> AsyncIterator[None]:
        """Serialise one user's cap check and reservation.

        The cap counts reserved rows, so the check and the insert must be one
        step: two requests checked side by side would each see the other's
        amount missing, and both pass. PenPay is one process, so a lock here
        is that step; other users are not held up.
        """
        lock = self._admitting.setdefault(user_id, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._admitting.pop(user_id, None)  # the last one out

    async def used_today(self, user: User, type: TransactionType) -> int:
        return await self.index.used_usd_cents(
            user.id, type.value, day_start(self.system.clock.now())
        )

    # ---------------------------------------------------------------- starting

    async def _reserve(self, user: User, key: str, quote: Quote) -> TransactionRow:
        """Tie ``key`` to a new transaction id before the transaction starts."""
        now = self.system.clock.now()
        return await self.index.reserve(
            TransactionRow(
                id=self.system.entropy.uuid7(self.system.clock.now_ms()),
                user_id=user.id,
                type=quote.type.value,
                idempotency_key=key,
                status=Status.PENDING.value,
                usd_cents=quote.usd_cents,
                kes_cents=quote.kes_cents,
                created_at=now,
                updated_at=now,
                view={},
            )
        )

    async def _start(
        self, kind: type[TransactionActor], row: TransactionRow, start: Any
    ) -> dict[str, Any]:
        ref = self.system.ref(kind, str(row.id))
        try:
            state = await ref.ask(start)
        except TransactionRefused as exc:
            await self.index.update(row.id, REFUSED, {}, self.system.clock.now())
            raise PaymentRefused(503, exc.code, str(exc)) from None
        except EngineError as exc:
            # Timed out or crashed while starting: the transaction may exist. Ask
            # (after Start, in the same mailbox) whether it does; if it does not,
            # close the reserved row so it neither lingers nor counts towards caps.
            # Either way a 503 is not stored against the Idempotency-Key: the
            # client's retry finds this same transaction id, and Start is idempotent.
            # If that cannot be learnt either, sweep_unstarted closes it later.
            log.warning("starting %s: %s", row.id, exc)
            with contextlib.suppress(EngineError):
                await self.close_if_never_started(row)
            raise PaymentRefused(503, "temporarily_unavailable", "try again shortly") from None
        view = transaction_view(state)
        await self.index.update(row.id, state.status.value, view, self.system.clock.now())
        return view

    async def close_if_never_started(self, row: TransactionRow) -> bool:
        """Close a reserved row whose transaction never started; True if it was closed.

        The actor gives back what the failed Start held (a deposit's float
        hold), then the row is marked refused, so it neither lingers in the
        user's list nor counts towards caps. A retry with the same
        Idempotency-Key starts the same transaction afresh; if one did so
        between the two steps, the row is put back to the actor's state.
        """
        kind = _actor_kind(row)
        ref = self.system.ref(kind, str(row.id))
        if not await ref.ask(AbandonIfNotStarted()):
            return False
        await self.index.update(row.id, REFUSED, {}, self.system.clock.now())
        state = await ref.ask(GetState())
        if state.started:
            await self.observe(kind.kind, state)
            return False
        return True

    async def sweep_unstarted(self, *, older_than_s: float = UNSTARTED_GRACE_S) -> int:
        """Close every reserved row older than ``older_than_s`` that never started.

        Covers a Start that failed and whose outcome could not be learnt at
        the time (the actor crashed again when asked); returns how many were
        closed. Transactions that cannot answer now are left for the next sweep.
        """
        cutoff = self.system.clock.now() - timedelta(seconds=older_than_s)
        before: tuple[datetime, uuid.UUID] | None = (cutoff, uuid.UUID(int=0))
        closed = 0
        while before is not None:
            rows = await self.index.page(
                user_id=None, status=Status.PENDING.value, limit=500, before=before
            )
            for row in rows:
                try:
                    closed += await self.close_if_never_started(row)
                except EngineError as exc:
                    log.warning("closing unstarted %s %s: %s", row.type, row.id, exc)
            before = (rows[-1].created_at, rows[-1].id) if len(rows) == 500 else None
        return closed

    async def _admit(
        self, user: User, key: str, type: TransactionType, amount_cents: int,
        currency: Currency, phone: str | None,
    ) -> tuple[TransactionRow, dict[str, Any]]:
        """Every rule a money request must pass, then its transaction id reserved.

        Returns the reserved row and the fields both flows' Start messages share.
        """
        self._eligible(user)
        msisdn = self._phone(user, phone)
        quote = self.quote(type, amount_cents, currency)
        async with self._one_admission_at_a_time(user.id):
            row = await self.index.find(user.id, key)
            if row is not None:
                _same_request(row, quote, currency)
            if row is None or row.status == REFUSED:
                # A row that is live already counts towards the cap (and a
                # started one moves no more money): only new money is checked.
                await self._check_limits(user, quote)
            if row is None:
                row = await self._reserve(user, key, quote)
        assert user.deriv_login_id is not None
        transaction_id = str(row.id)
        return row, {
            "transaction_id": transaction_id,
            "user_id": str(user.id),
            "phone": msisdn,
            "deriv_login_id": user.deriv_login_id,
            "quote": quote,
            "callback_token": self.tokens.issue(type.value, transaction_id),
        }

    async def start_deposit(
        self, user: User, key: str, amount_cents: int, currency: Currency, phone: str | None
    ) -> dict[str, Any]:
        row, fields = await self._admit(
            user, key, TransactionType.DEPOSIT, amount_cents, currency, phone
        )
        return await self._start(DepositActor, row, deposit.Start(**fields))

    async def start_withdrawal(
        self,
        user: User,
        key: str,
        amount_cents: int,
        currency: Currency,
        verification_code: str,
        phone: str | None,
    ) -> dict[str, Any]:
        if currency is not Currency.USD:
            raise PaymentRefused(422, "validation_failed", "withdrawals are in USD", "currency")
        if not verification_code.isalnum() or not 6 <= len(verification_code) <= 128:
            raise PaymentRefused(
                422, "verification_code_invalid", "the verification code is malformed",
                "verification_code",
            )
        row, fields = await self._admit(
            user, key, TransactionType.WITHDRAWAL, amount_cents, currency, phone
        )
        start = withdrawal.Start(**fields, verification_code=verification_code)
        return await self._start(WithdrawalActor, row, start)

    # ------------------------------------------------------------------ Deriv

    def _deriv(self) -> DerivGateway:
        if self.deriv is None:
            raise PaymentRefused(503, "temporarily_unavailable", "Deriv is not connected")
        return self.deriv

    async def link_deriv(self, user: User, login_id: str, token: str) -> dict[str, Any]:
        """Confirm with Deriv that ``token`` belongs to the real USD account ``login_id``.

        A pending user links during onboarding; a suspended or closed one may
        not change what their account is tied to.
        """
        if user.status not in ("pending", "active"):
            raise PaymentRefused(403, "account_inactive", f"the account is {user.status}")
        try:
            info = await self._deriv().verify_user_token(token)
        except InvalidToken:
            raise PaymentRefused(422, "deriv_token_invalid", "Deriv rejected the token") from None
        except DerivApiError as exc:
            raise PaymentRefused(422, "deriv_token_invalid", exc.message) from None
        except DerivError as exc:
            raise PaymentRefused(503, "temporarily_unavailable", str(exc)) from None
        if info.loginid.upper() != login_id.upper():
            raise PaymentRefused(
                422, "deriv_account_mismatch", f"the token belongs to {info.loginid}",
                "deriv_login_id",
            )
        if info.is_virtual:
            raise PaymentRefused(422, "deriv_account_virtual", "a virtual account cannot be used")
        if info.currency != "USD":
            raise PaymentRefused(422, "deriv_account_not_usd", f"the account is {info.currency}")
        if "payments" not in info.scopes:
            raise PaymentRefused(
                422, "deriv_token_invalid", "the token needs the payments scope", "token"
            )
        await self.auth.link_deriv(
            user.id, login_id=info.loginid, currency=info.currency, full_name=info.fullname,
            token=token,
        )
        return {"login_id": info.loginid, "currency": info.currency, "full_name": info.fullname}

    async def request_withdrawal_code(self, user: User) -> None:
        self._eligible(user)
        token = self.auth.deriv_token_of(user)
        assert token is not None
        gateway = self._deriv()
        try:
            info = await gateway.verify_user_token(token)
            await gateway.request_withdrawal_code(token, info.email)
        except DerivApiError as exc:
            raise PaymentRefused(422, "deriv_token_invalid", exc.message) from None
        except DerivError as exc:
            raise PaymentRefused(503, "temporarily_unavailable", str(exc)) from None

    # ---------------------------------------------------------------- reading

    async def observe(self, kind: str, state: Any) -> None:
        """Keep the read model current; called by the actors on every status change."""
        try:
            await self.index.update(
                uuid.UUID(state.transaction_id), state.status.value,
                transaction_view(state), self.system.clock.now(),
            )
        except Exception:  # the read model must never stop a transaction
            log.exception("read model update for %s failed", state.transaction_id)

    async def view(self, transaction_id: str, user_id: uuid.UUID | None) -> dict[str, Any] | None:
        """One transaction, if it exists and (when ``user_id`` is given) is theirs."""
        try:
            key = uuid.UUID(transaction_id)
        except ValueError:
            return None
        row = await self.index.get(key)
        if row is None or row.status == REFUSED:
            return None
        if user_id is not None and row.user_id != user_id:
            return None
        return row.view

    async def resolve(self, transaction_id: str, action: str, note: str, operator: str) -> Any:
        row = await self.index.get(uuid.UUID(transaction_id))
        if row is None:
            raise PaymentRefused(404, "not_found", "no such transaction")
        kind = _actor_kind(row)
        try:
            state = await self.system.ref(kind, transaction_id).ask(
                Resolve(action, note, operator)
            )
        except TransactionRefused as exc:
            raise PaymentRefused(409, exc.code, str(exc)) from None
        except EngineError as exc:
            raise PaymentRefused(503, "temporarily_unavailable", str(exc)) from None
        return transaction_view(state)

    async def state_of(self, transaction_id: str) -> Any:
        row = await self.index.get(uuid.UUID(transaction_id))
        if row is None:
            return None
        kind = _actor_kind(row)
        return await self.system.ref(kind, transaction_id).ask(GetState())


async def run_unstarted_sweeper(
    payments: Payments, *, interval_s: float = UNSTARTED_SWEEP_INTERVAL_S
) -> None:
    """Forever: every ``interval_s``, :meth:`Payments.sweep_unstarted` (run in a nursery)."""
    while True:
        await trio.sleep(interval_s)
        try:
            closed = await payments.sweep_unstarted()
        except PenPayError as exc:  # storage unavailable: the next sweep tries again
            log.warning("sweeping unstarted transactions: %s", exc)
            continue
        if closed:
            log.info("closed %d reserved transactions that never started", closed)


def _actor_kind(row: TransactionRow) -> type[TransactionActor]:
    return DepositActor if row.type == "deposit" else WithdrawalActor
