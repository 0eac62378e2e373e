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
The caller settles it with :meth:`~DerivGateway.find_transfer`, which finds
the transfer in the agent's statement by the reference put in ``description``.

Calls with a *user's* token (verify a linked account, ask Deriv to e-mail a
withdrawal code, withdraw to the agent) each use a fresh socket that is
authorized with that token and closed afterwards, so no user credential
ever touches the agent socket.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from penpay.actors.deriv.errors import (
    ConnectionLost,
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
    """Own budget for non-ping calls on the agent socket (Deriv allows 220); None lifts it."""
    calls_burst: int = 10
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
        """Wait until the agent socket is authorized and subscribed."""
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
                authorized = await self._session()
                failures = 0 if authorized else failures + 1
                delay = self._backoff_s(failures)
                log.info("deriv: reconnecting in %.2f s (%s)", delay, self.last_error)
                await trio.sleep(delay)

    def _backoff_s(self, failures: int) -> float:
        """0 s after a session that worked, then initial * 2**n capped, plus jitter."""
        if failures == 0:
            base = self.config.backoff_initial_s * 0.5
        else:
            base = min(
                self.config.backoff_max_s, self.config.backoff_initial_s * 2 ** (failures - 1)
            )
        return base * (1.0 + self._rng.uniform(0.0, self.config.backoff_jitter))

    async def _session(self) -> bool:
        """One socket's life; returns whether it got authorized."""
        authorized = False
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
                            return False
                        authorized = True
                        self.connects += 1
                        self._rpc = rpc
                        self._ready.set()
                        nursery.start_soon(self._keepalive, rpc, nursery.cancel_scope)
                finally:
                    rpc.fail_all("session ended")
        except TransportClosed as exc:
            self.last_error = exc.reason
        return authorized

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
        self._spend_budget_now()
        auth = await self._checked(rpc, {"authorize": self._agent_token})
        self.agent = _account_info(auth)
        self._spend_budget_now()
        first = await self._checked(
            rpc, {"balance": 1, "subscribe": 1}, on_stream=self._on_balance
        )
        self._on_balance(first)

    def _spend_budget_now(self) -> None:
        if self._bucket is not None:
            self._bucket.take_now()

    async def _keepalive(self, rpc: DerivRpc, scope: trio.CancelScope) -> None:
        while True:
            await trio.sleep(self.config.ping_interval_s)
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

        Returns the whole response (some calls, like ``paymentagent_transfer``,
        answer in top-level fields beside the one named after the call).
        """
        if rate_limited and self._bucket is not None:
            # The budget first, the socket after: a call that queued for the
            # budget while the socket was replaced must go out on the new one,
            # not fail on the one it saw when it started waiting.
            await self._bucket.acquire()
        if not self.connected:
            with trio.move_on_after(self.config.connect_wait_s):
                await self.wait_connected()
        rpc = self._rpc
        if rpc is None:
            raise DerivUnavailable(f"no Deriv connection ({self.last_error})")
        return await self._checked(rpc, request)

    async def ping(self) -> None:
        """A round trip on the agent socket (outside the rate budget)."""
        await self._agent_call({"ping": 1}, rate_limited=False)

    async def server_time(self) -> int:
        """Deriv's clock (Unix seconds): statement times are on it, not on ours."""
        body = (await self._agent_call({"time": 1}, rate_limited=False))["time"]
        if type(body) is not int:
            raise ProtocolViolation(f"time is not an integer: {body!r}")
        return body

    async def balance(self) -> int:
        """The agent balance in cents, asked now (the live value is ``agent_balance_cents``)."""
        body = (await self._agent_call({"balance": 1}))["balance"]
        cents = number_to_cents(body.get("balance"))
        if cents is None:
            raise ProtocolViolation(f"balance is not an amount: {body!r}")
        return cents

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
        size = self.config.statement_page_size
        for page in range(self.config.statement_pages_max):
            rows = await self.statement(
                limit=size, offset=page * size, action_type="withdrawal", date_from=date_from
            )
            for row in rows:
                found = _match(row, note, target, amount_cents)
                if found is not None:
                    return found
            if len(rows) < size:
                return None
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
