"""``run.py serve``: PenPay's trio main and composition root.

One trio run hosts everything: storage (PostgreSQL through the asyncpg
bridge, Redis through coredis), the sandboxes when no real Daraja/Deriv
credentials are configured, the actor system, the gateway actors and the
HTTP app on Hypercorn's trio worker. SIGINT and SIGTERM shut down in order:
stop taking requests, passivate every actor, then close storage.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import random
import signal
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import coredis
import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from penpay.actors.agent_terms import keep_to_agent_terms
from penpay.actors.callbacks import CallbackTokens
from penpay.actors.daraja import DarajaClient, DarajaClientConfig
from penpay.actors.deriv import DerivGateway, GatewayConfig
from penpay.actors.deriv.transport import websocket_connector
from penpay.actors.deriv_actor import DerivGatewayActor
from penpay.actors.fx import FxPolicy
from penpay.actors.ledger import DEFAULT_CHART, Ledger, run_unknown_settler
from penpay.actors.ledger_port import LedgerAdapter, fund
from penpay.actors.limits_view import limits_provider
from penpay.actors.mpesa import CallbackUrls, MpesaGateway, refused_words
from penpay.actors.payments import Payments, run_unstarted_sweeper
from penpay.actors.policy import Limits
from penpay.actors.saga import (
    TERMINAL,
    Account,
    Command,
    CreditDeriv,
    FindDerivTransfer,
    FindDerivWithdrawal,
    SagaTimings,
    Status,
    WithdrawFromDeriv,
)
from penpay.actors.transaction import (
    DepositActor,
    GetState,
    SagaDeps,
    WithdrawalActor,
    register_transactions,
)
from penpay.config import Settings, load_settings
from penpay.engine import (
    ActorRef,
    ActorSystem,
    EngineConfig,
    EngineError,
    Journal,
    SupervisionPolicy,
    open_actor_system,
)
from penpay.engine.tuning import tune_gc
from penpay.errors import ConfigurationError
from penpay.http import Services, create_app
from penpay.http.auth.factory import build_auth
from penpay.http.auth.keyfiles import keys_dir, load_or_create
from penpay.http.callbacks import LOOPBACK, SAFARICOM_CALLBACK_IPS, CallbackDeps, SourceAllowList
from penpay.http.idempotency import run_reaper
from penpay.http.proxies import Network, parse_networks
from penpay.http.ratelimit import RedisRateLimiter
from penpay.money import Currency
from penpay.sandbox.daraja import Credentials, DarajaSandbox, DarajaSandboxConfig
from penpay.sandbox.daraja.server import serve_daraja_sandbox
from penpay.sandbox.deriv import DerivWorld, serve_control_api, serve_deriv_sandbox
from penpay.sandbox.seed import SEED, seed_daraja, seed_deriv
from penpay.sandbox.standalone import (
    SANDBOX_DARAJA_KEY,
    SANDBOX_DARAJA_SECRET,
    SANDBOX_PASSKEY,
)
from penpay.storage.audit import PgAuditLog
from penpay.storage.connect import Readiness, connect_with_retry
from penpay.storage.embedded import start_embedded_postgres, start_embedded_redis
from penpay.storage.idempotency_keys import PgIdempotencyStore
from penpay.storage.identity import PgUserStore
from penpay.storage.journal import open_pg_journal
from penpay.storage.migrations import migrate
from penpay.storage.outbox import OutboxRelay, redis_from_url
from penpay.storage.pg import Database
from penpay.storage.raw_callbacks import PgRawCallbacks
from penpay.storage.transactions import PgTransactionIndex
from penpay.storage.transfers import PgTransferStore, open_pg_transfer_store

log = logging.getLogger("penpay.server")



def engine_config(settings: Settings) -> EngineConfig:
    return EngineConfig(
        mailbox_capacity=settings.mailbox_capacity,
        passivate_after_s=settings.passivate_after_s,
        ask_timeout_s=settings.ask_timeout_s,
        snapshot_every_events=settings.snapshot_every_events,
        supervision=SupervisionPolicy(
            backoff_min_s=settings.restart_backoff_min_s,
            backoff_max_s=settings.restart_backoff_max_s,
            max_restarts=settings.restart_intensity_max,
            window_s=settings.restart_intensity_window_s,
        ),
    )


def hypercorn_config(settings: Settings) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"{settings.http_host}:{settings.http_port}"]
    config.accesslog = None
    config.keep_alive_timeout = 30
    config.h11_max_incomplete_size = 64 * 1024
    return config


@dataclass
class Storage:
    db: Database
    journal: Journal
    redis_url: str
    readiness: dict[str, Any] = field(default_factory=dict)


@asynccontextmanager
async def open_storage(settings: Settings) -> AsyncIterator[Storage]:
    """PostgreSQL (embedded unless configured), migrations, the journal, Redis and the relay."""
    data_dir = Path(settings.data_dir)
    await trio.Path(data_dir).mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        database_url = settings.database_url
        if database_url is None:
            embedded_pg = await trio.to_thread.run_sync(start_embedded_postgres, data_dir)
            stack.callback(embedded_pg.close)
            database_url = embedded_pg.url
            log.info("embedded PostgreSQL under %s", data_dir / "pg")
        redis_url = settings.redis_url
        if redis_url is None:
            embedded_redis = await trio.to_thread.run_sync(start_embedded_redis, data_dir)
            stack.callback(embedded_redis.close)
            redis_url = embedded_redis.url
            log.info("embedded Redis at %s", redis_url)
        db_ready = Readiness()
        db = await connect_with_retry(database_url, readiness=db_ready)
        stack.push_async_callback(db.aclose)
        applied = await migrate(db)
        if applied:
            log.info("applied migrations: %s", ", ".join(applied))
        journal = await stack.enter_async_context(
            open_pg_journal(
                db,
                batch_events_max=settings.journal_batch_events_max,
                batch_window_ms=settings.journal_batch_window_ms,
            )
        )
        redis = redis_from_url(redis_url)
        await stack.enter_async_context(redis)
        # The relay lives in a nursery of its own, cancelled before its Redis
        # client closes (the stack unwinds in reverse order).
        relay_nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(relay_nursery.cancel_scope.cancel)
        relay = OutboxRelay(db, journal, redis, stream_key=f"{settings.redis_namespace}:events")
        await relay_nursery.start(relay.run)
        yield Storage(
            db=db, journal=journal, redis_url=redis_url,
            readiness={"database": db_ready},
        )


@dataclass
class Sandboxes:
    daraja_url: str | None = None
    deriv_url: str | None = None
    deriv_control_url: str | None = None
    deriv_world: DerivWorld | None = None
    daraja: DarajaSandbox | None = None


def check_providers(settings: Settings) -> None:
    """Real Daraja and real Deriv together, or both sandboxes: never one of each.

    With real Deriv and the Daraja sandbox, every deposit would be "paid" by a
    simulated M-Pesa and credited in real USD from the agent's float. A
    credential of a provider whose key is missing is a half-made configuration
    too (an empty variable counts as missing), and is refused the same way.
    """
    daraja = {
        name: getattr(settings, name)
        for name in ("daraja_consumer_key", "daraja_consumer_secret", "daraja_stk_passkey",
                     "daraja_security_credential")
    }
    deriv = {name: getattr(settings, name)
             for name in ("deriv_agent_token", "deriv_agent_login_id")}
    real_daraja = settings.daraja_consumer_key is not None
    real_deriv = settings.deriv_agent_token is not None
    stray = [name for name, value in daraja.items() if value is not None and not real_daraja]
    stray += [name for name, value in deriv.items() if value is not None and not real_deriv]
    if stray:
        names = ", ".join(f"PENPAY_{n.upper()}" for n in stray)
        key = "PENPAY_DARAJA_CONSUMER_KEY" if not real_daraja else "PENPAY_DERIV_AGENT_TOKEN"
        raise ConfigurationError(f"{names} set, but {key} is missing or empty")
    if real_daraja != real_deriv:
        real, sandbox = ("Daraja", "Deriv") if real_daraja else ("Deriv", "Daraja")
        raise ConfigurationError(
            f"real {real} credentials are set but {sandbox}'s are not: PenPay runs against "
            "both real providers or both sandboxes, never real money against a sandbox"
        )


async def start_sandboxes(settings: Settings, nursery: trio.Nursery, clock: Any) -> Sandboxes:
    """Start the sandboxes PenPay needs because real credentials are missing."""
    boxes = Sandboxes()
    host = "127.0.0.1"
    if settings.daraja_consumer_key is None:
        callback_http = httpx.AsyncClient(timeout=10)
        config = DarajaSandboxConfig(
            credentials=(Credentials(SANDBOX_DARAJA_KEY, SANDBOX_DARAJA_SECRET),),
            callback_source_address="127.0.0.1",
        )
        sandbox, url = await nursery.start(
            lambda task_status: serve_daraja_sandbox(
                host, settings.sandbox_daraja_port, config=config,
                callback_http=callback_http, wall_clock=clock.now, rng=random.Random(),
                task_status=task_status,
            )
        )
        seed_daraja(sandbox)
        boxes.daraja, boxes.daraja_url = sandbox, url
        log.info("Daraja sandbox on %s (control API under /__sandbox__)", url)
    if settings.deriv_agent_token is None:
        world = DerivWorld(rng=random.Random(), wall_clock=clock.now)
        seed_deriv(world)
        address = await nursery.start(serve_deriv_sandbox, world, host, settings.sandbox_deriv_port)
        control = await nursery.start(
            serve_control_api, world, host, settings.sandbox_deriv_control_port
        )
        boxes.deriv_world, boxes.deriv_url, boxes.deriv_control_url = world, address.url, control
        log.info("Deriv sandbox on %s, control API on %s", address.url, control)
    return boxes


def deriv_agent(settings: Settings) -> tuple[str, str]:
    """The payment agent's token and login id: the sandbox's, or both from the environment.

    A real token without its login id must not fall back to the sandbox agent's:
    withdrawals would name an agent that is not ours.
    """
    if settings.deriv_agent_token is None:
        return SEED.agent_token, SEED.agent_login_id
    if settings.deriv_agent_login_id is None:
        raise ConfigurationError(
            "real Deriv needs PENPAY_DERIV_AGENT_LOGIN_ID with PENPAY_DERIV_AGENT_TOKEN"
        )
    return settings.deriv_agent_token, settings.deriv_agent_login_id


def daraja_client(settings: Settings, boxes: Sandboxes, clock: Any) -> DarajaClient:
    if boxes.daraja_url is not None:
        config = DarajaClientConfig(
            base_url=boxes.daraja_url,
            consumer_key=SANDBOX_DARAJA_KEY,
            consumer_secret=SANDBOX_DARAJA_SECRET,
            stk_shortcode="174379",
            stk_passkey=SANDBOX_PASSKEY,
            b2c_shortcode="600992",
            initiator_name="testapi",
            security_credential="sandbox-credential",
        )
    else:
        missing = [
            name for name in ("daraja_consumer_secret", "daraja_stk_passkey",
                              "daraja_security_credential")
            if getattr(settings, name) is None
        ]
        if missing:
            names = ", ".join(f"PENPAY_{m.upper()}" for m in missing)
            raise ConfigurationError(f"real Daraja needs {names}")
        assert settings.daraja_consumer_key is not None
        config = DarajaClientConfig(
            base_url=settings.daraja_base_url,
            consumer_key=settings.daraja_consumer_key,
            consumer_secret=settings.daraja_consumer_secret or "",
            stk_shortcode=settings.daraja_stk_shortcode,
            stk_passkey=settings.daraja_stk_passkey or "",
            b2c_shortcode=settings.daraja_b2c_shortcode,
            initiator_name=settings.daraja_initiator_name,
            security_credential=settings.daraja_security_credential or "",
        )
    return DarajaClient(httpx.AsyncClient(timeout=35), config, wall_clock=clock.now)


def callback_urls(settings: Settings, boxes: Sandboxes) -> CallbackUrls:
    """Where Daraja will call back; a base URL real Daraja could not use stops start-up.

    A trailing ``/`` is dropped (``…//api/v1/…`` would answer 404, and Daraja
    calls back once). Real Daraja calls public HTTPS URLs only, without the
    words it refuses (protocols.md 1.11).
    """
    base = settings.public_base_url.rstrip("/")
    url = urlsplit(base)
    if url.scheme not in ("http", "https") or not url.hostname or url.path or url.query:
        raise ConfigurationError(
            f"PENPAY_PUBLIC_BASE_URL must be a scheme and host (and port), got {base!r}"
        )
    if boxes.daraja_url is None:
        refused = refused_words(base)
        if refused:
            raise ConfigurationError(
                f"PENPAY_PUBLIC_BASE_URL holds {', '.join(refused)}: Daraja refuses callback"
                " URLs with these words (protocols.md 1.11)"
            )
        # Seeded peers are sandboxes another process started (PENPAY_SANDBOX_SEEDED):
        # they call back on loopback, over plain http.
        public = not settings.sandbox_seeded
        if public and (url.scheme != "https" or _private_host(url.hostname)):
            raise ConfigurationError(
                f"PENPAY_PUBLIC_BASE_URL must be a public https URL for real Daraja, got {base!r}"
            )
    return CallbackUrls(base)


def _private_host(host: str) -> bool:
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global


def trusted_proxies(settings: Settings) -> tuple[Network, ...]:
    """``PENPAY_TRUSTED_PROXIES`` as networks; a malformed one stops start-up by name."""
    try:
        return parse_networks(settings.trusted_proxies)
    except ValueError as exc:
        raise ConfigurationError(f"PENPAY_TRUSTED_PROXIES is not valid: {exc}") from None


def callback_allow_list(settings: Settings, boxes: Sandboxes) -> SourceAllowList:
    if settings.callback_allow:
        return SourceAllowList(n.strip() for n in settings.callback_allow.split(",") if n.strip())
    networks = list(SAFARICOM_CALLBACK_IPS)
    if boxes.daraja is not None:
        networks += LOOPBACK
    return SourceAllowList(networks)


def callback_tokens(settings: Settings) -> CallbackTokens:
    import os
    import secrets

    configured = os.environ.get("PENPAY_CALLBACK_KEY")
    if configured:
        return CallbackTokens(configured.encode())
    path = keys_dir(Path(settings.data_dir)) / "callback.key"
    return CallbackTokens(load_or_create(path, lambda: secrets.token_bytes(32)))


async def assemble(
    system: ActorSystem,
    settings: Settings,
    storage: Storage,
    boxes: Sandboxes,
    nursery: trio.Nursery,
    *,
    transfer_store: PgTransferStore,
    redis: coredis.Redis[Any],
) -> Services:
    """Build every service and register every actor kind; returns what HTTP needs.

    Resources that own tasks (the transfer store's writer, the Redis client)
    are opened by the caller, outside the actor system, so they close only
    after every actor has passivated.
    """
    clock, entropy = system.clock, system.entropy
    # Identity, audit, idempotency, rate limits.
    audit = PgAuditLog(storage.db, clock)
    auth = build_auth(
        users=PgUserStore(storage.db), audit=audit, data_dir=Path(settings.data_dir),
        clock=clock, entropy=entropy,
    )
    idempotency = PgIdempotencyStore(storage.db)
    nursery.start_soon(run_reaper, idempotency, clock)
    limiter = RedisRateLimiter(redis, namespace=f"{settings.redis_namespace}:rl")

    seeded = settings.sandbox_seeded or (
        boxes.daraja is not None and boxes.deriv_world is not None
    )
    if seeded:
        await ensure_sandbox_operator(auth, Path(settings.data_dir))

    # The ledger, its floats funded (in sandbox mode) to match the sandboxes.
    ledger = Ledger(system, transfer_store, DEFAULT_CHART)
    await ledger.start()
    nursery.start_soon(run_unknown_settler, ledger)
    if boxes.deriv_world is not None or settings.sandbox_seeded:
        await fund(
            ledger, name="sandbox_deriv_float", float_account=Account.DERIV_FLOAT,
            equity=Account.OWNER_EQUITY_USD, amount_cents=SEED.agent_float_usd_cents,
            currency=Currency.USD,
        )
    if boxes.daraja is not None or settings.sandbox_seeded:
        await fund(
            ledger, name="sandbox_mpesa_float", float_account=Account.MPESA_FLOAT,
            equity=Account.OWNER_EQUITY_KES, amount_cents=SEED.mpesa_utility_kes_cents,
            currency=Currency.KES,
        )

    # Gateways: M-Pesa through Daraja, Deriv through the agent socket.
    client = daraja_client(settings, boxes, clock)
    urls = callback_urls(settings, boxes)
    system.register(MpesaGateway, lambda: MpesaGateway(client, urls), passivate_after_s=None)
    deriv_url = boxes.deriv_url or settings.deriv_ws_url
    agent_token, agent_login_id = deriv_agent(settings)
    gateway = DerivGateway(
        websocket_connector(deriv_url),
        agent_token,
        rng=random.Random(),
        config=GatewayConfig(calls_per_min=settings.deriv_calls_per_min or None),
    )
    await nursery.start(gateway.run)

    async def user_token(user_id: str) -> str | None:
        user = await auth.users.get_user(uuid.UUID(user_id))
        return auth.deriv_token_of(user) if user is not None else None

    system.register(
        DerivGatewayActor,
        lambda: DerivGatewayActor(gateway, agent_login_id, user_token),
        passivate_after_s=None,
    )

    # Transactions.
    tokens = callback_tokens(settings)
    payments = Payments(
        system=system,
        index=PgTransactionIndex(storage.db),
        auth=auth,
        deriv=gateway,
        tokens=tokens,
        fx=FxPolicy(
            mid_kes_cents_per_usd=settings.fx_mid_kes_cents_per_usd,
            spread_kes_cents=settings.fx_spread_kes_cents,
            quote_ttl_s=settings.quote_ttl_s,
        ),
        limits=Limits(
            deposit_min_usd_cents=settings.deposit_min_usd_cents,
            deposit_max_usd_cents=settings.deposit_max_usd_cents,
            withdrawal_min_usd_cents=settings.withdrawal_min_usd_cents,
            withdrawal_max_usd_cents=settings.withdrawal_max_usd_cents,
            daily_cap_usd_cents=settings.daily_cap_usd_cents,
        ),
    )
    def unavailable() -> str | None:
        if client.breaker.is_open:
            return "M-Pesa is not answering; no new payments until it recovers"
        if not gateway.connected:
            return "Deriv is not connected; no new payments until it reconnects"
        return None

    payments.unavailable = unavailable
    mpesa_ref = system.ref(MpesaGateway, "daraja")
    deriv_ref = system.ref(DerivGatewayActor, "agent")

    def gateway_for(command: Command) -> ActorRef:
        return deriv_ref if isinstance(command, DERIV_COMMANDS) else mpesa_ref

    timings = SagaTimings(
        stk_callback_ms=int(settings.stk_callback_wait_s * 1000),
        stk_query_interval_ms=int(settings.stk_query_interval_s * 1000),
        deriv_lookup_interval_ms=int(settings.deriv_lookup_interval_s * 1000),
        b2c_result_ms=int(settings.b2c_result_wait_s * 1000),
    )
    deps = SagaDeps(
        ledger=LedgerAdapter(ledger), gateway_for=gateway_for, timings=timings,
        observe=payments.observe,
    )
    register_transactions(system, deps)
    await resume_unfinished(system, payments)
    nursery.start_soon(run_unstarted_sweeper, payments)
    nursery.start_soon(keep_to_agent_terms, gateway, payments)

    readiness = {
        "engine": lambda: True,
        **storage.readiness,
        "deriv": lambda: gateway.connected,
        "daraja": lambda: not client.breaker.is_open,
    }
    async def provider_balances() -> dict[str, int | None]:
        # One ledger float mirrors both M-Pesa accounts: STK collects into Working,
        # B2C pays out of Utility.
        mpesa = None
        if boxes.daraja is not None:
            accounts = boxes.daraja.world.accounts
            mpesa = accounts.working_cents + accounts.utility_cents
        return {"deriv_float": gateway.agent_balance_cents, "mpesa_float": mpesa}

    return Services(
        system=system, readiness=readiness, auth=auth, audit=audit, idempotency=idempotency,
        rate_limiter=limiter if settings.rate_limits_enabled else None,
        limits_for=limits_provider(payments), payments=payments, ledger=ledger,
        provider_balances=provider_balances,
        callbacks=CallbackDeps(
            system=system, tokens=tokens, store=PgRawCallbacks(storage.db),
            allow=callback_allow_list(settings, boxes),
        ),
    )


SANDBOX_OPERATOR = "sandbox-operator@penpay.example"


def sandbox_operator_password(data_dir: Path) -> str:
    """Generated at first run into var/keys/ (git-ignored); read by ``run.py demo``."""
    import secrets

    path = keys_dir(data_dir) / "sandbox-operator-password"
    return load_or_create(path, lambda: secrets.token_urlsafe(18).encode()).decode()


async def ensure_sandbox_operator(auth: Any, data_dir: Path) -> None:
    """In sandbox mode only: an operator account the demo can activate users with."""
    from penpay.http.auth.service import create_admin
    from penpay.storage.identity import EmailTaken

    password = await trio.to_thread.run_sync(sandbox_operator_password, data_dir)
    try:
        await create_admin(auth, SANDBOX_OPERATOR, password)
        log.info("sandbox operator %s created", SANDBOX_OPERATOR)
    except EmailTaken:
        pass


DERIV_COMMANDS = (CreditDeriv, FindDerivTransfer, WithdrawFromDeriv, FindDerivWithdrawal)


async def resume_unfinished(system: ActorSystem, payments: Payments) -> None:
    """After a restart, wake every transaction that had not finished, so it recovers.

    Each one's ``recover`` re-arms its deadlines and reconciles whatever was in
    flight when the process stopped.
    """
    resumed = 0
    for status in UNFINISHED:
        cursor = None
        while True:
            rows = await payments.index.page(user_id=None, status=status, limit=500, before=cursor)
            for row in rows:
                kind = DepositActor if row.type == "deposit" else WithdrawalActor
                try:
                    state = await system.ref(kind, str(row.id)).ask(GetState())
                except EngineError as exc:
                    # One transaction that cannot answer must not stop the start-up:
                    # its supervisor restarts it, and its recovery re-derives its work.
                    log.warning("resuming %s %s: %s", row.type, row.id, exc)
                    resumed += 1
                    continue
                if not state.started:
                    # Reserved for a request whose transaction never started (the
                    # process or actor died first); no money moved, but a deposit
                    # may hold float. A retry with the same Idempotency-Key starts
                    # it afresh (and takes the hold again).
                    with contextlib.suppress(EngineError):
                        await payments.close_if_never_started(row)
                    continue
                resumed += 1
            if len(rows) < 500:
                break
            cursor = (rows[-1].created_at, rows[-1].id)
    if resumed:
        log.info("resumed %d unfinished transactions", resumed)


#: Statuses woken at start-up. NEEDS_REVIEW is among them: a deposit parked there
#: without M-Pesa's answer keeps querying STK on a timer (``stk_review``) that only
#: its recovery re-arms, so one left asleep would never settle itself. (Waking the
#: other parked transactions only re-issues their postings, which are idempotent.)
UNFINISHED = tuple(s.value for s in Status if s not in TERMINAL)


async def _watch_signals(
    stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Turn SIGINT/SIGTERM into an orderly stop; later signals are logged, not raised."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if stop.is_set():
                log.info("received %s again; already shutting down", name)
            else:
                log.info("received %s; shutting down", name)
                stop.set()


async def serve(
    settings: Settings,
    *,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run PenPay until ``stop`` is set (default: until SIGINT/SIGTERM).

    ``task_status`` gets the bound HTTP addresses once the server listens.
    """
    proxies = trusted_proxies(settings)
    check_providers(settings)
    async with trio.open_nursery() as outer:
        if stop is None:
            stop = trio.Event()
            await outer.start(_watch_signals, stop)
        starting, serving = trio.CancelScope(), trio.Event()
        outer.start_soon(_abandon_start_up, stop, serving, starting)
        with starting:
            await _run_until(stop, serving, settings, proxies, task_status)
        log.info("stopped")
        outer.cancel_scope.cancel()


async def _abandon_start_up(
    stop: trio.Event, serving: trio.Event, starting: trio.CancelScope
) -> None:
    """A stop asked for before PenPay serves (say, while the database is still
    unreachable) ends the start-up; once serving, Hypercorn's orderly shutdown
    takes it."""
    await stop.wait()
    if not serving.is_set():
        log.info("stop requested during start-up")
        starting.cancel()


async def _run_until(
    stop: trio.Event,
    serving: trio.Event,
    settings: Settings,
    proxies: tuple[Network, ...],
    task_status: trio.TaskStatus[list[str]],
) -> None:
    """Open everything, recover, then serve until ``stop`` (the body of :func:`serve`)."""
    async with open_storage(settings) as storage:
        from penpay.engine import Clock

        clock = Clock()
        async with trio.open_nursery() as sandboxes_nursery:
            boxes = await start_sandboxes(settings, sandboxes_nursery, clock)
            redis = redis_from_url(storage.redis_url)
            # Outermost first: these close only after every actor has passivated.
            async with (
                open_pg_transfer_store(storage.db) as transfer_store,
                redis,
                open_actor_system(
                    config=engine_config(settings), clock=clock, journal=storage.journal
                ) as system,
                trio.open_nursery() as services_nursery,
            ):
                services = await assemble(
                    system, settings, storage, boxes, services_nursery,
                    transfer_store=transfer_store, redis=redis,
                )
                serving.set()
                await hypercorn_serve(
                    create_app(services, trusted_proxies=proxies),  # type: ignore[arg-type]
                    hypercorn_config(settings),
                    shutdown_trigger=stop.wait,
                    task_status=task_status,
                )
                services_nursery.cancel_scope.cancel()
            sandboxes_nursery.cancel_scope.cancel()


def main() -> int:
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log.info("PenPay starting on http://%s:%d", settings.http_host, settings.http_port)
    log.info("sandbox demo client: %s (%s)", SEED.client_login_id, SEED.client_email)
    tune_gc()
    trio.run(serve, settings)
    return 0
