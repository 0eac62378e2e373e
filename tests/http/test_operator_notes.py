"""An operator's note that cannot be stored is refused before the decision is made.

The note goes to the journal and the audit log; PostgreSQL refuses NUL and
lone surrogates. Accepted, such a note made the decision (or booked the
capital) and then failed to audit it: a 500, and a money action with no
audit entry.
"""

from __future__ import annotations

import json
import random
import uuid

import pytest
import trio

from penpay.http.params import note_problem
from penpay.sim.chaos import Chaos
from penpay.sim.determinism import sim_clock
from penpay.sim.trace import Trace
from penpay.sim.workload import Client, Stats
from penpay.sim.world import OPERATOR_EMAIL, OPERATOR_PASSWORD, SimWorld

#: (note, the answer): a lone surrogate is not even valid JSON text to the decoder.
BAD_NOTES = [
    ("nul \x00 inside", 422), ("lone \ud800 surrogate", 400), ("bell \x07", 422),
    (" ", 422), ("x" * 501, 422),
]


async def _scenario(note: str, status: int) -> None:
    world = SimWorld(1, Trace(), Chaos(random.Random(0)))
    async with trio.open_nursery() as root:
        await world.start(root)
        operator = Client(world.router, "10.255.255.2", "op", world.trace, Stats())
        assert await operator.login(OPERATOR_EMAIL, OPERATOR_PASSWORD, random.Random(0))
        audit = world.services.audit
        assert audit is not None
        entries_before = len(await audit.page(after_seq=0, limit=1000))

        headers = {**operator.headers, "Content-Type": "application/json"}
        resolve = await operator.call(  # JSON escapes carry what UTF-8 cannot (a surrogate)
            "POST", f"/admin/transactions/{uuid.uuid4()}/resolve", "resolve", headers=headers,
            content=json.dumps({"action": "fail", "note": note}),
        )
        capital = await operator.call(
            "POST", "/admin/ledger/capital", "capital",
            headers={**headers, "Idempotency-Key": "capital-bad-note"},
            content=json.dumps({"account": "mpesa_float", "amount_cents": 100, "note": note}),
        )
        for answer in (resolve, capital):
            assert answer.status_code == status, answer.text
            problem = answer.json()
            if status == 422:
                assert problem["code"] == "validation_failed"
                assert [e["field"] for e in problem["errors"]] == ["note"], problem
        assert len(await audit.page(after_seq=0, limit=1000)) == entries_before
        await world.stop()
        root.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("note", "status"), BAD_NOTES, ids=["nul", "surrogate", "control", "blank", "long"]
)
def test_a_note_that_cannot_be_stored_is_refused_and_nothing_happens(
    note: str, status: int
) -> None:
    trio.run(_scenario, note, status, clock=sim_clock())


def test_a_note_with_windows_line_breaks_and_tabs_is_a_note() -> None:
    assert note_problem("line one\r\nline two\tend") is None
