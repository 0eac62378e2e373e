"""One connection's Deriv session: envelope, authorization, streams, limits, faults.

:class:`DerivSession` reads requests from a :class:`MessageConnection`,
answers each in the v3 envelope (``msg_type``, masked ``echo_req``,
``req_id``/``passthrough`` copied when given) and pushes ``balance`` stream
messages in the same envelope. Per-connection state lives here, not in the
world: the authorized token, the subscriptions, the rate-limit window, the
idle deadline. Everything the session does to money goes through
:class:`~penpay.sandbox.deriv.state.DerivWorld`.

Order of checks for a request: JSON object -> known call -> rate limit ->
schema -> authorization -> scope -> armed fault -> handler.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from penpay.actors.deriv.transport import MessageConnection, TransportClosed
from penpay.actors.deriv.wire import (
    WireFormatError,
    cents_to_number,
    decode,
    encode,
    number_to_cents,
)
from penpay.sandbox.deriv.schema import SCHEMAS, validate
from penpay.sandbox.deriv.state import (
    Account,
    DerivApiError,
    DerivWorld,
    Fault,
    FaultKind,
    MoneyMove,
    Token,
)

log = logging.getLogger(__name__)

OUTBOX_MESSAGES_MAX = 1024
"""Queued outgoing messages per connection; a client this far behind is dropped."""

RATE_WINDOW_S = 60.0
MASKED_FIELDS = frozenset({"authorize", "verification_code", "tokens", "new_password"})
UNAUTHENTICATED = frozenset(
    {"ping", "time", "authorize", "verify_email", "forget", "forget_all"}
)
#: Calls outside the per-minute budget (they have a per-second one of their own).
UNBUDGETED = frozenset({"ping", "time"})
#: Calls Deriv budgets in a row of their own, at 100 a minute (protocols.md 2.11;
#: the 2,000 an hour beside it is not modelled).
STATEMENT_BUDGET = frozenset({"statement", "balance"})
STATEMENT_LIMIT_PER_MIN = 100
#: Refusals made before any check of the call (so before a withdrawal's code check).
RATE_LIMIT_CODES = frozenset({"RateLimit", "RateLimitExceeded"})
REQUIRED_SCOPES: dict[str, tuple[str, ...]] = {
    "balance": ("read", "trading_information"),
    "statement": ("read",),
    "paymentagent_details": ("admin",),
    "paymentagent_transfer": ("payments",),
    "paymentagent_withdraw": ("payments",),
}
MONEY_CALLS = frozenset({"paymentagent_transfer", "paymentagent_withdraw"})


@dataclass
class _Subscription:
    kind: str
    loginid: str
    listener: int


def mask(request: dict[str, Any]) -> dict[str, Any]:
    """``echo_req``: the request with secrets replaced, as Deriv does."""
    return {k: ("<not shown>" if k in MASKED_FIELDS else v) for k, v in request.items()}


class DerivSession:
    """Serve one connection until it closes, idles out, or is dropped."""

    def __init__(self, world: DerivWorld, conn: MessageConnection) -> None:
        self.world = world
        self.conn = conn
        self.token: Token | None = None
        self._subs: dict[str, _Subscription] = {}
        self._calls: deque[float] = deque()
        self._statement_calls: deque[float] = deque()
        self._last_rx = 0.0
        self._out_send, self._out_recv = trio.open_memory_channel[str](OUTBOX_MESSAGES_MAX)
        self._cancel = trio.CancelScope()
        self._last_move: MoneyMove | None = None
        self._handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "ping": self._ping,
            "time": self._time,
            "authorize": self._authorize,
            "balance": self._balance,
            "forget": self._forget,
            "forget_all": self._forget_all,
            "statement": self._statement,
            "verify_email": self._verify_email,
            "paymentagent_details": self._paymentagent_details,
            "paymentagent_transfer": self._paymentagent_transfer,
            "paymentagent_withdraw": self._paymentagent_withdraw,
        }

    # -- lifecycle ----------------------------------------------------------

    async def run(self) -> None:
        """Serve until the peer closes, the idle timeout fires, or a fault drops us."""
        cid = self.world.register_connection(self.drop)
        self._last_rx = trio.current_time()
        try:
            with self._cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer)
                    nursery.start_soon(self._idle_watchdog)
                    await self._reader(nursery)
                    nursery.cancel_scope.cancel()
        finally:
            self.world.unregister_connection(cid)
            for sub in self._subs.values():
                self.world.remove_balance_listener(sub.loginid, sub.listener)
            self._subs.clear()
            with trio.CancelScope(shield=True):
                await self.conn.aclose()

    def drop(self) -> None:
        """Close abruptly: nothing queued is sent, the socket is closed."""
        self._cancel.cancel()

    async def _reader(self, nursery: trio.Nursery) -> None:
        while True:
            try:
                text = await self.conn.get_message()
            except TransportClosed:
                return
            self._last_rx = trio.current_time()
            self._receive(text, nursery)

    async def _writer(self) -> None:
        # Hand everything queued to the connection before yielding, so a
        # coalescing transport writes the answers to one read's requests at once.
        receive_nowait = self._out_recv.receive_nowait
        async for text in self._out_recv:
            try:
                while True:
                    await self.conn.send_message(text)
                    try:
                        text = receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
            except TransportClosed:
                self.drop()
                return

    async def _idle_watchdog(self) -> None:
        while True:
            deadline = self._last_rx + self.world.idle_timeout_s
            if trio.current_time() >= deadline:
                log.info("deriv sandbox: closing idle connection")
                self.drop()
                return
            await trio.sleep_until(deadline)

    def _emit(self, message: dict[str, Any]) -> None:
        try:
            self._out_send.send_nowait(encode(message))
        except trio.WouldBlock:
            log.warning("deriv sandbox: client too slow, dropping connection")
            self.drop()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    # -- envelope -----------------------------------------------------------

    def _envelope(
        self, request: dict[str, Any], msg_type: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"echo_req": mask(request), "msg_type": msg_type}
        message.update(body)
        if "req_id" in request:
            message["req_id"] = request["req_id"]
        if "passthrough" in request:
            message["passthrough"] = request["passthrough"]
        return message

    def _error(self, request: dict[str, Any], msg_type: str, error: DerivApiError) -> None:
        body: dict[str, Any] = {"code": error.code, "message": error.message}
        if error.details:
            body["details"] = error.details
        self._emit(self._envelope(request, msg_type, {"error": body}))

    def _receive(self, text: str, nursery: trio.Nursery) -> None:
        try:
            request = decode(text)
        except WireFormatError:
            self._error({}, "error", DerivApiError("BadRequest", "The request is invalid."))
            return
        msg_type = next((key for key in request if key in SCHEMAS), None)
        if msg_type is None:
            self._error(
                request, "error", DerivApiError("UnrecognisedRequest", "Unrecognised request.")
            )
            return
        try:
            self._admit(msg_type, request)
        except DerivApiError as error:
            self._error(request, msg_type, error)
            return
        fault = self.world.take_fault(msg_type)
        if fault is not None and fault.kind is FaultKind.DELAY:
            nursery.start_soon(self._delayed, fault.delay_s, msg_type, request)
            return
        self._process(msg_type, request, fault)

    async def _delayed(self, delay_s: float, msg_type: str, request: dict[str, Any]) -> None:
        await trio.sleep(delay_s)
        self._process(msg_type, request, None)

    def _admit(self, msg_type: str, request: dict[str, Any]) -> None:
        limit = self.world.rate_limit_per_min
        if msg_type not in UNBUDGETED and limit is not None:
            if msg_type in STATEMENT_BUDGET:
                _spend(self._statement_calls, STATEMENT_LIMIT_PER_MIN, msg_type)
            else:
                _spend(self._calls, limit, msg_type)
        validate(msg_type, request)
        if msg_type in UNAUTHENTICATED:
            return
        if self.token is None:
            raise DerivApiError("AuthorizationRequired", "Please log in.")
        if self.token.token not in self.world.tokens:
            raise DerivApiError("InvalidToken", "The token is invalid.")
        needed = REQUIRED_SCOPES.get(msg_type)
        if needed and not self.token.scopes.intersection(needed):
            raise DerivApiError(
                "PermissionDenied", f"Permission denied, requires [{', '.join(needed)}] scope(s)."
            )

    def _process(self, msg_type: str, request: dict[str, Any], fault: Fault | None) -> None:
        if fault is not None:
            if fault.kind is FaultKind.DROP_BEFORE_APPLY:
                self.drop()
                return
            if fault.kind is FaultKind.ERROR:
                self._error(request, msg_type, self._injected_error(msg_type, request, fault))
                return
        self._last_move = None
        try:
            body = self._handlers[msg_type](request)
        except DerivApiError as error:
            if fault is not None and fault.kind is FaultKind.DROP_AFTER_APPLY:
                self.drop()
                return
            self._error(request, msg_type, error)
            return
        if fault is not None and fault.kind is FaultKind.DROP_AFTER_APPLY:
            self.drop()
            return
        if fault is not None and fault.kind is FaultKind.RECEIVE_FAILED:
            self._error(request, msg_type, _receive_failed(fault, self._last_move))
            return
        self._emit(self._envelope(request, msg_type, body))

    # -- handlers -----------------------------------------------------------

    def _account(self) -> Account:
        assert self.token is not None  # _admit checked it
        return self.world.account(self.token.loginid)

    def _ping(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"ping": "pong"}

    def _time(self, request: dict[str, Any]) -> dict[str, Any]:
        return {"time": int(self.world.now().timestamp())}

    def _authorize(self, request: dict[str, Any]) -> dict[str, Any]:
        token = self.world.authorize(request["authorize"])
        self.token = token
        account = self.world.account(token.loginid)
        return {
            "authorize": {
                "loginid": account.loginid,
                "currency": account.currency,
                "balance": cents_to_number(account.balance_cents),
                "email": account.email,
                "fullname": account.fullname,
                "is_virtual": int(account.is_virtual),
                "country": account.country,
                "landing_company_name": "virtual" if account.is_virtual else "svg",
                "scopes": sorted(token.scopes),
                "user_id": account.user_id,
                "account_list": [
                    {
                        "loginid": account.loginid,
                        "currency": account.currency,
                        "is_virtual": int(account.is_virtual),
                    }
                ],
                "local_currencies": {"KES": {"fractional_digits": 2}},
            }
        }

    def _balance_body(self, account: Account, sub_id: str | None) -> dict[str, Any]:
        balance: dict[str, Any] = {
            "balance": cents_to_number(account.balance_cents),
            "currency": account.currency,
            "loginid": account.loginid,
        }
        if sub_id is None:
            return {"balance": balance}
        balance["id"] = sub_id
        return {"balance": balance, "subscription": {"id": sub_id}}

    def _balance(self, request: dict[str, Any]) -> dict[str, Any]:
        account = self._account()
        target = request.get("account", "current")
        if target not in ("current", account.loginid):
            raise DerivApiError("PermissionDenied", "Permission denied.")
        if request.get("subscribe") != 1:
            return self._balance_body(account, None)
        if any(s.kind == "balance" and s.loginid == account.loginid for s in self._subs.values()):
            raise DerivApiError(
                "AlreadySubscribed",
                f"You are already subscribed to balance for account {account.loginid}.",
            )
        sub_id = self.world.new_uuid()

        def push(changed: Account) -> None:
            self._emit(self._envelope(request, "balance", self._balance_body(changed, sub_id)))

        handle = self.world.add_balance_listener(account.loginid, push)
        self._subs[sub_id] = _Subscription("balance", account.loginid, handle)
        return self._balance_body(account, sub_id)

    def _forget(self, request: dict[str, Any]) -> dict[str, Any]:
        sub = self._subs.pop(request["forget"], None)
        if sub is None:
            return {"forget": 0}
        self.world.remove_balance_listener(sub.loginid, sub.listener)
        return {"forget": 1}

    def _forget_all(self, request: dict[str, Any]) -> dict[str, Any]:
        kinds = request["forget_all"]
        kinds = {kinds} if isinstance(kinds, str) else set(kinds)
        stopped = [sid for sid, sub in self._subs.items() if sub.kind in kinds]
        for sid in stopped:
            sub = self._subs.pop(sid)
            self.world.remove_balance_listener(sub.loginid, sub.listener)
        return {"forget_all": stopped}

    def _statement(self, request: dict[str, Any]) -> dict[str, Any]:
        account = self._account()
        rows = self.world.statement(
            account.loginid,
            limit=request.get("limit", 100),
            offset=request.get("offset", 0),
            action_type=request.get("action_type"),
            date_from=request.get("date_from"),
            date_to=request.get("date_to"),
        )
        with_text = request.get("description") == 1
        transactions = []
        for row in rows:
            item: dict[str, Any] = {
                "action_type": row.action_type,
                "amount": cents_to_number(row.amount_cents),
                "balance_after": cents_to_number(row.balance_after_cents),
                "transaction_id": row.transaction_id,
                "reference_id": row.transaction_id,
                "transaction_time": row.transaction_time,
            }
            if with_text:
                item["longcode"] = row.longcode
            transactions.append(item)
        return {"statement": {"count": len(transactions), "transactions": transactions}}

    def _verify_email(self, request: dict[str, Any]) -> dict[str, Any]:
        self.world.issue_code(request["verify_email"], request["type"])
        return {"verify_email": 1}

    def _paymentagent_transfer(self, request: dict[str, Any]) -> dict[str, Any]:
        account = self._account()
        client, move = self.world.paymentagent_transfer(
            account.loginid,
            transfer_to=request["transfer_to"],
            amount_cents=number_to_cents(request["amount"]),
            currency=request["currency"],
            description=request.get("description", ""),
            dry_run=request.get("dry_run") == 1,
        )
        body: dict[str, Any] = {
            "paymentagent_transfer": 2 if move is None else 1,
            "client_to_full_name": client.fullname,
            "client_to_loginid": client.loginid,
        }
        if move is not None:
            body["transaction_id"] = move.transaction_id
        self._last_move = move
        return body

    def _paymentagent_details(self, request: dict[str, Any]) -> dict[str, Any]:
        """The caller's payment-agent profile; its limits as numbers (protocols.md 2.9)."""
        account = self._account()
        terms = account.payment_agent
        if terms is None:
            return {"paymentagent_details": {"can_apply": 1}}
        return {
            "paymentagent_details": {
                "can_apply": 0,
                "payment_agent_name": terms.name or account.fullname,
                "currency_code": account.currency,
                "min_withdrawal": cents_to_number(terms.min_cents),
                "max_withdrawal": cents_to_number(terms.max_cents),
                "commission_deposit": 0,
                "commission_withdrawal": 0,
            }
        }

    def _injected_error(
        self, msg_type: str, request: dict[str, Any], fault: Fault
    ) -> DerivApiError:
        """The error a fault injects, after the checks Deriv makes before it.

        A withdrawal's refusals other than the rate limits come after its
        code check, which deletes the code: so does the injected one.
        """
        if (
            msg_type == "paymentagent_withdraw"
            and fault.code not in RATE_LIMIT_CODES
            and request.get("dry_run") != 1
        ):
            try:
                self.world.spend_withdrawal_code(self._account().loginid,
                                                 request["verification_code"])
            except DerivApiError as refused:
                return refused
        return DerivApiError(fault.code, fault.message)

    def _paymentagent_withdraw(self, request: dict[str, Any]) -> dict[str, Any]:
        account = self._account()
        agent, move = self.world.paymentagent_withdraw(
            account.loginid,
            paymentagent_loginid=request["paymentagent_loginid"],
            amount_cents=number_to_cents(request["amount"]),
            currency=request["currency"],
            verification_code=request["verification_code"],
            description=request.get("description", ""),
            dry_run=request.get("dry_run") == 1,
        )
        body: dict[str, Any] = {
            "paymentagent_withdraw": 2 if move is None else 1,
            "paymentagent_name": agent.agent_name,
        }
        if move is not None:
            body["transaction_id"] = move.transaction_id
        self._last_move = move
        return body


def _receive_failed(fault: Fault, move: MoneyMove | None) -> DerivApiError:
    """``TransferReceiveFailed``: the money left the payer, the caller gets an error."""
    if move is None:
        return DerivApiError(fault.code, fault.message)
    return DerivApiError(
        fault.code,
        f"We have deducted {cents_to_number(move.amount_cents)} {move.currency} from your "
        "account. Your funds may be temporarily unavailable until the transaction is complete.",
    )


def _spend(calls: deque[float], limit: int, msg_type: str) -> None:
    """Count one call in a 60 s window of at most ``limit``; RateLimit beyond it."""
    now = trio.current_time()
    while calls and calls[0] <= now - RATE_WINDOW_S:
        calls.popleft()
    if len(calls) >= limit:
        raise DerivApiError("RateLimit", f"You have reached the rate limit for {msg_type}.")
    calls.append(now)
