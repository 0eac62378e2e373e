"""One contract, two transfer stores: PostgreSQL and its in-memory twin."""

from __future__ import annotations

import msgspec
import pytest
import trio

from penpay.actors.ledger import DEFAULT_CHART, CommitOutcome, TransferKind, TransferRowRefused
from penpay.actors.ledger.store import TransferStore
from penpay.money import Currency
from penpay.storage.pg import Database, QueryFailed
from penpay.storage.transfers import open_pg_transfer_store
from penpay.storage.transfers_memory import InMemoryTransferStore
from tests.ledger.helpers import tid, transfer


def t_(name: str, group: str, debit: str, credit: str, amount: int, **kw: object):  # type: ignore[no-untyped-def]
    return msgspec.structs.replace(
        transfer(name, debit, credit, amount, **kw),  # type: ignore[arg-type]
        linked_group=tid(group),
        timestamp_ms=1_767_225_600_000,
    )


async def test_commit_then_read_back(any_store: TransferStore) -> None:
    a = t_("a", "g1", "mpesa_float", "owner_equity_kes", 100_00)
    b = t_("b", "g1", "deriv_float", "owner_equity_usd", 7_50)
    assert await any_store.commit(tid("g1"), [a, b]) is CommitOutcome.COMMITTED
    got = await any_store.get_transfers([a.id, b.id, tid("nope")])
    assert got == {a.id: a, b.id: b}
    page = await any_store.scan(after_cursor=0, limit=10)
    assert page.transfers == [a, b] and page.next_cursor is None


async def test_a_committed_group_sent_again_is_committed_not_duplicate(
    any_store: TransferStore,
) -> None:
    """A writer whose COMMIT acknowledgement was lost sends the batch again: its own
    rows are no one else's, and a 'duplicate' answer made the ledger release the
    holds of a group the ledger of record had committed."""
    a = t_("a", "g1", "mpesa_float", "owner_equity_kes", 100_00)
    assert await any_store.commit(tid("g1"), [a]) is CommitOutcome.COMMITTED
    assert await any_store.commit(tid("g1"), [a]) is CommitOutcome.COMMITTED
    assert (await any_store.scan(after_cursor=0, limit=10)).transfers == [a]
    other = msgspec.structs.replace(a, linked_group=tid("g2"))
    assert await any_store.commit(tid("g2"), [other]) is CommitOutcome.DUPLICATE


async def test_duplicate_id_or_resolution_writes_nothing(any_store: TransferStore) -> None:
    p = t_("p", "g1", "mpesa_float", "owner_equity_kes", 100, kind=TransferKind.PENDING)
    assert await any_store.commit(tid("g1"), [p]) is CommitOutcome.COMMITTED
    again = msgspec.structs.replace(p, linked_group=tid("g2"))
    fresh = t_("f", "g2", "mpesa_float", "owner_equity_kes", 5)
    assert await any_store.commit(tid("g2"), [fresh, again]) is CommitOutcome.DUPLICATE
    assert await any_store.get_transfers([fresh.id]) == {}
    post = t_(
        "post",
        "g3",
        "mpesa_float",
        "owner_equity_kes",
        60,
        kind=TransferKind.POST_PENDING,
        pending="p",
    )
    assert await any_store.commit(tid("g3"), [post]) is CommitOutcome.COMMITTED
    void = t_(
        "void",
        "g4",
        "mpesa_float",
        "owner_equity_kes",
        100,
        kind=TransferKind.VOID_PENDING,
        pending="p",
    )
    assert await any_store.commit(tid("g4"), [void]) is CommitOutcome.DUPLICATE
    assert await any_store.get_resolutions([p.id]) == {p.id: post}


async def test_resolving_fences_a_group_and_a_later_commit_is_aborted(
    any_store: TransferStore,
) -> None:
    assert await any_store.resolve_groups([tid("late")]) == {tid("late"): False}
    a = t_("a", "late", "mpesa_float", "owner_equity_kes", 1)
    assert await any_store.commit(tid("late"), [a]) is CommitOutcome.ABORTED
    assert await any_store.get_transfers([a.id]) == {}
    b = t_("b", "won", "mpesa_float", "owner_equity_kes", 1)
    assert await any_store.commit(tid("won"), [b]) is CommitOutcome.COMMITTED
    assert await any_store.resolve_groups([tid("won"), tid("late")]) == {
        tid("won"): True,
        tid("late"): False,
    }


@pytest.mark.parametrize(
    ("debit", "credit", "amount", "currency"),
    [
        ("mpesa_float", "owner_equity_kes", 0, Currency.KES),
        ("mpesa_float", "mpesa_float", 10, Currency.KES),
        ("mpesa_float", "owner_equity_usd", 10, Currency.KES),
        ("mpesa_float", "no_such_account", 10, Currency.KES),
    ],
)
async def test_constraints_refuse_bad_rows(
    any_store: TransferStore, debit: str, credit: str, amount: int, currency: Currency
) -> None:
    good = t_("good", "g", "deriv_float", "owner_equity_usd", 1)
    bad = msgspec.structs.replace(
        good,
        id=tid("bad"),
        debit_account=debit,
        credit_account=credit,
        amount_cents=amount,
        currency=currency,
    )
    with pytest.raises(TransferRowRefused):
        await any_store.commit(tid("g"), [good, bad])
    assert await any_store.get_transfers([good.id]) == {}


async def test_account_pages_follow_the_cursor(any_store: TransferStore) -> None:
    for i in range(5):
        t = t_(f"t{i}", f"g{i}", "mpesa_float", "owner_equity_kes", 10 + i)
        assert await any_store.commit(tid(f"g{i}"), [t]) is CommitOutcome.COMMITTED
    other = t_("x", "gx", "deriv_float", "owner_equity_usd", 1)
    await any_store.commit(tid("gx"), [other])
    seen: list[int] = []
    cursor: int | None = 0
    while cursor is not None:
        page = await any_store.account_transfers("owner_equity_kes", after_cursor=cursor, limit=2)
        seen.extend(t.amount_cents for t in page.transfers)
        cursor = page.next_cursor
    assert seen == [10, 11, 12, 13, 14]


async def test_concurrent_groups_share_batches_and_each_decides_alone(
    any_store: TransferStore,
) -> None:
    outcomes: dict[int, CommitOutcome] = {}

    async def one(i: int) -> None:
        # Every third group reuses the id of group 0: exactly one of them may win.
        name = "shared" if i % 3 == 0 else f"t{i}"
        t = t_(name, f"g{i}", "mpesa_float", "owner_equity_kes", 1 + i)
        outcomes[i] = await any_store.commit(tid(f"g{i}"), [t])

    async with trio.open_nursery() as nursery:
        for i in range(30):
            nursery.start_soon(one, i)
    shared = [i for i in outcomes if i % 3 == 0]
    assert [outcomes[i] for i in shared].count(CommitOutcome.COMMITTED) == 1
    assert all(outcomes[i] is CommitOutcome.COMMITTED for i in outcomes if i % 3)


@pytest.mark.storage
async def test_postgres_rows_are_append_only(pg_db: Database) -> None:
    async with open_pg_transfer_store(pg_db) as store:
        await store.register_accounts(DEFAULT_CHART)
        a = t_("a", "g", "mpesa_float", "owner_equity_kes", 1)
        assert await store.commit(tid("g"), [a]) is CommitOutcome.COMMITTED
    for sql in (
        "UPDATE ledger_transfers SET amount_cents = 2",
        "DELETE FROM ledger_transfers",
        "TRUNCATE ledger_transfers CASCADE",
        "UPDATE ledger_groups SET committed = false",
    ):
        with pytest.raises(QueryFailed, match="append-only"):
            await pg_db.execute(sql)
    with pytest.raises(QueryFailed, match="check"):
        await pg_db.execute(
            "INSERT INTO ledger_transfers (id, debit_account, credit_account, amount_cents,"
            " currency, kind, code, timestamp_ms, linked_group)"
            " VALUES (gen_random_uuid(), 'mpesa_float', 'owner_equity_kes', -1, 'KES',"
            f" 'posted', '', 0, '{tid('g')}')"
        )


@pytest.mark.parametrize(
    "changes",
    [{"amount_cents": 2**63}, {"code": "a\x00b"}, {"transaction_id": "lone \ud800"}],
    ids=["bigint", "nul", "surrogate"],
)
async def test_both_stores_refuse_a_row_postgresql_cannot_hold(
    any_store: TransferStore, changes: dict[str, object]
) -> None:
    """The twin committed what PostgreSQL refuses, so the simulation never saw it."""
    row = msgspec.structs.replace(
        t_("a", "g1", "mpesa_float", "owner_equity_kes", 100), **changes  # type: ignore[arg-type]
    )
    with pytest.raises(TransferRowRefused):
        await any_store.commit(tid("g1"), [row])
    assert await any_store.get_transfers([row.id]) == {}


async def _batch_mates(store: TransferStore) -> dict[str, CommitOutcome]:
    """g1 resubmits the stored "a" with a new "b"; g2 is "b" alone, in g1's batch."""
    assert await store.commit(tid("g0"), [t_("a", "g0", "mpesa_float",
                                             "owner_equity_kes", 1)]) is CommitOutcome.COMMITTED
    outcomes: dict[str, CommitOutcome] = {}

    async def commit(group: str, *names: str) -> None:
        rows = [t_(n, group, "mpesa_float", "owner_equity_kes", 1) for n in names]
        outcomes[group] = await store.commit(tid(group), rows)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(commit, "g1", "a", "b")
        await trio.sleep(0.01)  # inside the writer's batch window below
        nursery.start_soon(commit, "g2", "b")
    return outcomes


@pytest.mark.storage
async def test_a_group_sharing_an_id_with_a_refused_batch_mate_is_decided_alone(
    pg_db: Database,
) -> None:
    """PostgreSQL read a group as a duplicate when an earlier group of its batch held
    one of its ids, even one refused itself, where the twin (one group at a time)
    committed it: the caller was told id_in_flight for a transfer nobody stored."""
    twin = InMemoryTransferStore()
    await twin.register_accounts(DEFAULT_CHART)
    expected = {"g1": CommitOutcome.DUPLICATE, "g2": CommitOutcome.COMMITTED}
    assert await _batch_mates(twin) == expected
    async with open_pg_transfer_store(pg_db, batch_window_ms=200) as pg:
        await pg.register_accounts(DEFAULT_CHART)
        assert await _batch_mates(pg) == expected
