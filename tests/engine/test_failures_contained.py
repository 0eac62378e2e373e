"""Failures stay where they happen: one actor's, one instance's, one command's."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import pytest
import trio

from penpay.engine import (
    Actor,
    ActorCrashed,
    ActorParked,
    EngineConfig,
    InMemoryJournal,
    JournalUnavailable,
    Snapshot,
    SupervisionPolicy,
)
from penpay.engine.testing import open_test_system, settle
from tests.engine.sample_actors import Add, Counter, GetTotal

FAST = SupervisionPolicy(backoff_min_s=0.1, backoff_max_s=1.0, max_restarts=5, window_s=60)


class SnapshotStoreDown(InMemoryJournal):
    async def save_snapshot(self, snapshot: Snapshot) -> None:
        raise JournalUnavailable("snapshot store down")


async def test_a_failed_snapshot_does_not_fail_a_committed_command(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The events are durable, so the command succeeded: a caller told otherwise retries it."""
    config = EngineConfig(snapshot_every_events=1, supervision=FAST)
    async with open_test_system(config=config, journal=SnapshotStoreDown()) as system:
        ref = system.ref(Counter, "c")
        await ref.ask(Add(5))
        await ref.ask(Add(2))
        assert await ref.ask(GetTotal()) == 7


class Both(msgspec.Struct, frozen=True):
    pass


class Fragile(Actor):
    """Its handler and a task it started fail in the same episode."""

    kind = "fragile"
    starts: ClassVar[int] = 0

    async def on_start(self) -> None:
        type(self).starts += 1

    async def _fail(self) -> None:
        raise RuntimeError("task failed")

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Both):
            self.start_task(self._fail)
            await trio.sleep(1)  # the task fails meanwhile
            raise RuntimeError("handler failed too")
        return "ok"


async def test_a_task_error_does_not_crash_the_instance_started_after_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    Fragile.starts = 0
    async with open_test_system(config=EngineConfig(supervision=FAST)) as system:
        system.register(Fragile)
        ref = system.ref(Fragile, "f")
        with pytest.raises(ActorCrashed):
            await ref.ask(Both())
        await trio.sleep(10)
        await settle(system)
        assert await ref.ask("hello") == "ok"
        info = system.info(Fragile, "f")
        assert info is not None and info.restarts == 1 and Fragile.starts == 2


class NeedsDeps(Actor):
    kind = "needs-deps"

    def __init__(self, deps: object) -> None:
        self.deps = deps

    async def receive(self, message: Any) -> Any:
        return None


async def test_a_factory_that_raises_parks_its_actor_and_nothing_else(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_test_system() as system:
        bystander = system.ref(Counter, "bystander")
        await bystander.ask(Add(1))
        # Registered on first use with ``NeedsDeps()`` as its factory: a TypeError.
        with pytest.raises(ActorParked):
            await system.ref(NeedsDeps, "x").ask("hi", timeout=1)
        await trio.sleep(1)
        await bystander.ask(Add(1))
        assert await bystander.ask(GetTotal()) == 2
        info = system.info(NeedsDeps, "x")
        assert info is not None and info.status == "failed"


class Tick(msgspec.Struct, frozen=True):
    pass


class Arm(msgspec.Struct, frozen=True):
    pass


class Ticker(Actor):
    """Arms one timer per instance; counts the ticks every instance handles."""

    kind = "ticker"
    ticks: ClassVar[int] = 0

    async def on_start(self) -> None:
        self.schedule(10, Tick())

    async def receive(self, message: Any) -> Any:
        match message:
            case Tick():
                type(self).ticks += 1
            case Arm():
                await trio.sleep(5)  # the timer fires while this message is handled
                raise RuntimeError("crash after the timer's message was queued")
        return None


async def test_a_timer_message_queued_for_a_crashed_instance_is_not_handled(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The new instance re-arms its deadline; the old one's tick must not count too."""
    Ticker.ticks = 0
    async with open_test_system(config=EngineConfig(supervision=FAST)) as system:
        system.register(Ticker, passivate_after_s=None)
        ref = system.ref(Ticker, "t")
        await ref.ask("activate")  # t=0: the first instance arms its tick for t=10
        await trio.sleep(6)
        with pytest.raises(ActorCrashed):
            await ref.ask(Arm())  # handled from t=6 to t=11; the tick fires at t=10
        await trio.sleep(30)
        await settle(system)
        assert Ticker.ticks == 1  # the new instance's own tick, at restart + 10 s
