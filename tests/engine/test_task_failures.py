"""A task an actor started crashes its actor when it fails, however busy the actor is."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import trio
import trio.testing

from penpay.engine import Actor
from penpay.engine.testing import open_test_system, settle


class StartFailing(msgspec.Struct, frozen=True):
    after_s: float


class Busy(msgspec.Struct, frozen=True):
    seconds: float


class Ping(msgspec.Struct, frozen=True):
    pass


class Worker(Actor):
    kind = "worker"
    seen: ClassVar[list[Any]] = []

    async def _fail(self, after_s: float) -> None:
        await trio.sleep(after_s)
        raise RuntimeError("the task failed")

    async def receive(self, message: Any) -> Any:
        Worker.seen.append(message)
        match message:
            case StartFailing(after_s):
                self.start_task(self._fail, after_s)
            case Busy(seconds):
                await trio.sleep(seconds)
        return None


class BatchWorker(Worker):
    kind = "batch-worker"
    batch_messages_max: ClassVar[int] = 16


async def _task_fails_while_busy(kind: type[Worker], **props: Any) -> int:
    Worker.seen.clear()
    async with open_test_system() as system:
        system.register(kind, **props)
        ref = system.ref(kind, "w")
        await ref.ask(StartFailing(after_s=1))  # its task raises at t=1 ...
        await ref.tell(Busy(5))  # ... while the actor is busy until t=5
        await trio.testing.wait_all_tasks_blocked()
        await ref.tell(Ping())  # queued behind: with capacity 1, the mailbox is full
        await trio.sleep(10)
        await settle(system)
        info = system.info(kind, "w")
        assert info is not None
        return info.restarts


async def test_a_task_failing_while_the_mailbox_is_full_still_crashes_its_actor(
    autojump_clock: trio.abc.Clock,
) -> None:
    assert await _task_fails_while_busy(Worker, mailbox_capacity=1) == 1


async def test_a_task_failing_while_messages_queue_crashes_a_batching_actor(
    autojump_clock: trio.abc.Clock,
) -> None:
    assert await _task_fails_while_busy(BatchWorker) == 1
    assert all(isinstance(m, StartFailing | Busy | Ping) for m in Worker.seen)  # no sentinel
