"""The running Daraja sandbox: the world, its clocks, and its background tasks.

:class:`DarajaSandbox` owns a nursery in which customers "answer" prompts,
payouts are processed and callbacks are delivered. Use it as

    async with DarajaSandbox(callback_http=http) as sandbox:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(sandbox.app), ...)

or ``await nursery.start(sandbox.run)``. Leaving the block cancels every
pending delivery, so nothing outlives the test or the server.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from types import TracebackType

import httpx
import trio
from starlette.applications import Starlette

from penpay.sandbox.daraja import wire
from penpay.sandbox.daraja.callbacks import CallbackDispatcher
from penpay.sandbox.daraja.config import DarajaSandboxConfig
from penpay.sandbox.daraja.state import (
    Accounts,
    B2CPayment,
    Behaviour,
    Customer,
    Endpoint,
    FaultKind,
    FaultRule,
    StkTransaction,
    World,
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _cents(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"amounts are integer cents, got {value!r}")
    return value


class DarajaSandbox:
    """A simulated Safaricom Daraja: one world, one app, one nursery."""

    def __init__(
        self,
        config: DarajaSandboxConfig | None = None,
        *,
        callback_http: httpx.AsyncClient,
        wall_clock: Callable[[], datetime] = _utc_now,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or DarajaSandboxConfig()
        self.wall_clock = wall_clock
        self.rng = rng if rng is not None else random.Random(0)
        self.world = World(self.config, self.rng)
        self.callbacks = CallbackDispatcher(
            callback_http,
            wall_clock=wall_clock,
            timeout_s=self.config.callback_timeout_s,
            source_address=self.config.callback_source_address,
            send_forwarded_for=self.config.send_forwarded_for,
        )
        self._nursery: trio.Nursery | None = None
        self._cm: AbstractAsyncContextManager[None] | None = None
        from penpay.sandbox.daraja.app import build_app  # app imports this module

        self.app: Starlette = build_app(self)

    # ---- lifecycle ---------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._nursery is not None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the background tasks until cancelled (``nursery.start(sandbox.run)``)."""
        async with self._open():
            task_status.started()
            await trio.sleep_forever()

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[None]:
        if self._nursery is not None:
            raise RuntimeError("this DarajaSandbox is already running")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.callbacks.attach(nursery)
            try:
                yield
            finally:
                self._nursery = None
                self.callbacks.attach(None)
                nursery.cancel_scope.cancel()

    async def __aenter__(self) -> DarajaSandbox:
        self._cm = self._open()
        await self._cm.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._cm is not None
        cm, self._cm = self._cm, None
        return await cm.__aexit__(exc_type, exc, tb)

    def _start(self, fn: Callable[..., object], *args: object) -> None:
        if self._nursery is None:
            raise RuntimeError("the Daraja sandbox is not running (use `async with sandbox:`)")
        self._nursery.start_soon(fn, *args)  # type: ignore[arg-type]

    def reset(self) -> None:
        """Back to the initial state; pending customers and callbacks are dropped."""
        self.world.reset()
        self.callbacks.reset()

    # ---- scripting (also exposed by the control API) -----------------------

    def script_customer(
        self,
        phone: str,
        behaviour: Behaviour | str | None = None,
        *,
        delay_s: float | None = None,
        balance_cents: int | None = None,
        name: str | None = None,
    ) -> Customer:
        """Set how ``phone`` (12 digits, ``2547…``) answers prompts, and its wallet."""
        customer = self.world.customer(phone)
        if behaviour is not None:
            customer.behaviour = Behaviour(behaviour)
        if delay_s is not None:
            if delay_s < 0:
                raise ValueError("delay_s must be >= 0")
            customer.delay_s = float(delay_s)
        if balance_cents is not None:
            customer.balance_cents = _cents(balance_cents)
        if name is not None:
            customer.name = name
        return customer

    def inject_fault(
        self,
        endpoint: Endpoint | str,
        kind: FaultKind | str,
        *,
        count: int | None = 1,
        probability: float | None = None,
    ) -> FaultRule:
        """Make the next ``count`` calls to ``endpoint`` fail with ``kind``, or
        each call with ``probability`` (seeded RNG) if ``probability`` is given."""
        if probability is not None:
            if not 0.0 <= probability <= 1.0:
                raise ValueError("probability must be within [0, 1]")
            count = None
        elif count is None or count < 1:
            raise ValueError("give count >= 1 or a probability")
        rule = FaultRule(Endpoint(endpoint), FaultKind(kind), count, probability)
        self.world.faults.append(rule)
        return rule

    def clear_faults(self) -> None:
        self.world.faults.clear()

    def set_accounts(
        self, *, working_cents: int | None = None, utility_cents: int | None = None
    ) -> Accounts:
        """Set the merchant's Working (STK) and Utility (B2C) account balances."""
        if working_cents is not None:
            self.world.accounts.working_cents = _cents(working_cents)
        if utility_cents is not None:
            self.world.accounts.utility_cents = _cents(utility_cents)
        return self.world.accounts

    def requests_seen(self, endpoint: Endpoint | str) -> int:
        """How many requests reached ``endpoint`` (faulted or not)."""
        return self.world.request_counts.get(Endpoint(endpoint), 0)

    # ---- STK ---------------------------------------------------------------

    def submit_stk(self, tx: StkTransaction) -> None:
        """The prompt reaches the phone; the customer answers after ``tx.delay_s``."""
        self.world.stk[tx.checkout_request_id] = tx
        self._start(self._answer_stk, tx)

    async def _answer_stk(self, tx: StkTransaction) -> None:
        await trio.sleep(tx.delay_s)
        if self.world.stk.get(tx.checkout_request_id) is not tx:  # reset meanwhile
            return
        self.world.settle_stk(tx, self.wall_clock())
        if tx.suppress_callback or tx.behaviour is Behaviour.NO_CALLBACK:
            return
        body = wire.stk_callback(tx)
        headers = {"Businessshortcode": self.config.stk_shortcode}
        if tx.behaviour is Behaviour.LATE_CALLBACK:
            delays = [self.config.late_callback_delay_s]
        elif tx.behaviour is Behaviour.DUPLICATE_CALLBACK:
            delays = [0.0, self.config.duplicate_gap_s]
        else:
            delays = [0.0]
        for delay in delays:
            self.callbacks.schedule("stk", tx.callback_url, body, delay_s=delay, headers=headers)

    # ---- B2C ---------------------------------------------------------------

    def submit_b2c(self, payment: B2CPayment, fault: FaultKind | None) -> None:
        self.world.b2c[payment.originator_conversation_id] = payment
        self._start(self._process_b2c, payment, fault)

    async def _process_b2c(self, payment: B2CPayment, fault: FaultKind | None) -> None:
        await trio.sleep(self.config.result_delay_s)
        if self.world.b2c.get(payment.originator_conversation_id) is not payment:
            return
        self.world.settle_b2c(payment, self.wall_clock())
        if fault is FaultKind.NO_CALLBACK:
            return
        if fault is FaultKind.QUEUE_TIMEOUT:
            body = wire.queue_timeout(payment.originator_conversation_id, payment.conversation_id)
            self.callbacks.schedule("b2c_timeout", payment.timeout_url, body, delay_s=0.0)
            return
        name = self.world.customer(payment.phone).name
        body = wire.b2c_result(payment, self.world.accounts, name)
        self.callbacks.schedule("b2c_result", payment.result_url, body, delay_s=0.0)

    # ---- Transaction Status / Account Balance ------------------------------

    def submit_status(
        self,
        *,
        originator_conversation_id: str | None,
        receipt: str | None,
        ack_originator: str,
        conversation_id: str,
        result_url: str,
        timeout_url: str,
        fault: FaultKind | None,
    ) -> None:
        self._start(
            self._answer_status,
            originator_conversation_id,
            receipt,
            ack_originator,
            conversation_id,
            result_url,
            timeout_url,
            fault,
        )

    async def _answer_status(
        self,
        originator_conversation_id: str | None,
        receipt: str | None,
        ack_originator: str,
        conversation_id: str,
        result_url: str,
        timeout_url: str,
        fault: FaultKind | None,
    ) -> None:
        await trio.sleep(self.config.result_delay_s)
        if fault is FaultKind.NO_CALLBACK:
            return
        if fault is FaultKind.QUEUE_TIMEOUT:
            body = wire.queue_timeout(ack_originator, conversation_id)
            self.callbacks.schedule("status_timeout", timeout_url, body, delay_s=0.0)
            return
        found = self.world.find_for_status(originator_conversation_id, receipt)
        phone = found.phone if found is not None else ""
        body = wire.transaction_status_result(
            found,
            originator_conversation_id=ack_originator,
            conversation_id=conversation_id,
            b2c_shortcode=self.config.b2c_shortcode,
            customer_name=self.world.customer(phone).name if phone else "",
        )
        self.callbacks.schedule("status_result", result_url, body, delay_s=0.0)

    def submit_balance(
        self,
        *,
        ack_originator: str,
        conversation_id: str,
        result_url: str,
        timeout_url: str,
        fault: FaultKind | None,
    ) -> None:
        self._start(
            self._answer_balance, ack_originator, conversation_id, result_url, timeout_url, fault
        )

    async def _answer_balance(
        self,
        ack_originator: str,
        conversation_id: str,
        result_url: str,
        timeout_url: str,
        fault: FaultKind | None,
    ) -> None:
        await trio.sleep(self.config.result_delay_s)
        if fault is FaultKind.NO_CALLBACK:
            return
        if fault is FaultKind.QUEUE_TIMEOUT:
            body = wire.queue_timeout(ack_originator, conversation_id)
            self.callbacks.schedule("balance_timeout", timeout_url, body, delay_s=0.0)
            return
        body = wire.account_balance_result(
            self.world.accounts,
            originator_conversation_id=ack_originator,
            conversation_id=conversation_id,
            wall=self.wall_clock(),
        )
        self.callbacks.schedule("balance_result", result_url, body, delay_s=0.0)
