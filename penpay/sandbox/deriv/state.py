"""The Deriv sandbox's world: accounts, tokens, codes, caps, statements, faults.

Pure state and rules, no I/O: the protocol layer (:mod:`.protocol`) turns
requests into calls on :class:`DerivWorld` and :class:`DerivApiError` into
error envelopes. Money is integer cents throughout. Monotonic time comes from
an injected callable (``trio.current_time`` by default, so ``MockClock``
drives code expiry); wall-clock time (statement timestamps, daily caps) from
another injected callable; randomness (codes, ids, fault probabilities) from
an injected :class:`random.Random`.

Business rules follow protocols.md §2.7 and §2.8 (Deriv's ``Cashier.pm``):
checks run in the documented order and every refusal carries Deriv's code and
message.
"""

from __future__ import annotations

import enum
import itertools
import random
import string
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import trio

from penpay.actors.deriv.wire import format_major

CODE_ALPHABET = string.ascii_letters + string.digits
CODE_LENGTH = 8
CODE_TTL_S = 3600.0
PURPOSE_PA_WITHDRAW = "paymentagent_withdraw"
DEFAULT_RATE_LIMIT_PER_MIN = 220
IDLE_TIMEOUT_S = 120.0
STATEMENT_LIMIT_MAX = 999


class DerivApiError(Exception):
    """A refusal the sandbox answers as ``{"error": {code, message, details?}}``."""

    def __init__(self, code: str, message: str, details: Mapping[str, object] | None = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = dict(details) if details else None


def transfer_error(message: str) -> DerivApiError:
    return DerivApiError("PaymentAgentTransferError", message)


def withdraw_error(message: str) -> DerivApiError:
    return DerivApiError("PaymentAgentWithdrawError", message)


INSUFFICIENT_BALANCE = "Your account balance is insufficient for this transaction."
TOO_MANY_DECIMALS = "Invalid amount. Amount provided can not have more than 2 decimal places."
TOKEN_INVALID = "Your token has expired or is invalid."
TOKEN_BAD_SESSION = (
    "The token you used is invalid in this session. Please get a new token and try again."
)


@dataclass
class PaymentAgentTerms:
    """What makes an account a payment agent, with its limits (cents).

    Defaults are Deriv's 2024 server config (protocols.md §0.10): USD 10-2000
    per transfer, 1000 transfers and USD 200,000 per day.
    """

    name: str | None = None
    min_cents: int = 1_000
    max_cents: int = 200_000
    daily_count_max: int = 1_000
    daily_amount_cents_max: int = 20_000_000


@dataclass
class ClientWithdrawalCaps:
    """A client's daily payment-agent withdrawal caps (weekday / weekend)."""

    daily_count_max: int = 20
    weekday_amount_cents_max: int = 500_000
    weekend_amount_cents_max: int = 150_000


@dataclass
class StatementEntry:
    """One line of an account's statement; ``amount_cents`` is signed."""

    transaction_id: int
    action_type: str  # "deposit" | "withdrawal"
    amount_cents: int
    balance_after_cents: int
    transaction_time: int  # Unix seconds
    longcode: str
    reference: str


@dataclass
class Account:
    loginid: str
    email: str
    fullname: str
    currency: str
    balance_cents: int
    is_virtual: bool = False
    country: str = "ke"
    payment_agent: PaymentAgentTerms | None = None
    withdrawal_caps: ClientWithdrawalCaps = field(default_factory=ClientWithdrawalCaps)
    statement: list[StatementEntry] = field(default_factory=list)  # oldest first
    #: Deriv's numeric user id, as ``authorize`` reports it: one per account, in order.
    user_id: int = 0

    @property
    def agent_name(self) -> str:
        if self.payment_agent and self.payment_agent.name:
            return self.payment_agent.name
        return self.fullname


@dataclass(frozen=True)
class Token:
    token: str
    loginid: str
    scopes: frozenset[str]


@dataclass
class VerificationCode:
    code: str
    email: str
    purpose: str
    expires_at: float  # monotonic seconds


@dataclass(frozen=True)
class Mail:
    """A message the sandbox "e-mailed"; tests read the code from here."""

    email: str
    purpose: str
    code: str
    subject: str
    sent_at: datetime


@dataclass(frozen=True)
class MoneyMove:
    """An applied transfer or withdrawal, as the sandbox's own audit log."""

    kind: str  # "paymentagent_transfer" | "paymentagent_withdraw"
    from_loginid: str
    to_loginid: str
    amount_cents: int
    currency: str
    description: str
    transaction_id: int  # the caller's (debited) leg
    reference: str


class FaultKind(enum.StrEnum):
    """How a call misbehaves (see doc/sandbox-deriv.md)."""

    DROP_BEFORE_APPLY = "drop_before_apply"
    DROP_AFTER_APPLY = "drop_after_apply"
    RECEIVE_FAILED = "receive_failed"
    ERROR = "error"
    DELAY = "delay"


@dataclass
class Fault:
    """A fault armed for one call type.

    It fires for the next ``times`` calls (``None``: unlimited), each with
    ``probability`` (drawn from the world's seeded ``Random``).
    """

    call: str
    kind: FaultKind
    times: int | None = 1
    probability: float = 1.0
    code: str = "PaymentAgentTransferError"
    message: str = "Request too frequent. Please try again later."
    delay_s: float = 0.0
    fired: int = 0


@dataclass
class _DailyUsage:
    count: int = 0
    amount_cents: int = 0


BalanceListener = Callable[[Account], None]


def _default_wall_anchor() -> datetime:
    return datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)  # a Monday


class DerivWorld:
    """Everything the fake Deriv knows, plus the control API that scripts it.

    One world can serve many connections (real sockets and in-memory pairs
    alike). It must be used from inside ``trio.run`` (time is trio time).
    """

    def __init__(
        self,
        *,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = trio.current_time,
        wall_clock: Callable[[], datetime] | None = None,
        rate_limit_per_min: int | None = DEFAULT_RATE_LIMIT_PER_MIN,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        code_ttl_s: float = CODE_TTL_S,
    ) -> None:
        self.rng = rng if rng is not None else random.Random(0)
        self.monotonic = monotonic
        self._wall_clock = wall_clock
        self._wall_base: tuple[datetime, float] | None = None
        self.rate_limit_per_min = rate_limit_per_min
        self.idle_timeout_s = idle_timeout_s
        self.code_ttl_s = code_ttl_s
        self.payments_suspended = False
        self.accounts: dict[str, Account] = {}
        self.tokens: dict[str, Token] = {}
        self.codes: dict[str, VerificationCode] = {}
        #: The one outstanding code per (e-mail, purpose): issuing replaces it.
        self._code_for: dict[tuple[str, str], str] = {}
        self._emails: set[str] = set()
        self.mail: list[Mail] = []
        self.moves: list[MoneyMove] = []
        self.faults: list[Fault] = []
        self._next_transaction_id = 40_000_001
        self._daily: dict[tuple[str, str, str], _DailyUsage] = {}
        self._listeners: dict[str, dict[int, BalanceListener]] = {}
        self._next_listener = 1
        self._connections: dict[int, Callable[[], None]] = {}
        self._next_connection = 1

    # -- time and ids -------------------------------------------------------

    def now(self) -> datetime:
        """Wall-clock time: the injected clock, else a fixed anchor + trio time."""
        if self._wall_clock is not None:
            return self._wall_clock()
        if self._wall_base is None:
            self._wall_base = (_default_wall_anchor(), self.monotonic())
        anchor, base = self._wall_base
        return anchor + timedelta(seconds=self.monotonic() - base)

    def _transaction_id(self) -> int:
        tid = self._next_transaction_id
        self._next_transaction_id += 1
        return tid

    def new_uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    # -- control API: accounts and tokens -----------------------------------

    def create_account(
        self,
        loginid: str,
        *,
        email: str,
        fullname: str,
        currency: str = "USD",
        balance_cents: int = 0,
        is_virtual: bool = False,
        country: str = "ke",
        payment_agent: PaymentAgentTerms | bool | None = None,
        withdrawal_caps: ClientWithdrawalCaps | None = None,
        tokens: Mapping[str, Iterable[str]] | None = None,
    ) -> Account:
        """Create an account; ``tokens`` maps each API token to its scopes."""
        loginid = loginid.upper()
        if loginid in self.accounts:
            raise ValueError(f"account {loginid} exists")
        if isinstance(balance_cents, bool) or not isinstance(balance_cents, int):
            raise TypeError("balance_cents must be an int")
        terms = PaymentAgentTerms() if payment_agent is True else payment_agent or None
        account = Account(
            loginid=loginid,
            email=email,
            fullname=fullname,
            currency=currency,
            balance_cents=balance_cents,
            is_virtual=is_virtual,
            country=country,
            payment_agent=terms,
            withdrawal_caps=withdrawal_caps or ClientWithdrawalCaps(),
            user_id=10_000 + len(self.accounts),
        )
        self.accounts[loginid] = account
        self._emails.add(email)
        for token, scopes in (tokens or {}).items():
            self.add_token(token, loginid, scopes)
        return account

    def add_token(self, token: str, loginid: str, scopes: Iterable[str]) -> Token:
        if loginid.upper() not in self.accounts:
            raise KeyError(f"no account {loginid}")
        entry = Token(token, loginid.upper(), frozenset(scopes))
        self.tokens[token] = entry
        return entry

    def revoke_token(self, token: str) -> None:
        self.tokens.pop(token, None)

    def account(self, loginid: str) -> Account:
        try:
            return self.accounts[loginid.upper()]
        except KeyError:
            raise KeyError(f"no account {loginid}") from None

    def balance_cents(self, loginid: str) -> int:
        return self.account(loginid).balance_cents

    def set_balance(self, loginid: str, balance_cents: int) -> None:
        """Operator adjustment; pushes to balance subscribers like a real change."""
        account = self.account(loginid)
        account.balance_cents = balance_cents
        self._notify(account)

    def statement_of(self, loginid: str) -> list[StatementEntry]:
        """The account's statement, newest first (as Deriv returns it)."""
        return list(reversed(self.account(loginid).statement))

    # -- control API: mailbox, faults, limits, connections ---------------------

    def mailbox(self, email: str | None = None) -> list[Mail]:
        return [m for m in self.mail if email is None or m.email == email]

    def latest_code(self, email: str, purpose: str = PURPOSE_PA_WITHDRAW) -> str | None:
        """The last code mailed to ``email`` for ``purpose`` (valid or not)."""
        for m in reversed(self.mail):
            if m.email == email and m.purpose == purpose:
                return m.code
        return None

    def expire_codes(self, email: str | None = None) -> int:
        """Make outstanding verification codes (of ``email``, or all) expire now."""
        now = self.monotonic()
        expired = 0
        for entry in self.codes.values():
            if email is None or entry.email == email:
                entry.expires_at = now
                expired += 1
        return expired

    def inject_fault(
        self,
        call: str,
        kind: FaultKind | str,
        *,
        times: int | None = 1,
        probability: float = 1.0,
        code: str | None = None,
        message: str | None = None,
        delay_s: float = 0.0,
    ) -> Fault:
        """Arm a fault for ``call`` (e.g. ``"paymentagent_transfer"``)."""
        if not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be within [0, 1]")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        kind = FaultKind(kind)
        default_code = (
            "PaymentAgentWithdrawError"
            if call == "paymentagent_withdraw"
            else "PaymentAgentTransferError"
        )
        fault = Fault(
            call=call,
            kind=kind,
            times=times,
            probability=probability,
            code=code or default_code,
            message=message or "Request too frequent. Please try again later.",
            delay_s=delay_s,
        )
        self.faults.append(fault)
        return fault

    def clear_faults(self, call: str | None = None) -> None:
        self.faults = [f for f in self.faults if call is not None and f.call != call]

    def take_fault(self, call: str) -> Fault | None:
        """The fault that fires for this call, if any (consumes one use)."""
        for fault in self.faults:
            if fault.call != call:
                continue
            if fault.probability < 1.0 and self.rng.random() >= fault.probability:
                continue
            fault.fired += 1
            if fault.times is not None:
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
            return fault
        return None

    def set_rate_limit(self, per_minute: int | None) -> None:
        """Calls per minute per connection for non-ping calls; ``None`` lifts it."""
        if per_minute is not None and per_minute < 1:
            raise ValueError("per_minute must be >= 1 or None")
        self.rate_limit_per_min = per_minute

    def lift_rate_limit(self) -> None:
        self.rate_limit_per_min = None

    def register_connection(self, close: Callable[[], None]) -> int:
        cid = self._next_connection
        self._next_connection += 1
        self._connections[cid] = close
        return cid

    def unregister_connection(self, cid: int) -> None:
        self._connections.pop(cid, None)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def drop_connections(self) -> int:
        """Abruptly close every live connection (a network blip); returns how many."""
        closers = list(self._connections.values())
        for close in closers:
            close()
        return len(closers)

    # -- balance stream -----------------------------------------------------

    def add_balance_listener(self, loginid: str, listener: BalanceListener) -> int:
        handle = self._next_listener
        self._next_listener += 1
        self._listeners.setdefault(loginid, {})[handle] = listener
        return handle

    def remove_balance_listener(self, loginid: str, handle: int) -> None:
        self._listeners.get(loginid, {}).pop(handle, None)

    def _notify(self, account: Account) -> None:
        for listener in list(self._listeners.get(account.loginid, {}).values()):
            listener(account)

    # -- calls --------------------------------------------------------------

    def authorize(self, token: str) -> Token:
        entry = self.tokens.get(token)
        if entry is None or entry.loginid not in self.accounts:
            raise DerivApiError("InvalidToken", "The token is invalid.")
        return entry

    def issue_code(self, email: str, purpose: str) -> str | None:
        """``verify_email``: mail a fresh code, deleting the previous one (latest wins).

        Returns the code, or ``None`` when no account has that e-mail (Deriv
        answers 1 either way, so the caller cannot probe for accounts).
        """
        if email not in self._emails:
            return None
        previous = self.codes.get(self._code_for.pop((email, purpose), ""))
        if previous is not None and (previous.email, previous.purpose) == (email, purpose):
            del self.codes[previous.code]
        code = "".join(self.rng.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        while code in self.codes:  # pragma: no cover - 62**8 space
            code = "".join(self.rng.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        self.codes[code] = VerificationCode(
            code, email, purpose, self.monotonic() + self.code_ttl_s
        )
        self._code_for[email, purpose] = code
        self.mail.append(Mail(email, purpose, code, "Do you wish to withdraw funds?", self.now()))
        return code

    def spend_withdrawal_code(self, client_loginid: str, code: str) -> None:
        """The code check a withdrawal passes first, deleting the code (protocols.md 2.8).

        For an injected refusal that Deriv makes after that check (BI102
        "Request too frequent", maintenance): the code is gone all the same.
        """
        self._consume_code(code, self.account(client_loginid).email, PURPOSE_PA_WITHDRAW)

    def _consume_code(self, code: str, email: str, purpose: str) -> None:
        entry = self.codes.get(code)
        if entry is None or entry.expires_at <= self.monotonic():
            self.codes.pop(code, None)
            raise DerivApiError("InvalidToken", TOKEN_INVALID)
        if entry.purpose != purpose:
            del self.codes[code]
            raise DerivApiError("InvalidToken", TOKEN_INVALID)
        if entry.email != email:
            raise DerivApiError("BadSession", TOKEN_BAD_SESSION)
        del self.codes[code]

    def _usage(self, loginid: str, kind: str) -> _DailyUsage:
        key = (loginid, kind, self.now().date().isoformat())
        return self._daily.setdefault(key, _DailyUsage())

    def paymentagent_transfer(
        self,
        agent_loginid: str,
        *,
        transfer_to: str,
        amount_cents: int | None,
        currency: str,
        description: str,
        dry_run: bool,
    ) -> tuple[Account, MoneyMove | None]:
        """Validate (in Deriv's order) and, unless ``dry_run``, move agent -> client.

        ``amount_cents`` is ``None`` when the amount had more than 2 decimals.
        """
        agent = self.account(agent_loginid)
        if agent.is_virtual:
            raise DerivApiError("PermissionDenied", "Permission denied.")
        if amount_cents is None:
            raise transfer_error(TOO_MANY_DECIMALS)
        if amount_cents <= 0:
            raise transfer_error("Invalid amount.")
        if self.payments_suspended:
            raise transfer_error(
                "Sorry, this facility is temporarily disabled due to system maintenance."
            )
        terms = agent.payment_agent
        if terms is None:
            raise transfer_error("You are not authorized for transfers via payment agents.")
        client = self.accounts.get(transfer_to.upper())
        if client is None:
            raise transfer_error(f"Login ID ({transfer_to.upper()}) does not exist.")
        if client.loginid == agent.loginid:
            raise transfer_error("Payment agent transfers are not allowed within the same account.")
        if currency != agent.currency:
            raise transfer_error(
                f"You cannot perform this action, as {currency} is not the default account "
                f"currency for payment agent {agent.loginid}."
            )
        if currency != client.currency:
            raise transfer_error(
                f"You cannot perform this action, as {currency} is not the default account "
                f"currency for client {client.loginid}."
            )
        if not terms.min_cents <= amount_cents <= terms.max_cents:
            raise transfer_error(
                f"Invalid amount. Minimum is {format_major(terms.min_cents)}, "
                f"maximum is {format_major(terms.max_cents)}."
            )
        usage = self._usage(agent.loginid, "pa_transfer")
        if usage.count + 1 > terms.daily_count_max:
            raise transfer_error(
                "Payment agent transfers are not allowed, as you have exceeded the maximum "
                "allowable transactions for today."
            )
        if usage.amount_cents + amount_cents > terms.daily_amount_cents_max:
            raise transfer_error(
                "Payment agent transfers are not allowed, as you have exceeded the maximum "
                "allowable transfer amount for today."
            )
        if agent.balance_cents < amount_cents:
            raise transfer_error(INSUFFICIENT_BALANCE)
        if dry_run:
            return client, None
        usage.count += 1
        usage.amount_cents += amount_cents
        reference = self.new_uuid()
        remark = (
            f"Transfer from Payment Agent {agent.agent_name} ({agent.loginid}) to "
            f"{client.loginid}. Transaction reference: {reference}. "
            f"Timestamp: {self._stamp()}."
        )
        if description:
            remark += f" Agent note: {description}"
        move = self._move(
            "paymentagent_transfer", agent, client, amount_cents, description, remark, reference
        )
        return client, move

    def paymentagent_withdraw(
        self,
        client_loginid: str,
        *,
        paymentagent_loginid: str,
        amount_cents: int | None,
        currency: str,
        verification_code: str,
        description: str,
        dry_run: bool,
    ) -> tuple[Account, MoneyMove | None]:
        """Check the code (unless ``dry_run``), the rules, then move client -> agent.

        As in Deriv, a valid code is consumed by the check itself, so a later
        business refusal still spends it.
        """
        client = self.account(client_loginid)
        if client.is_virtual:
            raise DerivApiError("PermissionDenied", "Permission denied.")
        if not dry_run:
            self._consume_code(verification_code, client.email, PURPOSE_PA_WITHDRAW)
        if amount_cents is None:
            raise withdraw_error(TOO_MANY_DECIMALS)
        if amount_cents <= 0:
            raise withdraw_error("Invalid amount.")
        if self.payments_suspended:
            raise withdraw_error(
                "Sorry, this facility is temporarily disabled due to system maintenance."
            )
        agent = self.accounts.get(paymentagent_loginid.upper())
        if agent is None or agent.payment_agent is None:
            raise withdraw_error("Please enter a valid payment agent ID.")
        terms = agent.payment_agent
        if agent.loginid == client.loginid:
            raise withdraw_error("You cannot withdraw funds to the same account.")
        if currency != client.currency or currency != agent.currency:
            raise withdraw_error(
                f"You cannot perform this action, as {currency} is not the default account "
                f"currency for payment agent {agent.loginid}."
                if currency != agent.currency
                else f"You cannot perform this action, as {currency} is not the default "
                f"account currency for client {client.loginid}."
            )
        if not terms.min_cents <= amount_cents <= terms.max_cents:
            raise withdraw_error(
                f"Invalid amount. Minimum is {format_major(terms.min_cents)}, "
                f"maximum is {format_major(terms.max_cents)}."
            )
        caps = client.withdrawal_caps
        usage = self._usage(client.loginid, "pa_withdraw")
        weekend = self.now().weekday() >= 5
        amount_max = caps.weekend_amount_cents_max if weekend else caps.weekday_amount_cents_max
        if usage.count + 1 > caps.daily_count_max:
            raise withdraw_error(
                "Payment agent withdrawals are not allowed, as you have exceeded the maximum "
                "allowable transactions for today."
            )
        if usage.amount_cents + amount_cents > amount_max:
            raise withdraw_error(
                "Payment agent withdrawals are not allowed, as you have exceeded the maximum "
                "allowable withdrawal amount for today."
            )
        if client.balance_cents < amount_cents:
            raise withdraw_error(INSUFFICIENT_BALANCE)
        if dry_run:
            return agent, None
        usage.count += 1
        usage.amount_cents += amount_cents
        reference = self.new_uuid()
        remark = (
            f"Transfer from {client.loginid} to Payment Agent {agent.agent_name} "
            f"({agent.loginid}) Transaction reference: {reference} Timestamp: {self._stamp()}."
        )
        if description:
            remark += f" Client note: {description}"
        move = self._move(
            "paymentagent_withdraw", client, agent, amount_cents, description, remark, reference
        )
        return agent, move

    def _stamp(self) -> str:
        return self.now().astimezone(UTC).strftime("%d%b%y %H:%M:%S") + "GMT"

    def _move(
        self,
        kind: str,
        source: Account,
        target: Account,
        amount_cents: int,
        description: str,
        remark: str,
        reference: str,
    ) -> MoneyMove:
        if amount_cents <= 0 or source.balance_cents < amount_cents:
            raise AssertionError("a move must be positive and covered")  # checked above
        when = int(self.now().timestamp())
        debit_id = self._transaction_id()
        credit_id = self._transaction_id()
        source.balance_cents -= amount_cents
        target.balance_cents += amount_cents
        source.statement.append(
            StatementEntry(
                debit_id, "withdrawal", -amount_cents, source.balance_cents, when, remark, reference
            )
        )
        target.statement.append(
            StatementEntry(
                credit_id, "deposit", amount_cents, target.balance_cents, when, remark, reference
            )
        )
        move = MoneyMove(
            kind,
            source.loginid,
            target.loginid,
            amount_cents,
            source.currency,
            description,
            debit_id,
            reference,
        )
        self.moves.append(move)
        self._notify(source)
        self._notify(target)
        return move

    def statement(
        self,
        loginid: str,
        *,
        limit: int = 100,
        offset: int = 0,
        action_type: str | None = None,
        date_from: int | None = None,
        date_to: int | None = None,
    ) -> list[StatementEntry]:
        """Newest first, filtered then paged (``date_to`` inclusive, Unix seconds)."""
        newest_first: Iterable[StatementEntry] = reversed(self.account(loginid).statement)
        if date_from is not None:
            # Entries are appended as they happen, so the rest are older still.
            newest_first = itertools.takewhile(
                lambda e: e.transaction_time >= date_from, newest_first
            )
        matching = (
            e
            for e in newest_first
            if (action_type is None or e.action_type == action_type)
            and (date_to is None or e.transaction_time <= date_to)
        )
        return list(itertools.islice(matching, offset, offset + limit))
