"""PenPay's Deriv gateway: the agent's long-lived socket plus short-lived user sockets.

:class:`DerivGateway` owns the one agent connection. Its :meth:`~DerivGateway.run`
loop connects, authorizes with the agent token, subscribes to ``balance``
(keeping :attr:`~DerivGateway.agent_balance_cents` live), pings every 30 s
and reconnects with exponential back-off and jitter whenever the socket dies
or a pong is late; authorization and the subscription are restored on every
new socket.

Money rule: a ``paymentagent_transfer`` or ``paymentagent_withdraw`` that was
sent and got no answer (drop, timeout) raises
:class:`~penpay.actors.deriv.errors.OutcomeUnknown` and is never resent here.
The caller settles it with :meth:`~DerivGateway.search_statement` (or
:meth:`~DerivGateway.find_transfer`), which finds the row in the agent's
statement by the reference put in ``description``, its amount and its client.

``ping`` and ``time`` are outside the call budget but Deriv closes a socket
that sends more than 10 of them in a second (protocols.md 2.2, 2.11): they
have a budget of their own, and Deriv's clock is asked rarely and extrapolated
(:meth:`~DerivGateway.deriv_clock_s`).

Calls with a *user's* token (verify a linked account, ask Deriv to e-mail a
withdrawal code, withdraw to the agent) each use a fresh socket that is
authorized with that token and closed afterwards, so no user credential
ever touches the agent socket.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from penpay.actors.deriv.errors import (
    ConnectionLost,
    DerivApiError,
    DerivError,
    DerivTimeout,
    DerivUnavailable,
    OutcomeUnknown,
    ProtocolViolation,
    ReconciliationIncomplete,
    RequestInvalid,
    api_error,
)
from penpay.actors.deriv.ratelimit import TokenBucket
from penpay.actors.deriv.rpc import DerivRpc
from penpay.actors.deriv.transport import Connector, TransportClosed
from penpay.actors.deriv.wire import cents_to_number, number_to_cents

log = logging.getLogger(__name__)

T = TypeVar("T")

_DESCRIPTION = re.compile(r"[0-9A-Za-z .,'-]{0,250}")
_LOGINID = re.compile(r"[A-Za-z]+[0-9]+")
_CURRENCY = re.compile(r"[a-zA-Z0-9]{2,20}")
_MONEY_CALLS = frozenset({"paymentagent_transfer", "paymentagent_withdraw"})
#: Calls Deriv budgets in a row of their own (protocols.md 2.11).
_STATEMENT_BUDGET = frozenset({"statement", "balance"})


@dataclass(frozen=True)
class GatewayConfig:
    """Timeouts, limits and back-off; every unit is in the name."""

    call_timeout_s: float = 30.0
    connect_wait_s: float = 30.0
    """How long a call waits for the agent socket to be (re)connected before ``NotSent``."""
    ping_interval_s: float = 30.0
    pong_timeout_s: float = 10.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    backoff_jitter: float = 0.2
    """Each back-off delay is stretched by a random fraction in ``[0, jitter]``."""
    calls_per_min: int | None = 200
    """Own budget for the calls in Deriv's "all other calls" row (Deriv allows 220/min)
    on the agent socket; None lifts every budget but the pings'."""
    calls_burst: int = 10
    statement_calls_per_min: int = 90
    """Own budget for ``statement`` and ``balance``, a row of their own at Deriv:
    100/min and 2,000/h (protocols.md 2.11)."""
    statement_calls_per_hour: int = 1800
    pings_per_min: int = 240
    """Budget for ``ping``/``time`` on the agent socket. Deriv closes (1008) a
    connection sending more than 10 a second; burst + rate per second is 8."""
    pings_burst: int = 4
    clock_refresh_s: float = 300.0
    """How long a reading of Deriv's clock is extrapolated before ``time`` is asked again."""
    statement_page_size: int = 100
    statement_pages_max: int = 20


@dataclass(frozen=True)
class DerivAccountInfo:
    """What ``authorize`` says about a token's account."""

    loginid: str
    currency: str
    fullname: str
    email: str
    is_virtual: bool
    scopes: tuple[str, ...]
    balance_cents: int


@dataclass(frozen=True)
class TransferResult:
    """``paymentagent_transfer``: ``transaction_id`` is None for a dry run."""

    client_loginid: str
    client_full_name: str
    transaction_id: int | None
    dry_run: bool


@dataclass(frozen=True)
class WithdrawalResult:
    """``paymentagent_withdraw``: ``transaction_id`` is None for a dry run."""

    paymentagent_name: str
    transaction_id: int | None
    dry_run: bool


@dataclass(frozen=True)
class FoundTransfer:
    """A transfer located in the agent's statement (``amount_cents`` > 0)."""

    transaction_id: int
    amount_cents: int
    balance_after_cents: int
    transaction_time: int
    longcode: str


@dataclass(frozen=True)
class ExpectedRow:
    """The agent-statement row a money call under ``reference`` leaves, if it moved money.

    Build it with :meth:`transfer` or :meth:`withdrawal`; Deriv's remarks are
    quoted in protocols.md 2.7 and 2.8.
    """

    reference: str
    note: str
    action_type: str  # the agent's side: "withdrawal" (money out) or "deposit" (in)
    amount_cents: int  # signed, as the agent's statement shows it
    counterparty_marker: str  # how the remark names the client (loginid upper case)

    @classmethod
    def transfer(cls, reference: str, to_loginid: str, amount_cents: int) -> ExpectedRow:
        """A ``paymentagent_transfer`` to ``to_loginid``: "… (<PA>) to <CR>. Transaction …"."""
        login = to_loginid.upper()
        note = f"Agent note: {reference}"
        return cls(reference, note, "withdrawal", -amount_cents, f" to {login}.")

    @classmethod
    def withdrawal(cls, reference: str, from_loginid: str, amount_cents: int) -> ExpectedRow:
        """A ``paymentagent_withdraw`` by ``from_loginid``: "Transfer from <CR> to Payment Agent …".

        The note is the client's free text (any client may write ours), so the
        remark must *start* with the client's loginid.
        """
        login = from_loginid.upper()
        note = f"Client note: {reference}"
        return cls(reference, note, "deposit", amount_cents, f"Transfer from {login} to ")

    def names_counterparty(self, longcode: str) -> bool:
        """Whether the remark names the expected client in the expected place."""
        if self.action_type == "deposit":
            return longcode.startswith(self.counterparty_marker)
        return self.counterparty_marker in longcode


@dataclass(frozen=True)
class StatementMatch:
    """What a statement search saw for one :class:`ExpectedRow`.

    ``found``: the row with the note, amount, direction and client expected.
    ``conflicts``: rows with the note but another amount, direction or client
    (or unreadable), each described; they are not the call's row.
    """

    found: FoundTransfer | None
    conflicts: tuple[str, ...] = ()


def _check(pattern: re.Pattern[str], value: str, name: str) -> None:
    if pattern.fullmatch(value) is None:
        raise RequestInvalid(f"{name} {value!r} does not match {pattern.pattern}")


def _money_args(amount_cents: int, currency: str, description: str) -> None:
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int) or amount_cents <= 0:
        raise RequestInvalid(f"amount_cents must be a positive int, got {amount_cents!r}")
    _check(_CURRENCY, currency, "currency")
    _check(_DESCRIPTION, description, "description")


class DerivGateway:
    """The Deriv client PenPay's actors call; see the module docstring."""

    def __init__(
        self,
        connect: Connector,
        agent_token: str,
        *,
        rng: random.Random,
        config: GatewayConfig | None = None,
        user_connect: Connector | None = None,
    ) -> None:
        self._connect = connect
        self._user_connect = user_connect or connect
        self._agent_token = agent_token
        self._rng = rng
        self.config = config or GatewayConfig()
        self._bucket = (
            TokenBucket(self.config.calls_per_min, self.config.calls_burst)
            if self.config.calls_per_min is not None
            else None
        )
        # Two buckets, for both of Deriv's windows: at most 90 + 5 in a minute,
        # and 1800 + 150 in an hour (the hour's bucket refills 30 a minute).
        per_hour = self.config.statement_calls_per_hour
        self._statement_buckets = (
            (
                TokenBucket(self.config.statement_calls_per_min, 5),
                TokenBucket(max(per_hour // 60, 1), max(per_hour // 12, 1)),
            )
            if self.config.calls_per_min is not None
            else ()
        )
        self._ping_bucket = TokenBucket(self.config.pings_per_min, self.config.pings_burst)
        self._clock: _ClockReading | None = None
        self._clock_lock = trio.Lock()
        self._rpc: DerivRpc | None = None
        self._ready = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._balance_changed = trio.Event()
        # Operator-visible state.
        self.agent: DerivAccountInfo | None = None
        self.agent_balance_cents: int | None = None
        self.balance_updated_at: float | None = None
        self.connects = 0
        self.last_error: str | None = None

    # -- status -------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._rpc is not None and self._ready.is_set()

    @property
    def pending_calls(self) -> int:
        return self._rpc.pending_count if self._rpc is not None else 0

    async def wait_connected(self) -> None:
        """Wait until the agent socket is authorized (the balance stream follows on its own)."""
        while not self.connected:
            await self._ready.wait()

    async def wait_for_balance(self, predicate: Callable[[int], bool]) -> int:
        """Wait until the live agent balance satisfies ``predicate``; returns it."""
        while self.agent_balance_cents is None or not predicate(self.agent_balance_cents):
            await self._balance_changed.wait()
        return self.agent_balance_cents

    # -- the connection loop ------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the agent socket up for ever; starts at once, connects in the background."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            failures = 0
            while True:
                lasted_s = await self._session()
                # A session counts as working only once it has outlived a
                # keep-alive interval: a socket Deriv closes just after the
                # handshake must back off too, not be reopened twice a second.
                failures = 0 if lasted_s >= self.config.ping_interval_s else failures + 1
                delay = self._backoff_s(failures)
                log.info("deriv: reconnecting in %.2f s (%s)", delay, self.last_error)
                await trio.sleep(delay)

    def _backoff_s(self, failures: int) -> float:
        """Half the initial delay after a session that worked, then initial * 2**n, capped;
        each stretched by jitter."""
        if failures == 0:
            base = self.config.backoff_initial_s * 0.5
        else:
            base = min(
                self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** (failures - 1)
            )
        return base * (1.0 + self._rng.uniform(0.0, self.config.backoff_jitter))

    async def _session(self) -> float:
        """One socket's life; returns how long it served authorized (0: never)."""
        authorized_at: float | None = None
        try:
            async with self._connect() as conn:
                rpc = DerivRpc(conn, on_close=self._agent_socket_closed)
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._read_then_cancel, rpc, nursery.cancel_scope)
                        try:
                            await self._handshake(rpc)
                        except DerivError as exc:
                            self.last_error = f"handshake failed: {exc}"
                            log.warning("deriv: %s", self.last_error)
                            nursery.cancel_scope.cancel()
                            return 0.0
                        authorized_at = trio.current_time()
                        self.connects += 1
                        self._rpc = rpc
                        self._ready.set()
                        nursery.start_soon(self._keepalive, rpc, nursery.cancel_scope)
                        nursery.start_soon(self._subscribe_balance, rpc)
                finally:
                    rpc.fail_all("session ended")
        except TransportClosed as exc:
            self.last_error = exc.reason
        return 0.0 if authorized_at is None else trio.current_time() - authorized_at

    def _agent_socket_closed(self, rpc: DerivRpc) -> None:
        """Runs the moment the agent socket is known dead, before any caller wakes."""
        if self._rpc is rpc:
            self._rpc = None
            self._ready = trio.Event()

    async def _read_then_cancel(self, rpc: DerivRpc, scope: trio.CancelScope) -> None:
        await rpc.run()
        self.last_error = f"connection lost: {rpc.closed_reason}"
        scope.cancel()

    async def _handshake(self, rpc: DerivRpc) -> None:
        # Budgeted, but ahead of the queue: callers waiting for the connection
        # may have queued hundreds of calls, and Deriv closes a socket that
        # sends nothing for two minutes; behind them, it would never open.
        self._spend_budget_now(self._bucket)
        auth = await self._checked(rpc, {"authorize": self._agent_token})
        self.agent = _account_info(auth)

    async def _subscribe_balance(self, rpc: DerivRpc) -> None:
        """Keep the live agent balance; best effort, money calls never wait for it.

        ``balance`` is in Deriv's statement budget, which lookups spend: a
        refusal (a rate limit) must not keep the socket from serving
        transfers. It is asked again a minute later, until it holds.
        """
        first_try = True
        while True:
            if first_try:
                self._spend_budget_now(*self._statement_buckets)  # ahead of queued lookups
            else:
                for bucket in self._statement_buckets:
                    await bucket.acquire()
            first_try = False
            try:
                first = await self._checked(
                    rpc, {"balance": 1, "subscribe": 1}, on_stream=self._on_balance
                )
            except DerivApiError as exc:
                log.warning("deriv: balance subscription refused (%s); again in 60 s", exc)
                await trio.sleep(60)
                continue
            except DerivError:
                return  # the socket went: the next session subscribes again
            self._on_balance(first)
            return

    @staticmethod
    def _spend_budget_now(*buckets: TokenBucket | None) -> None:
        for bucket in buckets:
            if bucket is not None:
                bucket.take_now()

    async def _keepalive(self, rpc: DerivRpc, scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep(self.config.ping_interval_s)
            self._ping_bucket.take_now()  # never queued: a late ping loses the socket
            try:
                await self._checked(rpc, {"ping": 1}, timeout_s=self.config.pong_timeout_s)
            except DerivError as exc:
                self.last_error = f"keep-alive ping failed: {exc}"
                scope.cancel()
                return

    def _on_balance(self, message: dict[str, Any]) -> None:
        body = message.get("balance")
        cents = number_to_cents(body.get("balance")) if isinstance(body, dict) else None
        if cents is None:
            log.warning("deriv: balance message without a usable amount")
            return
        self.agent_balance_cents = cents
        self.balance_updated_at = trio.current_time()
        self._balance_changed.set()
        self._balance_changed = trio.Event()

    # -- calling ------------------------------------------------------------

    async def _checked(
        self,
        rpc: DerivRpc,
        request: dict[str, Any],
        *,
        timeout_s: float | None = None,
        on_stream: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Call, turn Deriv errors into exceptions and lost money calls into OutcomeUnknown.

        The call budget is the caller's business (:meth:`_agent_call`).
        """
        msg_type = next(iter(request))
        try:
            response = await rpc.call(
                request,
                timeout_s=self.config.call_timeout_s if timeout_s is None else timeout_s,
                on_stream=on_stream,
            )
        except (ConnectionLost, DerivTimeout) as exc:
            if msg_type in _MONEY_CALLS:
                raise OutcomeUnknown(msg_type, str(exc), _masked(request)) from exc
            raise
        error = response.get("error")
        if error is not None:
            raise api_error(error if isinstance(error, dict) else {}, msg_type)
        body = response.get(msg_type)
        if body is None:
            raise ProtocolViolation(f"{msg_type} answer without a {msg_type!r} field")
        return response

    async def _agent_call(
        self, request: dict[str, Any], *, rate_limited: bool = True
    ) -> dict[str, Any]:
        """A call on the agent socket, waiting (bounded) for it to be connected.

        ``rate_limited`` False: a ``ping``/``time``, spent from their own budget.
        Returns the whole response (some calls, like ``paymentagent_transfer``,
        answer in top-level fields beside the one named after the call).
        """
        # The budget first, the socket after: a call that queued for the
        # budget while the socket was replaced must go out on the new one,
        # not fail on the one it saw when it started waiting.
        for bucket in self._budget_of(request, rate_limited):
            await bucket.acquire()
        if not self.connected:
            with trio.move_on_after(self.config.connect_wait_s):
                await self.wait_connected()
        rpc = self._rpc
        if rpc is None:
            raise DerivUnavailable(f"no Deriv connection ({self.last_error})")
        return await self._checked(rpc, request)

    def _budget_of(self, request: dict[str, Any], rate_limited: bool) -> Sequence[TokenBucket]:
        if not rate_limited:
            return (self._ping_bucket,)
        if next(iter(request)) in _STATEMENT_BUDGET:
            return self._statement_buckets
        return (self._bucket,) if self._bucket is not None else ()

    async def ping(self) -> None:
        """A round trip on the agent socket (outside the call budget, in the ping budget)."""
        await self._agent_call({"ping": 1}, rate_limited=False)

    async def server_time(self) -> int:
        """Deriv's clock (Unix seconds): statement times are on it, not on ours."""
        body = (await self._agent_call({"time": 1}, rate_limited=False))["time"]
        if type(body) is not int:
            raise ProtocolViolation(f"time is not an integer: {body!r}")
        return body

    async def deriv_clock_s(self) -> float:
        """Deriv's clock now (Unix seconds), without asking Deriv each time.

        One ``time`` answer is anchored to trio's monotonic clock and
        extrapolated; it is asked again after ``clock_refresh_s`` or a
        reconnect. Concurrent callers share one ``time`` call: a burst of
        statement lookups would otherwise send a burst of them, and Deriv
        closes a socket sending more than 10 a second (protocols.md 2.2).
        Our own wall clock plays no part, so its steps cannot stale the reading.
        """
        async with self._clock_lock:
            reading = self._clock
            if reading is None or self._clock_is_stale(reading):
                asked_at = trio.current_time()
                deriv_s = await self.server_time()
                answered_at = trio.current_time()
                reading = _ClockReading(deriv_s, (asked_at + answered_at) / 2, self.connects)
                self._clock = reading
        return reading.deriv_s + (trio.current_time() - reading.monotonic_s)

    def _clock_is_stale(self, reading: _ClockReading) -> bool:
        age_s = trio.current_time() - reading.monotonic_s
        return reading.connects != self.connects or age_s >= self.config.clock_refresh_s

    async def balance(self) -> int:
        """The agent balance in cents, asked now (the live value is ``agent_balance_cents``)."""
        body = (await self._agent_call({"balance": 1}))["balance"]
        cents = number_to_cents(body.get("balance"))
        if cents is None:
            raise ProtocolViolation(f"balance is not an amount: {body!r}")
        return cents

    async def payment_agent_limits(self) -> tuple[int | None, int | None]:
        """The agent's own per-transfer limits in cents, ``(min, max)``; None: Deriv's default.

        ``paymentagent_details`` needs the token's ``admin`` scope (protocols.md 2.9).
        """
        body = (await self._agent_call({"paymentagent_details": 1}))["paymentagent_details"]
        if not isinstance(body, dict):
            raise ProtocolViolation(f"paymentagent_details is not an object: {body!r}")
        return number_to_cents(body.get("min_withdrawal")), number_to_cents(
            body.get("max_withdrawal")
        )

    async def paymentagent_transfer(
        self,
        transfer_to: str,
        amount_cents: int,
        currency: str,
        description: str,
        *,
        dry_run: bool = False,
    ) -> TransferResult:
        """Move ``amount_cents`` from the agent to ``transfer_to`` (a deposit).

        Put a unique reference in ``description``: it is how
        :meth:`find_transfer` settles an :class:`OutcomeUnknown`.
        """
        _check(_LOGINID, transfer_to, "transfer_to")
        _money_args(amount_cents, currency, description)
        request: dict[str, Any] = {
            "paymentagent_transfer": 1,
            "amount": cents_to_number(amount_cents),
            "currency": currency,
            "transfer_to": transfer_to,
            "description": description,
        }
        if dry_run:
            request["dry_run"] = 1
        response = await self._agent_call(request)
        return TransferResult(
            client_loginid=str(response.get("client_to_loginid", transfer_to)),
            client_full_name=str(response.get("client_to_full_name", "")),
            transaction_id=_optional_int(response.get("transaction_id")),
            dry_run=response["paymentagent_transfer"] == 2,
        )

    async def statement(
        self,
        *,
        limit: int = 100,
        offset: int = 0,
        action_type: str | None = None,
        date_from: int | None = None,
        date_to: int | None = None,
    ) -> list[dict[str, Any]]:
        """The agent's statement (newest first) with remarks (``description: 1``)."""
        request: dict[str, Any] = {"statement": 1, "description": 1, "limit": limit}
        if offset:
            request["offset"] = offset
        if action_type is not None:
            request["action_type"] = action_type
        if date_from is not None:
            request["date_from"] = date_from
        if date_to is not None:
            request["date_to"] = date_to
        body = (await self._agent_call(request))["statement"]
        transactions = body.get("transactions") if isinstance(body, dict) else None
        if not isinstance(transactions, list):
            raise ProtocolViolation("statement without transactions")
        return transactions

    async def find_transfer(
        self,
        reference: str,
        *,
        transfer_to: str | None = None,
        amount_cents: int | None = None,
        date_from: int | None = None,
    ) -> FoundTransfer | None:
        """Find the agent's transfer whose remark ends with ``Agent note: <reference>``.

        Optionally also match the client loginid and the amount. Pages through
        the statement newest first; ``None`` means the statement was read to
        its end (from ``date_from``) without a match, i.e. no such transfer.
        """
        _check(_DESCRIPTION, reference, "reference")
        note = f"Agent note: {reference}"
        target = f" to {transfer_to.upper()}." if transfer_to else None
        found: list[FoundTransfer] = []

        def visit(row: dict[str, Any]) -> bool:
            match = _match(row, note, target, amount_cents)
            if match is not None:
                found.append(match)
            return match is not None

        await self._scan(reference, "withdrawal", date_from, visit)
        return found[0] if found else None

    async def search_statement(
        self, expected: ExpectedRow, *, date_from: int | None = None
    ) -> StatementMatch:
        """Find ``expected``'s row in the agent's statement, newest first.

        A row counts only with the note, the amount, the direction and the
        client expected: a withdrawal's note is the client's free text, so any
        Deriv client can send the agent USD 10 with another user's reference.
        Rows with the note that fail the rest are reported as ``conflicts``.
        ``found`` None: the statement was read to its end (from ``date_from``)
        without the row. Raises :class:`ReconciliationIncomplete` at the page limit.
        """
        _check(_DESCRIPTION, expected.reference, "reference")
        conflicts: list[str] = []
        found: list[FoundTransfer] = []

        def visit(row: dict[str, Any]) -> bool:
            verdict = _judge(row, expected)
            if isinstance(verdict, FoundTransfer):
                found.append(verdict)
                return True
            if verdict is not None:
                conflicts.append(verdict)
            return False

        await self._scan(expected.reference, expected.action_type, date_from, visit)
        return StatementMatch(found[0] if found else None, tuple(conflicts))

    async def _scan(
        self,
        reference: str,
        action_type: str,
        date_from: int | None,
        visit: Callable[[dict[str, Any]], bool],
    ) -> None:
        """Page through the statement until ``visit`` returns True or the rows end."""
        size = self.config.statement_page_size
        for page in range(self.config.statement_pages_max):
            rows = await self.statement(
                limit=size, offset=page * size, action_type=action_type, date_from=date_from
            )
            if any(visit(row) for row in rows) or len(rows) < size:
                return
        raise ReconciliationIncomplete(
            f"no match for {reference!r} in the newest {size * self.config.statement_pages_max}"
            " statement rows; pass date_from to search further back"
        )

    # -- user-token calls ---------------------------------------------------

    async def _with_user_socket(
        self, token: str, work: Callable[[DerivRpc, DerivAccountInfo], Awaitable[T]]
    ) -> T:
        """Connect, authorize with ``token``, run ``work``, close: one short-lived socket."""
        if self._nursery is None:
            raise DerivUnavailable("DerivGateway.run is not running")
        try:
            async with self._user_connect() as conn:
                rpc = DerivRpc(conn)
                self._nursery.start_soon(rpc.run)
                try:
                    auth = await self._checked(rpc, {"authorize": token})
                    return await work(rpc, _account_info(auth))
                finally:
                    rpc.fail_all("user call finished")
        except TransportClosed as exc:
            raise DerivUnavailable(f"cannot reach Deriv: {exc.reason}") from None

    async def verify_user_token(self, token: str) -> DerivAccountInfo:
        """Authorize ``token`` on a fresh socket and report whose account it is."""

        async def work(rpc: DerivRpc, info: DerivAccountInfo) -> DerivAccountInfo:
            return info

        return await self._with_user_socket(token, work)

    async def request_withdrawal_code(self, user_token: str, email: str) -> None:
        """Ask Deriv to e-mail the user a ``paymentagent_withdraw`` verification code."""

        async def work(rpc: DerivRpc, info: DerivAccountInfo) -> None:
            await self._checked(rpc, {"verify_email": email, "type": "paymentagent_withdraw"})

        await self._with_user_socket(user_token, work)

    async def paymentagent_withdraw(
        self,
        user_token: str,
        agent_loginid: str,
        amount_cents: int,
        currency: str,
        verification_code: str,
        description: str,
        *,
        dry_run: bool = False,
    ) -> WithdrawalResult:
        """Move ``amount_cents`` from the user's account to the agent (a withdrawal).

        Raises :class:`OutcomeUnknown` if the answer is lost after sending;
        confirm by the agent's statement (``Client note: <description>``).
        """
        _check(_LOGINID, agent_loginid, "agent_loginid")
        _money_args(amount_cents, currency, description)
        request: dict[str, Any] = {
            "paymentagent_withdraw": 1,
            "amount": cents_to_number(amount_cents),
            "currency": currency,
            "paymentagent_loginid": agent_loginid,
            "verification_code": verification_code if not dry_run else "dryrun00",
            "description": description,
        }
        if dry_run:
            request["dry_run"] = 1

        async def work(rpc: DerivRpc, info: DerivAccountInfo) -> WithdrawalResult:
            response = await self._checked(rpc, request)
            return WithdrawalResult(
                paymentagent_name=str(response.get("paymentagent_name", "")),
                transaction_id=_optional_int(response.get("transaction_id")),
                dry_run=response["paymentagent_withdraw"] == 2,
            )

        return await self._with_user_socket(user_token, work)


@dataclass(frozen=True)
class _ClockReading:
    """One ``time`` answer and the monotonic instant it stands for."""

    deriv_s: int
    monotonic_s: float
    connects: int  # the agent socket it was read on


def _masked(request: dict[str, Any]) -> dict[str, Any]:
    secret = {"authorize", "verification_code"}
    return {k: ("<not shown>" if k in secret else v) for k, v in request.items()}


def _optional_int(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int:
        raise ProtocolViolation(f"transaction_id is not an integer: {value!r}")
    return value


def _account_info(response: dict[str, Any]) -> DerivAccountInfo:
    body = response["authorize"]
    balance = number_to_cents(body.get("balance"))
    try:
        return DerivAccountInfo(
            loginid=str(body["loginid"]),
            currency=str(body.get("currency", "")),
            fullname=str(body.get("fullname", "")),
            email=str(body.get("email", "")),
            is_virtual=bool(body.get("is_virtual", 0)),
            scopes=tuple(str(s) for s in body.get("scopes", ())),
            balance_cents=balance if balance is not None else 0,
        )
    except (KeyError, TypeError) as exc:
        raise ProtocolViolation(f"unexpected authorize answer: {exc!r}") from None


def _match(
    row: dict[str, Any], note: str, target: str | None, amount_cents: int | None
) -> FoundTransfer | None:
    longcode = row.get("longcode")
    if not isinstance(longcode, str) or not longcode.endswith(note):
        return None
    if target is not None and target not in longcode:
        return None
    amount = number_to_cents(row.get("amount"))
    after = number_to_cents(row.get("balance_after"))
    tid = row.get("transaction_id")
    if amount is None or after is None or type(tid) is not int:
        raise ProtocolViolation(f"statement row without amount/id: {row!r}")
    if amount_cents is not None and -amount != amount_cents:
        return None
    return FoundTransfer(
        transaction_id=tid,
        amount_cents=-amount,
        balance_after_cents=after,
        transaction_time=int(row.get("transaction_time", 0)),
        longcode=longcode,
    )


def _judge(row: dict[str, Any], expected: ExpectedRow) -> FoundTransfer | str | None:
    """``expected``'s row as found; a description if it has the note but is not
    the row expected (or cannot be read); None if it does not have the note."""
    longcode = row.get("longcode")
    if not isinstance(longcode, str) or not longcode.endswith(expected.note):
        return None
    amount = number_to_cents(row.get("amount"))
    after = number_to_cents(row.get("balance_after"))
    tid = row.get("transaction_id")
    seen = f"{row.get('action_type')} {row.get('amount')!r} (tid {tid!r}): {longcode}"
    if amount is None or after is None or type(tid) is not int:
        return f"unreadable row {seen}"
    action = row.get("action_type", expected.action_type)
    if (
        amount != expected.amount_cents
        or action != expected.action_type
        or not expected.names_counterparty(longcode)
    ):
        return seen
    return FoundTransfer(
        transaction_id=tid,
        amount_cents=abs(amount),
        balance_after_cents=after,
        transaction_time=int(row.get("transaction_time", 0)),
        longcode=longcode,
    )
