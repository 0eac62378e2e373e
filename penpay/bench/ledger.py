"""Ledger benchmark: ``python run.py bench ledger --json``.

Durable two-phase transfers (pending, then post) through :class:`Ledger` on
real PostgreSQL (account journal and transfer rows both group-committed),
with ``WORKERS`` concurrent callers:

- ``uniform_transfers_per_s``: each transfer between two of 10,000 customer
  accounts chosen at random;
- ``hot_transfers_per_s``: every transfer credits the one M-Pesa float (a
  B2C payout hold, admitted against the float's balance);
- ``baseline_hot_transfers_per_s``: the classic design on the same server,
  same concurrency, same hot account: a ``balances`` table, one database
  transaction per phase, ``SELECT … FOR UPDATE`` of both rows, check,
  ``UPDATE``, insert the transfer row;
- ``hot_ratio`` = hot / uniform, ``vs_baseline`` = hot / baseline;
- ``workers``: the concurrent callers of every run (``PENPAY_BENCH_WORKERS``,
  default ``WORKERS``), the same for ours and the baseline.

Both sides are warmed up before anything is timed: every account actor is
activated (its journal recovered) by the funding transfers and one balance
query each, and the baseline's balances table is read once, so the measured
windows hold steady-state transfers only, not 10,000 activations.

Uses ``PENPAY_BENCH_DATABASE_URL`` (an administrative URL: the benchmark
creates and drops its own database) or else an embedded PostgreSQL.
"""

from __future__ import annotations

import os
import random
import secrets
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from penpay.actors.ledger import (
    DEFAULT_CHART,
    AccountSpec,
    Chart,
    Ledger,
    Side,
    Transfer,
    TransferKind,
)
from penpay.engine import EngineConfig, open_actor_system
from penpay.money import Currency
from penpay.storage.journal import open_pg_journal
from penpay.storage.migrations import migrate
from penpay.storage.pg import Database, database

#: Customer accounts the uniform run spreads over.
ACCOUNTS = 10_000
#: Concurrent callers in every run (ours and the baseline).
WORKERS = 256
#: Two-phase transfers per run.
TRANSFERS_UNIFORM = 20_000
TRANSFERS_HOT = 20_000
#: The baseline is slow on a hot row; a shorter run measures it just as well.
TRANSFERS_BASELINE = 4_000
#: Connections the baseline may use (each holds the hot row lock in turn).
BASELINE_CONNECTIONS = 16
#: Every customer account starts with this much (KES cents).
FUNDING_CENTS = 1_000_000_00


def _wallet(i: int) -> str:
    return f"wallet_{i:05d}"


def _chart() -> Chart:
    return DEFAULT_CHART.extend(
        AccountSpec(
            code=_wallet(i),
            name=f"Customer wallet {i}",
            currency=Currency.KES,
            normal_side=Side.CREDIT,
            debits_must_not_exceed_credits=True,
        )
        for i in range(ACCOUNTS)
    )


_ids = random.Random(11)


def _uuid() -> str:
    """A random version-4 id without a system call per id (the driver's cost is not ours)."""
    return str(uuid.UUID(int=_ids.getrandbits(128), version=4))


def _t(debit: str, credit: str, amount: int, kind: TransferKind) -> Transfer:
    return Transfer(
        id=_uuid(),
        debit_account=debit,
        credit_account=credit,
        amount_cents=amount,
        currency=Currency.KES,
        kind=kind,
        code="bench",
    )


async def _drive(workers: int, total: int, one: Callable[[int], Awaitable[None]]) -> float:
    """Run ``one(i)`` for i in range(total) on ``workers`` tasks; return transfers/s."""
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            await one(i)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)
    return total / (time.perf_counter() - started)


async def _ours(db: Database, workers: int) -> tuple[float, float]:
    from penpay.storage.transfers import open_pg_transfer_store

    chart = _chart()
    rng = random.Random(7)
    config = EngineConfig(passivate_after_s=None, ask_timeout_s=120.0)
    async with (
        open_pg_journal(
            db, batch_events_max=2000, batch_window_ms=1.0, writer_connections=2
        ) as journal,
        open_pg_transfer_store(db, batch_rows_max=2000, batch_window_ms=1.0) as store,
        open_actor_system(config=config, journal=journal) as system,
    ):
        ledger = Ledger(system, store, chart)
        await ledger.start(recover=False)

        async def fund(i: int) -> None:
            group = [
                _t("mpesa_float", _wallet(j), FUNDING_CENTS, TransferKind.POSTED)
                for j in range(i * 50, min(i * 50 + 50, ACCOUNTS))
            ]
            result = await ledger.create_transfers(group)
            assert result.ok, result

        await _drive(64, (ACCOUNTS + 49) // 50, fund)
        # Warm-up: every account actor live before the timed runs.
        await ledger.balances()

        async def two_phase(debit: str, credit: str) -> None:
            pending = _t(debit, credit, rng.randint(1, 100_00), TransferKind.PENDING)
            result = await ledger.create_transfers([pending])
            assert result.ok, result
            result = await ledger.post_pending(_uuid(), pending.id)
            assert result.ok, result

        async def uniform(_: int) -> None:
            a, b = rng.sample(range(ACCOUNTS), 2)
            await two_phase(_wallet(a), _wallet(b))

        async def hot(_: int) -> None:
            await two_phase(_wallet(rng.randrange(ACCOUNTS)), "mpesa_float")

        uniform_per_s = await _drive(workers, TRANSFERS_UNIFORM, uniform)
        hot_per_s = await _drive(workers, TRANSFERS_HOT, hot)
        line = (await ledger.trial_balance())[Currency.KES]
        assert line.balanced, line
    return uniform_per_s, hot_per_s


_BASELINE_SCHEMA = """
CREATE TABLE bench_balances (
    account text PRIMARY KEY, posted bigint NOT NULL, pending bigint NOT NULL,
    floor_checked boolean NOT NULL
);
CREATE TABLE bench_transfers (
    id uuid PRIMARY KEY, debit_account text NOT NULL, credit_account text NOT NULL,
    amount_cents bigint NOT NULL CHECK (amount_cents > 0), kind text NOT NULL,
    pending_id uuid, created_at timestamptz NOT NULL DEFAULT now()
);
"""
_LOCK = "SELECT account, posted, pending FROM bench_balances WHERE account = ANY($1) "
_LOCK += "ORDER BY account FOR UPDATE"


async def _baseline(db: Database, workers: int) -> float:
    await db.execute(_BASELINE_SCHEMA)
    await db.execute(
        "INSERT INTO bench_balances SELECT 'wallet_' || lpad(i::text, 5, '0'), $1, 0, true "
        "FROM generate_series(0, $2 - 1) i",
        FUNDING_CENTS,
        ACCOUNTS,
    )
    await db.execute("INSERT INTO bench_balances VALUES ('mpesa_float', 0, 0, false)")
    await db.execute("ANALYZE bench_balances")
    await db.fetch("SELECT * FROM bench_balances")  # warm-up: every row in the buffer cache
    rng = random.Random(7)

    async def phase(debit: str, credit: str, amount: int, kind: str, pending: str | None) -> str:
        transfer_id = _uuid()
        async with db.transaction() as conn:
            rows = await conn.fetch(_LOCK, [debit, credit])
            wallet = next(r for r in rows if r["account"] == debit)
            if kind == "pending":
                assert wallet["posted"] - wallet["pending"] >= amount, "insufficient funds"
                await conn.execute(
                    "UPDATE bench_balances SET pending = pending + $2 WHERE account = $1",
                    debit,
                    amount,
                )
            else:
                await conn.execute(
                    "UPDATE bench_balances SET pending = pending - $2, posted = posted - $2 "
                    "WHERE account = $1",
                    debit,
                    amount,
                )
                await conn.execute(
                    "UPDATE bench_balances SET posted = posted + $2 WHERE account = $1",
                    credit,
                    amount,
                )
            await conn.execute(
                "INSERT INTO bench_transfers (id, debit_account, credit_account, amount_cents,"
                " kind, pending_id) VALUES ($1, $2, $3, $4, $5, $6)",
                transfer_id,
                debit,
                credit,
                amount,
                kind,
                pending,
            )
        return transfer_id

    async def hot(_: int) -> None:
        wallet, amount = _wallet(rng.randrange(ACCOUNTS)), rng.randint(1, 100_00)
        pending = await phase(wallet, "mpesa_float", amount, "pending", None)
        await phase(wallet, "mpesa_float", amount, "post", pending)

    return await _drive(workers, TRANSFERS_BASELINE, hot)


async def _main(admin_url: str) -> dict[str, object]:
    workers = int(os.environ.get("PENPAY_BENCH_WORKERS", WORKERS))
    name = "bench_ledger_" + secrets.token_hex(4)
    async with database(admin_url, pool_size_max=1) as admin:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = _with_database(admin_url, name)
            async with database(url, pool_size_max=BASELINE_CONNECTIONS) as db:
                await migrate(db)
                uniform, hot = await _ours(db, workers)
                baseline = await _baseline(db, workers)
        finally:
            with trio.CancelScope(shield=True):
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return {
        "uniform_transfers_per_s": round(uniform),
        "hot_transfers_per_s": round(hot),
        "baseline_hot_transfers_per_s": round(baseline),
        "hot_ratio": round(hot / uniform, 2),
        "vs_baseline": round(hot / baseline, 1),
        "workers": workers,
    }


def _with_database(url: str, name: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def run() -> dict[str, object]:
    url = os.environ.get("PENPAY_BENCH_DATABASE_URL")
    embedded: Any = None
    if not url:
        from penpay.storage.embedded import start_embedded_postgres

        embedded = start_embedded_postgres(
            Path(tempfile.mkdtemp(prefix="penpay-bench-")), cleanup_mode="delete"
        )
        url = embedded.url
    try:
        return trio.run(_main, url)
    finally:
        if embedded is not None:
            embedded.close()
