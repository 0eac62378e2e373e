"""The sandbox's wire protocol, message by message (in memory, mock clock)."""

from __future__ import annotations

from decimal import Decimal

import pytest
import trio
from trio.testing import MockClock

from penpay.actors.deriv.transport import TransportClosed
from penpay.sandbox.deriv import DerivWorld, InProcessDerivSandbox

from .conftest import AGENT, AGENT_TOKEN, JANE, JANE_READ_TOKEN, JANE_TOKEN, VIRTUAL_TOKEN
from .wsclient import Raw


async def test_ping_envelope_copies_req_id_and_passthrough(
    autojump_clock: MockClock, sandbox: InProcessDerivSandbox
) -> None:
    async with sandbox.connect() as conn:
        response = await Raw(conn).ok({"ping": 1, "req_id": 7, "passthrough": {"k": [1]}})
    assert response == {
        "echo_req": {"ping": 1, "req_id": 7, "passthrough": {"k": [1]}},
        "msg_type": "ping",
        "ping": "pong",
        "req_id": 7,
        "passthrough": {"k": [1]},
    }


async def test_authorize_reports_account_and_masks_token(
    autojump_clock: MockClock, sandbox: InProcessDerivSandbox
) -> None:
    async with sandbox.connect() as conn:
        response = await Raw(conn).ok({"authorize": AGENT_TOKEN, "req_id": 1})
    assert response["msg_type"] == "authorize"
    assert response["echo_req"] == {"authorize": "<not shown>", "req_id": 1}
    auth = response["authorize"]
    assert auth["loginid"] == AGENT
    assert auth["currency"] == "USD"
    assert auth["balance"] == Decimal("10000.00")
    assert auth["email"] == "agent@penpay.test"
    assert auth["fullname"] == "PenPay Agent"
    assert auth["is_virtual"] == 0
    assert auth["scopes"] == ["admin", "payments", "read"]


async def test_authorization_errors(
    autojump_clock: MockClock, sandbox: InProcessDerivSandbox
) -> None:
    async with sandbox.connect() as conn:
        raw = Raw(conn)
        assert await raw.error({"balance": 1}) == {
            "code": "AuthorizationRequired",
            "message": "Please log in.",
        }
        error = await raw.error({"authorize": "no-such-token"})
        assert error["code"] == "InvalidToken"
        await raw.ok({"authorize": JANE_READ_TOKEN})
        error = await raw.error(
            {"paymentagent_transfer": 1, "amount": 10, "currency": "USD", "transfer_to": AGENT}
        )
        assert error == {
            "code": "PermissionDenied",
            "message": "Permission denied, requires [payments] scope(s).",
        }


async def test_unknown_call_and_bad_json(
    autojump_clock: MockClock, sandbox: InProcessDerivSandbox
) -> None:
    async with sandbox.connect() as conn:
        raw = Raw(conn)
        assert (await raw.error({"teleport": 1}))["code"] == "UnrecognisedRequest"
        await conn.send_message("[1, 2")
        assert (await raw.recv())["error"]["code"] == "BadRequest"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"amount": "10"}, "amount"),
        ({"amount": True}, "amount"),
        ({"colour": "red"}, "colour"),
        ({"description": "semi;colon"}, "description"),
        ({"description": "x" * 251}, "description"),
        ({"transfer_to": "12345"}, "transfer_to"),
        ({"dry_run": 2}, "dry_run"),
        ({"currency": "$"}, "currency"),
    ],
)
async def test_transfer_schema_violations(
    autojump_clock: MockClock, sandbox: InProcessDerivSandbox, patch: dict[str, object], field: str
) -> None:
    request = {"paymentagent_transfer": 1, "amount": 10, "currency": "USD", "transfer_to": JANE}
    request.update(patch)
    async with sandbox.connect() as conn:
        raw = Raw(conn)
        await raw.ok({"authorize": AGENT_TOKEN})
        error = await raw.error(request)
    assert error["code"] == "InputValidationFailed"
    assert error["message"] == f"Input validation failed: {field}"
    assert field in error["details"]


async def test_missing_required_field(
    autojump_clock: MockClock, sandbox: InProcessDerivSandbox
) -> None:
    async with sandbox.connect() as conn:
        raw = Raw(conn)
        await raw.ok({"authorize": AGENT_TOKEN})
        error = await raw.error({"paymentagent_transfer": 1, "amount": 10, "currency": "USD"})
    assert error["code"] == "InputValidationFailed"
    assert error["details"] == {"transfer_to": "Missing required property."}


async def test_transfer_moves_money_and_writes_statements(
    autojump_clock: MockClock, sandbox: InProcessDerivSandbox, world: DerivWorld
) -> None:
    async with sandbox.connect() as conn:
        raw = Raw(conn)
        await raw.ok({"authorize": AGENT_TOKEN})
        dry = await raw.ok(
            {
                "paymentagent_transfer": 1,
                "amount": Decimal("12.34"),
                "currency": "USD",
                "transfer_to": JANE.lower(),
                "dry_run": 1,
            }
        )
        assert dry["paymentagent_transfer"] == 2
        assert dry["client_to_full_name"] == "Jane Wanjiru"
        assert dry["client_to_loginid"] == JANE
        assert "transaction_id" not in dry
        assert world.balance_cents(AGENT) == 1_000_000
        done = await raw.ok(
            {
                "paymentagent_transfer": 1,
                "amount": Decimal("12.34"),
                "currency": "USD",
                "transfer_to": JANE,
                "description": "dep 0193abc",
            }
        )
        assert done["paymentagent_transfer"] == 1
        assert isinstance(done["transaction_id"], int)
        assert world.balance_cents(AGENT) == 1_000_000 - 1234
        assert world.balance_cents(JANE) == 50_000 + 1234
        statement = await raw.ok({"statement": 1, "description": 1, "limit": 5})
    rows = statement["statement"]["transactions"]
    assert statement["statement"]["count"] == 1
    row = rows[0]
    assert row["action_type"] == "withdrawal"
    assert row["amount"] == Decimal("-12.34")
    assert row["balance_after"] == Decimal("9987.66")
    assert row["transaction_id"] == done["transaction_id"]
    assert isinstance(row["transaction_time"], int)
    assert row["longcode"].startswith(
        f"Transfer from Payment Agent PenPay Agent ({AGENT}) to {JANE}. Transaction reference: "
    )
    assert row["longcode"].endswith(". Agent note: dep 0193abc")
    (client_row,) = world.statement_of(JANE)
    assert client_row.action_type == "deposit"
    assert client_row.amount_cents == 1234
    assert client_row.longcode == row["longcode"]


TRANSFER_ERRORS = [
    (
        {"amount": Decimal("10.001")},
        "Invalid amount. Amount provided can not have more than 2 decimal places.",
    ),
    ({"amount": Decimal("9.99")}, "Invalid amount. Minimum is 10, maximum is 2000."),
    ({"amount": Decimal("2000.01")}, "Invalid amount. Minimum is 10, maximum is 2000."),
    ({"amount": 0}, "Invalid amount."),
    ({"transfer_to": "cr424242"}, "Login ID (CR424242) does not exist."),
    ({"transfer_to": AGENT}, "Payment agent transfers are not allowed within the same account."),
    (
        {"transfer_to": "CR1000004", "currency": "USD"},
        "You cannot perform this action, as USD is not the default account currency "
        "for client CR1000004.",
    ),
    (
        {"currency": "EUR"},
        "You cannot perform this action, as EUR is not the default account currency "
        f"for payment agent {AGENT}.",
    ),
]


@pytest.mark.parametrize(("patch", "message"), TRANSFER_ERRORS)
async def test_transfer_business_errors(
    autojump_clock: MockClock,
    sandbox: InProcessDerivSandbox,
    world: DerivWorld,
    patch: dict[str, object],
    message: str,
) -> None:
    request = {"paymentagent_transfer": 1, "amount": 100, "currency": "USD", "transfer_to": JANE}
    request.update(patch)
    async with sandbox.connect() as conn:
        raw = Raw(conn)
        await raw.ok({"authorize": AGENT_TOKEN})
        error = await raw.error(request)
    assert error == {"code": "PaymentAgentTransferError", "message": message}
    assert world.moves == []


async def test_transfer_refusals_by_account_state(
    autojump_clock: MockClock, sandbox: InProcessDerivSandbox, world: DerivWorld
) -> None:
    transfer = {"paymentagent_transfer": 1, "amount": 100, "currency": "USD", "transfer_to": JANE}
    async with sandbox.connect() as conn:
        raw = Raw(conn)
        await raw.ok({"authorize": JANE_TOKEN})
        error = await raw.error({**transfer, "transfer_to": AGENT})
        assert error["message"] == "You are not authorized for transfers via payment agents."
        await raw.ok({"authorize": VIRTUAL_TOKEN})
        assert (await raw.error(transfer))["code"] == "PermissionDenied"
        await raw.ok({"authorize": AGENT_TOKEN})
        world.set_balance(AGENT, 5_000)
        error = await raw.error(transfer)
        assert error["message"] == "Your account balance is insufficient for this transaction."
        world.payments_suspended = True
        error = await raw.error(transfer)
        assert error["message"] == (
            "Sorry, this facility is temporarily disabled due to system maintenance."
        )


async def test_daily_caps(
    autojump_clock: MockClock, sandbox: InProcessDerivSandbox, world: DerivWorld
) -> None:
    terms = world.account(AGENT).payment_agent
    assert terms is not None
    terms.daily_count_max = 2
    terms.daily_amount_cents_max = 5_000
    transfer = {"paymentagent_transfer": 1, "amount": 20, "currency": "USD", "transfer_to": JANE}
    async with sandbox.connect() as conn:
        raw = Raw(conn)
        await raw.ok({"authorize": AGENT_TOKEN})
        await raw.ok(transfer)
        error = await raw.error({**transfer, "amount": 31})
        assert error["message"] == (
            "Payment agent transfers are not allowed, as you have exceeded the maximum "
            "allowable transfer amount for today."
        )
        await raw.ok(transfer)
        error = await raw.error(transfer)
        assert error["message"] == (
            "Payment agent transfers are not allowed, as you have exceeded the maximum "
            "allowable transactions for today."
        )
    await trio.sleep(24 * 3600)  # the next day resets both caps
    async with sandbox.connect() as conn:
        raw = Raw(conn)
        await raw.ok({"authorize": AGENT_TOKEN})
        await raw.ok(transfer)


async def test_balance_subscription_pushes_and_forget(
    autojump_clock: MockClock, sandbox: InProcessDerivSandbox, world: DerivWorld
) -> None:
    async with sandbox.connect() as conn:
        raw = Raw(conn)
        await raw.ok({"authorize": AGENT_TOKEN})
        first = await raw.ok({"balance": 1, "subscribe": 1, "req_id": 3})
        sub_id = first["subscription"]["id"]
        assert first["balance"] == {
            "balance": Decimal("10000.00"),
            "currency": "USD",
            "loginid": AGENT,
            "id": sub_id,
        }
        again = await raw.error({"balance": 1, "subscribe": 1})
        assert again == {
            "code": "AlreadySubscribed",
            "message": f"You are already subscribed to balance for account {AGENT}.",
        }
        world.set_balance(AGENT, 123_456)
        push = await raw.recv()
        assert push["msg_type"] == "balance"
        assert push["req_id"] == 3
        assert push["echo_req"] == {"balance": 1, "subscribe": 1, "req_id": 3}
        assert push["subscription"] == {"id": sub_id}
        assert push["balance"]["balance"] == Decimal("1234.56")
        assert await raw.ok({"forget": sub_id}) == {
            "echo_req": {"forget": sub_id},
            "msg_type": "forget",
            "forget": 1,
        }
        assert (await raw.ok({"forget": sub_id}))["forget"] == 0
        world.set_balance(AGENT, 1)
        assert (await raw.ok({"ping": 1}))["msg_type"] == "ping"  # no push in between
        second = await raw.ok({"balance": 1, "subscribe": 1})
        stopped = await raw.ok({"forget_all": ["balance"]})
        assert stopped["forget_all"] == [second["subscription"]["id"]]


async def test_statement_filters_and_paging(
    autojump_clock: MockClock, sandbox: InProcessDerivSandbox, world: DerivWorld
) -> None:
    async with sandbox.connect() as conn:
        raw = Raw(conn)
        await raw.ok({"authorize": AGENT_TOKEN})
        ids = []
        for n in range(5):
            done = await raw.ok(
                {
                    "paymentagent_transfer": 1,
                    "amount": 10 + n,
                    "currency": "USD",
                    "transfer_to": JANE,
                }
            )
            ids.append(done["transaction_id"])
            await trio.sleep(10)
        world.set_balance(AGENT, world.balance_cents(AGENT))
        page = await raw.ok({"statement": 1, "limit": 2, "offset": 1})
        rows = page["statement"]["transactions"]
        assert [r["transaction_id"] for r in rows] == [ids[3], ids[2]]
        assert "longcode" not in rows[0]
        deposits = await raw.ok({"statement": 1, "action_type": "deposit"})
        assert deposits["statement"]["count"] == 0
        t2 = world.statement_of(AGENT)[2].transaction_time
        window = await raw.ok({"statement": 1, "date_from": t2, "date_to": t2})
        assert [r["transaction_id"] for r in window["statement"]["transactions"]] == [ids[2]]


async def test_rate_limit_per_minute(
    autojump_clock: MockClock, sandbox: InProcessDerivSandbox, world: DerivWorld
) -> None:
    async with sandbox.connect() as conn:
        raw = Raw(conn)
        for _ in range(220):
            await raw.ok({"authorize": AGENT_TOKEN})
        error = await raw.error({"authorize": AGENT_TOKEN})
        assert error == {
            "code": "RateLimit",
            "message": "You have reached the rate limit for authorize.",
        }
        for _ in range(100):  # statement and balance have a budget of their own
            await raw.ok({"balance": 1})
        error = await raw.error({"statement": 1})
        assert error == {
            "code": "RateLimit",
            "message": "You have reached the rate limit for statement.",
        }
        await raw.ok({"ping": 1})  # pings sit outside the budget
        await trio.sleep(60)
        await raw.ok({"balance": 1})
        await raw.ok({"authorize": AGENT_TOKEN})
        world.lift_rate_limit()
        for _ in range(500):
            await raw.ok({"balance": 1})


async def test_idle_connection_closes_after_120_s(
    autojump_clock: MockClock, sandbox: InProcessDerivSandbox
) -> None:
    async with sandbox.connect() as conn:
        raw = Raw(conn)
        for _ in range(5):  # traffic every 100 s keeps it open
            await trio.sleep(100)
            await raw.ok({"ping": 1})
        start = trio.current_time()
        with pytest.raises(TransportClosed):
            await raw.recv()
        assert trio.current_time() - start == pytest.approx(120)
