"""The whole of PenPay in one ``trio.run``: in-memory storage, in-process sandboxes.

:func:`assemble_sim` is :func:`penpay.server.assemble` with every
out-of-process part swapped for its twin: the PostgreSQL stores for the
``Memory*`` stores, Redis for :class:`MemoryRateLimiter`, the Daraja and
Deriv sandboxes reached through ``httpx.ASGITransport`` and in-memory
WebSocket pairs. Nothing here opens a socket, starts a thread or reads the
real clock, so a seed fixes the whole run.

:class:`SimWorld` splits state the way a real crash does. :class:`Durable`
(journal, transfer rows, indexes, users, keys) and the sandboxes' worlds
outlive a *generation*; the actor system, gateways, caches and the HTTP app
belong to one generation and are lost when it crashes.
"""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import argon2
import trio

from penpay.actors.callbacks import CallbackTokens
from penpay.actors.daraja import DarajaClient, DarajaClientConfig
from penpay.actors.deriv import DerivGateway, GatewayConfig
from penpay.actors.deriv_actor import DerivGatewayActor
from penpay.actors.fx import FxPolicy
from penpay.actors.ledger import DEFAULT_CHART, Ledger, LedgerAccount, run_unknown_settler
from penpay.actors.ledger_port import LedgerAdapter, fund
from penpay.actors.limits_view import limits_provider
from penpay.actors.mpesa import CallbackUrls, MpesaGateway
from penpay.actors.payments import Payments, run_unstarted_sweeper
from penpay.actors.policy import Limits
from penpay.actors.saga import Account, Command
from penpay.actors.transaction import (
    DepositActor,
    SagaDeps,
    WithdrawalActor,
    register_transactions,
)
from penpay.engine import ActorRef, ActorSystem, Clock, EngineConfig, Entropy, InMemoryJournal
from penpay.engine.system import open_actor_system
from penpay.engine.testing import TEST_EPOCH
from penpay.http import Services, create_app
from penpay.http.auth.passwords import Passwords
from penpay.http.auth.pii import PiiCipher
from penpay.http.auth.service import AuthService, create_admin
from penpay.http.auth.testing import shared_keyset
from penpay.http.auth.tokens import TokenAuthority
from penpay.http.callbacks import CallbackDeps, SourceAllowList
from penpay.http.idempotency import run_reaper
from penpay.http.ratelimit import MemoryRateLimiter
from penpay.money import Currency
from penpay.sandbox.daraja import Credentials, DarajaSandbox, DarajaSandboxConfig
from penpay.sandbox.deriv import DerivWorld, InProcessDerivSandbox, PaymentAgentTerms
from penpay.server import DERIV_COMMANDS, resume_unfinished
from penpay.sim.chaos import Chaos
from penpay.sim.router import AppRouter, in_process_client
from penpay.sim.trace import Trace
from penpay.storage.audit import MemoryAuditLog
from penpay.storage.idempotency_keys import MemoryIdempotencyStore
from penpay.storage.identity import EmailTaken, MemoryUserStore
from penpay.storage.raw_callbacks import InMemoryRawCallbacks
from penpay.storage.transactions import MemoryTransactionIndex
from penpay.storage.transfers_memory import InMemoryTransferStore

PENPAY_URL = "http://penpay.sim"
DARAJA_URL = "http://daraja.sim"
SAFARICOM = ("196.201.212.69", 443)
DARAJA_KEY, DARAJA_SECRET = "sim-key", "sim-secret"
PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
AGENT_LOGIN_ID = "CR9000001"
AGENT_EMAIL = "agent@penpay.sim"
AGENT_TOKEN = "sim-agent-token"
OPERATOR_EMAIL = "operator@penpay.sim"
OPERATOR_PASSWORD = "sim-operator-password-1"
#: Floats large enough that a long run rarely exhausts them (refusals are still fine).
AGENT_FLOAT_USD_CENTS = 100_000_000
MPESA_UTILITY_KES_CENTS = 50_000_000_000


BOOT_ATTEMPTS_MAX = 10
BOOT_RETRY_S = 5.0


class InlinePasswords(Passwords):
    """Argon2 with toy parameters, hashed on the trio thread.

    The real class hashes in a worker thread; under a mock clock with
    autojump a thread makes every task look blocked, so time would jump by a
    wall-clock-dependent amount and the run would no longer be a function of
    the seed.
    """

    def __init__(self) -> None:
        super().__init__(argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))

    async def hash(self, password: str) -> str:
        await trio.lowlevel.checkpoint()
        return self._hasher.hash(password)

    async def verify(self, password_hash: str, password: str) -> bool:
        await trio.lowlevel.checkpoint()
        try:
            return self._hasher.verify(password_hash, password)
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            return False


@dataclass
class Durable:
    """What a whole-system crash keeps: the databases' twins and the key files."""

    clock: Clock
    journal: InMemoryJournal
    transfers: InMemoryTransferStore = field(default_factory=InMemoryTransferStore)
    index: MemoryTransactionIndex = field(default_factory=MemoryTransactionIndex)
    users: MemoryUserStore = field(default_factory=MemoryUserStore)
    idempotency: MemoryIdempotencyStore = field(default_factory=MemoryIdempotencyStore)
    raw_callbacks: InMemoryRawCallbacks = field(default_factory=InMemoryRawCallbacks)
    callback_key: bytes = b"s" * 32
    pii: PiiCipher = field(default_factory=lambda: PiiCipher({1: b"p" * 32}, b"b" * 32))
    audit: MemoryAuditLog | None = None
    limiter: MemoryRateLimiter | None = None

    def __post_init__(self) -> None:
        self.audit = self.audit or MemoryAuditLog(self.clock)
        self.limiter = self.limiter or MemoryRateLimiter(self.clock)


@dataclass
class Sandboxes:
    """The providers: they never crash with PenPay and keep their own books."""

    daraja: DarajaSandbox
    deriv_world: DerivWorld
    deriv: InProcessDerivSandbox


def engine_config() -> EngineConfig:
    return EngineConfig(ask_timeout_s=10.0)


async def assemble_sim(
    system: ActorSystem,
    durable: Durable,
    boxes: Sandboxes,
    nursery: trio.Nursery,
    *,
    seed: int,
    chaos: Chaos,
    trace: Trace,
    on_status: Callable[[str, str, str], None] | None = None,
) -> tuple[Services, DerivGateway]:
    """:func:`penpay.server.assemble`, in memory; every step in the same order."""
    clock, entropy = system.clock, system.entropy
    assert durable.audit is not None and durable.limiter is not None
    auth = AuthService(
        users=durable.users,
        tokens=TokenAuthority(shared_keyset(), clock=clock, entropy=entropy),
        passwords=InlinePasswords(),
        pii=durable.pii,
        audit=durable.audit,
        clock=clock,
        entropy=entropy,
    )
    nursery.start_soon(run_reaper, durable.idempotency, clock)
    with contextlib.suppress(EmailTaken):  # ensure_sandbox_operator's job in server.py
        await create_admin(auth, OPERATOR_EMAIL, OPERATOR_PASSWORD)

    ledger = Ledger(system, durable.transfers, DEFAULT_CHART)
    chaos.wrap_kind(system, LedgerAccount, lambda: LedgerAccount(DEFAULT_CHART, durable.transfers))
    await ledger.start()
    nursery.start_soon(run_unknown_settler, ledger)
    await fund(
        ledger, name="sandbox_deriv_float", float_account=Account.DERIV_FLOAT,
        equity=Account.OWNER_EQUITY_USD, amount_cents=AGENT_FLOAT_USD_CENTS,
        currency=Currency.USD,
    )
    await fund(
        ledger, name="sandbox_mpesa_float", float_account=Account.MPESA_FLOAT,
        equity=Account.OWNER_EQUITY_KES, amount_cents=MPESA_UTILITY_KES_CENTS,
        currency=Currency.KES,
    )

    to_daraja = in_process_client(boxes.daraja.app, base_url=DARAJA_URL)
    client = DarajaClient(
        to_daraja,
        DarajaClientConfig(
            base_url=DARAJA_URL, consumer_key=DARAJA_KEY, consumer_secret=DARAJA_SECRET,
            stk_shortcode="174379", stk_passkey=PASSKEY, b2c_shortcode="600992",
            initiator_name="testapi", security_credential="sim-credential",
        ),
        wall_clock=clock.now,
        rng=random.Random(seed ^ 0xC11E),
    )
    urls = CallbackUrls(PENPAY_URL)
    system.register(MpesaGateway, lambda: MpesaGateway(client, urls), passivate_after_s=None)
    gateway = DerivGateway(
        boxes.deriv.connect, AGENT_TOKEN, rng=random.Random(seed ^ 0xDE51),
        config=GatewayConfig(),
    )
    await nursery.start(gateway.run)

    async def user_token(user_id: str) -> str | None:
        user = await auth.users.get_user(uuid.UUID(user_id))
        return auth.deriv_token_of(user) if user is not None else None

    system.register(
        DerivGatewayActor,
        lambda: DerivGatewayActor(gateway, AGENT_LOGIN_ID, user_token),
        passivate_after_s=None,
    )

    tokens = CallbackTokens(durable.callback_key)
    payments = Payments(
        system=system, index=durable.index, auth=auth, deriv=gateway, tokens=tokens,
        fx=FxPolicy(), limits=Limits(),
    )
    mpesa_ref = system.ref(MpesaGateway, "daraja")
    deriv_ref = system.ref(DerivGatewayActor, "agent")

    def gateway_for(command: Command) -> ActorRef:
        return deriv_ref if isinstance(command, DERIV_COMMANDS) else mpesa_ref

    async def observe(kind: str, state: Any) -> None:
        trace.record("status", kind, state.transaction_id, state.status.value)
        if on_status is not None:
            on_status(kind, state.transaction_id, state.status.value)
        await payments.observe(kind, state)

    deps = SagaDeps(ledger=LedgerAdapter(ledger), gateway_for=gateway_for, observe=observe)
    register_transactions(system, deps)  # as the server does; then chaos, same supervision
    chaos.wrap_kind(system, DepositActor, lambda: DepositActor(deps))
    chaos.wrap_kind(system, WithdrawalActor, lambda: WithdrawalActor(deps))
    await resume_unfinished(system, payments)
    nursery.start_soon(run_unstarted_sweeper, payments)

    async def provider_balances() -> dict[str, int | None]:
        accounts = boxes.daraja.world.accounts
        return {
            "deriv_float": gateway.agent_balance_cents,
            "mpesa_float": accounts.working_cents + accounts.utility_cents,
        }

    services = Services(
        system=system,
        readiness={"engine": lambda: True, "deriv": lambda: gateway.connected},
        auth=auth, audit=durable.audit, idempotency=durable.idempotency,
        rate_limiter=durable.limiter, limits_for=limits_provider(payments),
        payments=payments, ledger=ledger,
        provider_balances=provider_balances,
        callbacks=CallbackDeps(
            system=system, tokens=tokens, store=durable.raw_callbacks,
            allow=SourceAllowList([f"{SAFARICOM[0]}/32"]),
        ),
    )
    return services, gateway


def make_sandboxes(seed: int, router: AppRouter, wall: Clock) -> Sandboxes:
    """The providers, with RNGs of their own drawn from the seed."""
    callback_http = in_process_client(router, client=SAFARICOM)
    daraja = DarajaSandbox(
        DarajaSandboxConfig(
            credentials=(Credentials(DARAJA_KEY, DARAJA_SECRET),),
            initial_utility_account_cents=MPESA_UTILITY_KES_CENTS,
        ),
        callback_http=callback_http, wall_clock=wall.now, rng=random.Random(seed ^ 0xDA4A),
    )
    world = DerivWorld(rng=random.Random(seed ^ 0xDE41), wall_clock=wall.now)
    world.create_account(
        AGENT_LOGIN_ID, email=AGENT_EMAIL, fullname="PenPay Payment Agent",
        balance_cents=AGENT_FLOAT_USD_CENTS,
        payment_agent=PaymentAgentTerms(
            name="PenPay", min_cents=100, max_cents=200_000,
            daily_count_max=10**9, daily_amount_cents_max=10**12,
        ),
        tokens={AGENT_TOKEN: ("read", "payments", "trading_information", "admin")},
    )
    return Sandboxes(daraja=daraja, deriv_world=world, deriv=InProcessDerivSandbox(world))


@dataclass
class Generation:
    """One life of PenPay between start and crash."""

    number: int
    system: ActorSystem
    services: Services
    gateway: DerivGateway
    scope: trio.CancelScope
    done: trio.Event


class SimWorld:
    """Boots PenPay on the durable state, crashes it, boots it again."""

    def __init__(self, seed: int, trace: Trace, chaos: Chaos) -> None:
        self.seed = seed
        self.trace = trace
        self.chaos = chaos
        #: PenPay's clock: skewed by the clock-jump fault.
        self.clock = Clock(TEST_EPOCH)
        #: The providers' clock: never skewed (their time is not ours to move).
        self.provider_clock = Clock(TEST_EPOCH)
        self.durable = Durable(clock=self.clock, journal=InMemoryJournal(self.clock.now_ms))
        self.router = AppRouter(trace)
        self.boxes = make_sandboxes(seed, self.router, self.provider_clock)
        self.generation: Generation | None = None
        self.generations = 0
        #: Called with (kind, transaction id, status) on every status change.
        self.on_status: Callable[[str, str, str], None] | None = None
        self._nursery: trio.Nursery | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the sandboxes in ``nursery`` (they live as long as it), then PenPay."""
        self._nursery = nursery
        await nursery.start(self.boxes.daraja.run)
        await nursery.start(self.boxes.deriv.run)
        await self.boot()

    async def boot(self) -> Generation:
        """Start a new generation; a start-up that fails is retried, as systemd would."""
        assert self._nursery is not None
        for attempt in range(1, BOOT_ATTEMPTS_MAX + 1):
            self.generations += 1
            try:
                generation: Generation = await self._nursery.start(
                    self._run_generation, self.generations
                )
                break
            except Exception as exc:  # a crash during start-up: restart after a pause
                self.trace.record("boot-failed", self.generations, type(exc).__name__)
                if attempt == BOOT_ATTEMPTS_MAX:
                    raise
                await trio.sleep(BOOT_RETRY_S)
        self.generation = generation
        self.router.up(create_app(generation.services))
        self.trace.record("boot", generation.number)
        return generation

    async def _run_generation(
        self, number: int, *, task_status: trio.TaskStatus[Generation]
    ) -> None:
        done = trio.Event()
        try:
            with trio.CancelScope() as scope:
                async with (
                    open_actor_system(
                        config=engine_config(), clock=self.clock,
                        entropy=Entropy(self.seed * 1_000_003 + number),
                        journal=self.durable.journal,
                    ) as system,
                    trio.open_nursery() as services_nursery,
                ):
                    services, gateway = await assemble_sim(
                        system, self.durable, self.boxes, services_nursery,
                        seed=self.seed + number, chaos=self.chaos, trace=self.trace,
                        on_status=self.on_status,
                    )
                    task_status.started(
                        Generation(number, system, services, gateway, scope, done)
                    )
                    await trio.sleep_forever()
        finally:
            done.set()

    async def crash(self) -> None:
        """Kill the current generation the way a power cut would, keeping durable state.

        Mailboxes are not drained and nothing is snapshotted (the system is
        marked closing so its shutdown path does nothing), and every write to
        the journal or the transfer rows is refused while the tasks unwind, so
        no cleanup code can commit what a real crash would have lost.
        """
        generation = self.generation
        assert generation is not None
        self.trace.record("crash", generation.number)
        self.router.down()
        journal, transfers = self.durable.journal, self.durable.transfers
        saved = journal.fail_appends, transfers.fail_commit
        journal.fail_appends = _always
        transfers.fail_commit = _before
        generation.system._closing = True  # the crash skips the orderly drain
        generation.scope.cancel()
        await generation.done.wait()
        journal.fail_appends, transfers.fail_commit = saved
        self.generation = None

    async def restart(self) -> Generation:
        await self.crash()
        return await self.boot()

    async def stop(self) -> None:
        """End of run: an orderly stop of the last generation."""
        if self.generation is not None:
            self.router.down()
            self.generation.scope.cancel()
            await self.generation.done.wait()
            self.generation = None

    @property
    def system(self) -> ActorSystem:
        assert self.generation is not None
        return self.generation.system

    @property
    def services(self) -> Services:
        assert self.generation is not None
        return self.generation.services


def _always(_: str) -> bool:
    return True


def _before(_: str) -> Any:
    return "before"

