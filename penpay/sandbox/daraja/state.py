"""The simulated M-Pesa world: tokens, customers, faults, money and records.

This module does no I/O and never sleeps. The routes (``app.py``) ask it what
happens, and the sandbox's tasks tell it when time has passed. Monotonic time
(``trio.current_time()``) is passed in for token expiry; wall-clock time (for
receipts and timestamps) is passed in as an aware ``datetime``.
"""

from __future__ import annotations

import enum
import random
import string
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from penpay.sandbox.daraja.config import DarajaSandboxConfig

NAIROBI = timezone(timedelta(hours=3), "EAT")


class Endpoint(enum.StrEnum):
    """The Daraja endpoints a fault can be injected on."""

    OAUTH = "oauth"
    STK_PUSH = "stkpush"
    STK_QUERY = "stkquery"
    B2C = "b2c"
    TRANSACTION_STATUS = "transactionstatus"
    ACCOUNT_BALANCE = "accountbalance"


class FaultKind(enum.StrEnum):
    """What an injected fault does to one request."""

    HTTP_500 = "http_500"  # HTTP 500 with errorCode 500.003.1001, nothing happens
    TIMEOUT = "timeout"  # the request hangs for ``hang_s``; nothing happens
    NO_CALLBACK = "no_callback"  # accepted and processed, but never called back
    BUSY = "busy"  # HTTP 500 500.001.1001 with an empty message (the query flap)
    QUEUE_TIMEOUT = "queue_timeout"  # processed; notice goes to QueueTimeOutURL
    # Processed (money moves, callback sent) but the response never comes.
    TIMEOUT_AFTER_ACCEPT = "timeout_after_accept"


class Behaviour(enum.StrEnum):
    """How a scripted customer answers an STK prompt."""

    ACCEPT = "accept"
    CANCEL = "cancel"  # 1032
    INSUFFICIENT_FUNDS = "insufficient_funds"  # 1
    WRONG_PIN = "wrong_pin"  # 2001
    NO_ANSWER = "no_answer"  # 1037
    NO_CALLBACK = "no_callback"  # pays, but the callback is never sent
    DUPLICATE_CALLBACK = "duplicate_callback"  # pays, callback delivered twice
    LATE_CALLBACK = "late_callback"  # pays, callback after ``late_callback_delay_s``


# (ResultCode, callback ResultDesc, query ResultDesc): the prose differs on
# purpose, as observed (protocols.md 0.4): clients must map on the code.
STK_RESULTS: dict[Behaviour, tuple[int, str, str]] = {
    Behaviour.CANCEL: (1032, "Request cancelled by user", "Request Cancelled by user."),
    Behaviour.INSUFFICIENT_FUNDS: (
        1,
        "The balance is insufficient for the transaction.",
        "The balance is insufficient for the transaction.",
    ),
    Behaviour.WRONG_PIN: (
        2001,
        "The initiator information is invalid.",
        "The initiator information is invalid.",
    ),
    Behaviour.NO_ANSWER: (
        1037,
        "No response from user.",
        "DS timeout user cannot be reached.",
    ),
}
SUCCESS_DESC = "The service request is processed successfully."
INSUFFICIENT = STK_RESULTS[Behaviour.INSUFFICIENT_FUNDS]


@dataclass(slots=True)
class Customer:
    """One M-Pesa subscriber, keyed by 12-digit MSISDN."""

    phone: str
    behaviour: Behaviour
    delay_s: float
    balance_cents: int
    name: str


@dataclass(slots=True)
class FaultRule:
    """Fire ``kind`` on ``endpoint`` for the next ``remaining`` calls, or with
    ``probability`` per call (drawn from the sandbox's seeded RNG)."""

    endpoint: Endpoint
    kind: FaultKind
    remaining: int | None = None
    probability: float | None = None


@dataclass(slots=True)
class StkTransaction:
    """An STK Push from submission to its final result."""

    merchant_request_id: str
    checkout_request_id: str
    phone: str
    amount_cents: int
    account_reference: str
    callback_url: str
    behaviour: Behaviour
    delay_s: float
    suppress_callback: bool
    result_code: int | None = None  # None while the customer has not answered
    result_desc: str = ""
    query_desc: str = ""
    receipt: str | None = None
    completed_at: datetime | None = None


@dataclass(slots=True)
class B2CPayment:
    """A B2C payout request and, once processed, its result."""

    originator_conversation_id: str
    conversation_id: str
    phone: str
    amount_cents: int
    initiator_name: str
    security_credential: str
    result_url: str
    timeout_url: str
    initiated_at: datetime
    result_code: int | None = None
    result_desc: str = ""
    receipt: str | None = None
    completed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Collection:
    """Money collected by a successful STK Push."""

    receipt: str
    phone: str
    amount_cents: int
    checkout_request_id: str
    merchant_request_id: str
    completed_at: datetime


@dataclass(frozen=True, slots=True)
class Payout:
    """Money paid out by a successful B2C payment."""

    receipt: str
    phone: str
    amount_cents: int
    originator_conversation_id: str
    conversation_id: str
    completed_at: datetime


@dataclass(slots=True)
class Accounts:
    """The merchant's M-Pesa accounts: STK credits Working, B2C debits Utility."""

    working_cents: int
    utility_cents: int


@dataclass(slots=True)
class _Token:
    value: str
    consumer_key: str
    expires_at: float  # trio time


class TokenVerdict(enum.Enum):
    VALID = "valid"
    MISSING = "missing"
    INVALID = "invalid"


@dataclass(slots=True)
class World:
    """All mutable sandbox state; ``reset()`` returns it to the start."""

    config: DarajaSandboxConfig
    rng: random.Random
    customers: dict[str, Customer] = field(default_factory=dict)
    faults: list[FaultRule] = field(default_factory=list)
    stk: dict[str, StkTransaction] = field(default_factory=dict)
    b2c: dict[str, B2CPayment] = field(default_factory=dict)  # by OriginatorConversationID
    collections: list[Collection] = field(default_factory=list)
    payouts: list[Payout] = field(default_factory=list)
    accounts: Accounts = field(default_factory=lambda: Accounts(0, 0))
    request_counts: dict[str, int] = field(default_factory=dict)
    _tokens: dict[str, _Token] = field(default_factory=dict)  # by consumer key
    _used_ids: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every token, customer, fault, transaction and record."""
        self.customers.clear()
        self.faults.clear()
        self.stk.clear()
        self.b2c.clear()
        self.collections.clear()
        self.payouts.clear()
        self.request_counts.clear()
        self._tokens.clear()
        self._used_ids.clear()
        self.accounts = Accounts(
            self.config.initial_working_account_cents,
            self.config.initial_utility_account_cents,
        )

    # ---- OAuth --------------------------------------------------------------

    def mint_token(self, consumer_key: str, now: float) -> tuple[str, int]:
        """A new 28-character token; the previous one for this key dies."""
        value = "".join(self.rng.choices(string.ascii_letters + string.digits, k=28))
        self._tokens[consumer_key] = _Token(value, consumer_key, now + self.config.token_ttl_s)
        return value, int(self.config.token_ttl_s)

    def check_token(self, authorization: str | None, now: float) -> TokenVerdict:
        """Is ``Authorization: Bearer <token>`` the live, unexpired token?"""
        if not authorization or not authorization.startswith("Bearer "):
            return TokenVerdict.MISSING
        value = authorization.removeprefix("Bearer ").strip()
        for token in self._tokens.values():
            if token.value == value and now < token.expires_at:
                return TokenVerdict.VALID
        return TokenVerdict.INVALID

    # ---- customers and faults ----------------------------------------------

    def customer(self, phone: str) -> Customer:
        """The scripted customer for ``phone``, created with defaults on first use."""
        found = self.customers.get(phone)
        if found is None:
            found = Customer(
                phone=phone,
                behaviour=Behaviour.ACCEPT,
                delay_s=self.config.default_customer_delay_s,
                balance_cents=self.config.default_customer_balance_cents,
                name=self.config.customer_names.get(phone, "John Doe"),
            )
            self.customers[phone] = found
        return found

    def count(self, endpoint: Endpoint) -> None:
        """Record that a request reached ``endpoint`` (tests assert on it)."""
        self.request_counts[endpoint] = self.request_counts.get(endpoint, 0) + 1

    def take_fault(self, endpoint: Endpoint) -> FaultKind | None:
        """Consume the first fault rule for ``endpoint`` that fires now."""
        for rule in list(self.faults):
            if rule.endpoint is not endpoint:
                continue
            if rule.remaining is not None:
                if rule.remaining <= 0:
                    continue
                rule.remaining -= 1
                if rule.remaining == 0 and rule.probability is None:
                    self.faults.remove(rule)
                return rule.kind
            if rule.probability is not None and self.rng.random() < rule.probability:
                return rule.kind
        return None

    # ---- identifiers -------------------------------------------------------

    def _unique(self, make: str) -> str:
        if make in self._used_ids:
            raise _Collision
        self._used_ids.add(make)
        return make

    def _digits(self, n: int) -> str:
        return "".join(self.rng.choices(string.digits, k=n))

    def _hex(self, n: int) -> str:
        return "".join(self.rng.choices("0123456789abcdef", k=n))

    def new_id(self, kind: str, wall: datetime) -> str:
        """A fresh Daraja-looking identifier of ``kind``.

        ``checkout``: ``ws_CO_<ddmmyyyyHHMMSS Nairobi><10 digits>``;
        ``merchant``: ``<4hex>-<4hex>-<4hex>-<12hex><7digits>``;
        ``conversation``: ``AG_<yyyymmdd>_<20hex>``; ``receipt``: 10 upper
        alphanumerics starting with ``S``; ``originator``: like ``merchant``.
        """
        eat = wall.astimezone(NAIROBI)
        for _ in range(100):
            if kind == "checkout":
                candidate = f"ws_CO_{eat:%d%m%Y%H%M%S}{self._digits(10)}"
            elif kind in ("merchant", "originator"):
                candidate = (
                    f"{self._hex(4)}-{self._hex(4)}-{self._hex(4)}-{self._hex(12)}{self._digits(7)}"
                )
            elif kind == "conversation":
                candidate = f"AG_{eat:%Y%m%d}_{self._hex(20)}"
            elif kind == "receipt":
                alphabet = string.ascii_uppercase + string.digits
                candidate = "S" + "".join(self.rng.choices(alphabet, k=9))
            elif kind == "request":
                candidate = f"{self._hex(4)}-{self._hex(4)}-{self._hex(15)}{self._digits(7)}"
            else:
                raise ValueError(f"unknown id kind {kind!r}")
            try:
                return self._unique(candidate)
            except _Collision:
                continue
        raise RuntimeError("could not generate a unique id in 100 attempts")

    # ---- STK ---------------------------------------------------------------

    def settle_stk(self, tx: StkTransaction, wall: datetime) -> None:
        """The customer answers: decide the result and move the money."""
        if tx.result_code is not None:
            return
        customer = self.customer(tx.phone)
        behaviour = tx.behaviour
        if behaviour in STK_RESULTS:
            tx.result_code, tx.result_desc, tx.query_desc = STK_RESULTS[behaviour]
        elif customer.balance_cents < tx.amount_cents:
            tx.result_code, tx.result_desc, tx.query_desc = INSUFFICIENT
        else:
            customer.balance_cents -= tx.amount_cents
            self.accounts.working_cents += tx.amount_cents
            tx.result_code, tx.result_desc, tx.query_desc = 0, SUCCESS_DESC, SUCCESS_DESC
            tx.receipt = self.new_id("receipt", wall)
            self.collections.append(
                Collection(
                    receipt=tx.receipt,
                    phone=tx.phone,
                    amount_cents=tx.amount_cents,
                    checkout_request_id=tx.checkout_request_id,
                    merchant_request_id=tx.merchant_request_id,
                    completed_at=wall,
                )
            )
        tx.completed_at = wall

    # ---- B2C ---------------------------------------------------------------

    def settle_b2c(self, payment: B2CPayment, wall: datetime) -> None:
        """Process a payout: check the initiator and limits, move the money."""
        if payment.result_code is not None:
            return
        cfg = self.config
        payment.completed_at = wall
        credential_ok = payment.security_credential != "" and (
            cfg.security_credential is None
            or payment.security_credential == cfg.security_credential
        )
        if payment.initiator_name != cfg.initiator_name or not credential_ok:
            payment.result_code = 2001
            payment.result_desc = "The initiator information is invalid."
            payment.receipt = self.new_id("receipt", wall)
            return
        if payment.amount_cents < cfg.b2c_min_kes * 100:
            payment.result_code, payment.result_desc = (
                2,
                "Declined due to limit rule: less than the minimum transaction amount.",
            )
            return
        if payment.amount_cents > cfg.b2c_max_kes * 100:
            payment.result_code, payment.result_desc = (
                3,
                "Declined due to limit rule: greater than the maximum transaction amount.",
            )
            return
        if self.accounts.utility_cents < payment.amount_cents:
            payment.result_code = 1
            payment.result_desc = "The balance is insufficient for the transaction."
            payment.receipt = self.new_id("receipt", wall)
            return
        self.accounts.utility_cents -= payment.amount_cents
        self.customer(payment.phone).balance_cents += payment.amount_cents
        payment.result_code, payment.result_desc = 0, SUCCESS_DESC
        payment.receipt = self.new_id("receipt", wall)
        self.payouts.append(
            Payout(
                receipt=payment.receipt,
                phone=payment.phone,
                amount_cents=payment.amount_cents,
                originator_conversation_id=payment.originator_conversation_id,
                conversation_id=payment.conversation_id,
                completed_at=wall,
            )
        )

    def find_for_status(
        self, originator_conversation_id: str | None, receipt: str | None
    ) -> B2CPayment | StkTransaction | None:
        """The completed transaction Transaction Status asks about, if any."""
        if originator_conversation_id:
            payment = self.b2c.get(originator_conversation_id)
            if payment is not None and payment.result_code is not None:
                return payment
        if receipt:
            for payment in self.b2c.values():
                if payment.receipt == receipt and payment.result_code == 0:
                    return payment
            for tx in self.stk.values():
                if tx.receipt == receipt:
                    return tx
        return None


class _Collision(Exception):
    """An identifier was generated twice; draw again."""
