"""The actor runtime's guarantees, each driven deterministically under a mock clock."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest
import trio
import trio.testing

from penpay.engine import (
    ActorCrashed,
    ActorParked,
    ActorStatus,
    AskTimeout,
    EngineConfig,
    InMemoryJournal,
    MailboxFull,
    SupervisionPolicy,
    SystemClosed,
)
from penpay.engine.testing import TEST_EPOCH, open_test_system, settle
from tests.engine.sample_actors import (
    Add,
    Alarm,
    Append,
    Arm,
    Block,
    Counter,
    Crash,
    GetItems,
    GetTotal,
    Overdraw,
    Recorder,
)

FAST_RESTARTS = SupervisionPolicy(backoff_min_s=0.1, backoff_max_s=1.0, max_restarts=3, window_s=60)


async def test_messages_from_one_sender_arrive_in_order(autojump_clock: trio.abc.Clock) -> None:
    async with open_test_system(config=EngineConfig(mailbox_capacity=4)) as system:
        ref = system.ref(Recorder, "r")

        async def sender(name: str) -> None:
            for i in range(50):
                await ref.tell(Append(f"{name}-{i}"))

        async with trio.open_nursery() as nursery:
            for name in ("a", "b", "c"):
                nursery.start_soon(sender, name)
        items = await ref.ask(GetItems())
        assert len(items) == 150
        for name in ("a", "b", "c"):
            mine = [int(item.split("-")[1]) for item in items if item.startswith(name)]
            assert mine == list(range(50))


async def test_ask_timeout_raises_a_precise_exception(autojump_clock: trio.abc.Clock) -> None:
    async with open_test_system() as system:
        ref = system.ref(Recorder, "slow")
        release = trio.Event()
        started = trio.current_time()
        with pytest.raises(AskTimeout, match=r"recorder/slow did not answer Block within 2 s"):
            await ref.ask(Block(release), timeout=2)
        assert trio.current_time() - started == pytest.approx(2)
        release.set()
        assert await ref.ask(Append("after")) == 1  # the actor is still healthy


async def test_a_crash_replies_to_the_asker_and_spares_siblings(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_test_system(config=EngineConfig(supervision=FAST_RESTARTS)) as system:
        victim, sibling = system.ref(Recorder, "victim"), system.ref(Recorder, "sibling")
        await sibling.tell(Append("kept"))
        with pytest.raises(ActorCrashed, match="crashed handling Crash") as info:
            await victim.ask(Crash("kaput"))
        assert isinstance(info.value.__cause__, RuntimeError)
        assert await sibling.ask(GetItems()) == ["kept"]
        await settle(system)
        victim_info = system.info(Recorder, "victim")
        assert victim_info is not None
        assert victim_info.restarts == 1
        assert victim_info.status is ActorStatus.RUNNING
        assert system.restarts_by_kind == {"recorder": 1}


async def test_restarts_are_counted_for_good_though_the_actor_passivates(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A counter that fell when an actor passivated would read as a reset to Prometheus."""
    config = EngineConfig(supervision=FAST_RESTARTS, passivate_after_s=10)
    async with open_test_system(config=config) as system:
        with pytest.raises(ActorCrashed):
            await system.ref(Recorder, "victim").ask(Crash("kaput"))
        await trio.sleep(60)  # idle: passivated
        assert system.info(Recorder, "victim") is None
        assert system.restarts_by_kind == {"recorder": 1}


async def test_restart_restores_persisted_state(autojump_clock: trio.abc.Clock) -> None:
    async with open_test_system(config=EngineConfig(supervision=FAST_RESTARTS)) as system:
        counter = system.ref(Counter, "c")
        assert await counter.ask(Add(5)) == 5
        assert await counter.ask(Add(7)) == 12
        with pytest.raises(ActorCrashed):
            await counter.ask(Crash())
        # Messages sent during the back-off wait in the mailbox for the new instance.
        assert await counter.ask(GetTotal()) == 12
        assert await counter.ask(Add(1)) == 13


async def test_in_memory_only_state_is_lost_on_restart(autojump_clock: trio.abc.Clock) -> None:
    """The contrast that makes the previous test meaningful."""
    async with open_test_system(config=EngineConfig(supervision=FAST_RESTARTS)) as system:
        recorder = system.ref(Recorder, "r")
        await recorder.ask(Append("x"))
        with pytest.raises(ActorCrashed):
            await recorder.ask(Crash())
        assert await recorder.ask(GetItems()) == []


async def test_a_rejection_is_answered_without_a_restart(autojump_clock: trio.abc.Clock) -> None:
    async with open_test_system() as system:
        counter = system.ref(Counter, "c")
        await counter.ask(Add(3))
        with pytest.raises(Overdraw, match="cannot take -4"):
            await counter.ask(Add(-4))
        assert await counter.ask(GetTotal()) == 3
        info = system.info(Counter, "c")
        assert info is not None and info.restarts == 0


async def test_restart_backoff_grows_exponentially(autojump_clock: trio.abc.Clock) -> None:
    policy = SupervisionPolicy(backoff_min_s=1, backoff_max_s=3, max_restarts=10, window_s=600)
    assert [policy.backoff_s(n) for n in range(1, 5)] == [1, 2, 3, 3]
    async with open_test_system(config=EngineConfig(supervision=policy)) as system:
        ref = system.ref(Recorder, "r")
        for expected_delay in (1, 2, 3):
            with pytest.raises(ActorCrashed):
                await ref.ask(Crash())
            crashed_at = trio.current_time()
            await ref.ask(GetItems())  # answered by the restarted instance
            assert trio.current_time() - crashed_at == pytest.approx(expected_delay)


async def test_restart_intensity_limit_parks_the_actor(autojump_clock: trio.abc.Clock) -> None:
    async with open_test_system(config=EngineConfig(supervision=FAST_RESTARTS)) as system:
        ref = system.ref(Recorder, "flaky")
        for _ in range(FAST_RESTARTS.max_restarts + 1):
            with pytest.raises(ActorCrashed):
                await ref.ask(Crash())
        await settle(system)
        info = system.info(Recorder, "flaky")
        assert info is not None
        assert info.status is ActorStatus.FAILED
        assert info.failure == "RuntimeError: boom"
        assert [a.key for a in system.actors(status="failed")] == ["flaky"]


async def test_ask_to_a_parked_actor_fails_fast(autojump_clock: trio.abc.Clock) -> None:
    async with open_test_system(config=EngineConfig(supervision=FAST_RESTARTS)) as system:
        ref = system.ref(Recorder, "flaky")
        for _ in range(FAST_RESTARTS.max_restarts + 1):
            with pytest.raises(ActorCrashed):
                await ref.ask(Crash())
        await settle(system)
        before = trio.current_time()
        with pytest.raises(ActorParked, match="recorder/flaky is parked"):
            await ref.ask(GetItems(), timeout=30)
        with pytest.raises(ActorParked):
            await ref.tell(Append("x"))
        assert trio.current_time() == before  # no waiting at all
        assert system.unpark(Recorder, "flaky")
        assert await ref.ask(GetItems()) == []


async def test_passivation_then_reactivation_restores_state(
    autojump_clock: trio.abc.Clock,
) -> None:
    journal = InMemoryJournal()
    config = EngineConfig(passivate_after_s=60, passivation_sweep_s=10)
    async with open_test_system(config=config, journal=journal) as system:
        counter = system.ref(Counter, "c")
        await counter.ask(Add(4))
        await counter.ask(Add(6))
        assert system.live_count == 1
        await trio.sleep(59)
        await settle(system)
        assert system.live_count == 1  # not idle long enough yet
        await trio.sleep(30)
        await settle(system)
        assert system.live_count == 0
        snapshot = await journal.load_snapshot("counter/c")
        assert snapshot is not None and snapshot.sequence == 2  # snapshotted on the way out
        assert await counter.ask(GetTotal()) == 10
        assert system.live_count == 1


async def test_recovery_uses_snapshot_plus_later_events(autojump_clock: trio.abc.Clock) -> None:
    journal = InMemoryJournal()
    config = EngineConfig(snapshot_every_events=3)
    async with open_test_system(config=config, journal=journal) as system:
        counter = system.ref(Counter, "c")
        for amount in (1, 2, 3, 4):
            await counter.ask(Add(amount))
    snapshot = await journal.load_snapshot("counter/c")
    assert snapshot is not None and snapshot.sequence == 4  # every 3, then on shutdown
    # Replace the snapshot with one at 3 to prove later events are replayed on top.
    from penpay.engine import Snapshot
    from tests.engine.sample_actors import CounterState

    journal._snapshots["counter/c"] = Snapshot(
        persistence_id="counter/c",
        sequence=3,
        version=1,
        payload=msgspec.msgpack.encode(CounterState(total=6, history=(1, 2, 3))),
    )
    async with open_test_system(journal=journal) as system:
        state = await system.inspect(Counter, "c")
        assert state == {"sequence": 4, "state": {"total": 10, "history": (1, 2, 3, 4)}}


async def test_full_mailbox_applies_back_pressure(autojump_clock: trio.abc.Clock) -> None:
    async with open_test_system(config=EngineConfig(mailbox_capacity=3)) as system:
        ref = system.ref(Recorder, "busy")
        release = trio.Event()
        await ref.tell(Block(release))
        await trio.testing.wait_all_tasks_blocked()  # the actor is now inside Block
        for i in range(3):
            ref.tell_nowait(Append(str(i)))
        with pytest.raises(MailboxFull, match="3 messages waiting"):
            ref.tell_nowait(Append("overflow"))
        sent_late = False

        async def late_sender() -> None:
            nonlocal sent_late
            await ref.tell(Append("late"))
            sent_late = True

        async with trio.open_nursery() as nursery:
            nursery.start_soon(late_sender)
            await trio.sleep(3600)
            assert not sent_late  # still waiting: the mailbox did not grow
            info = system.info(Recorder, "busy")
            assert info is not None and info.mailbox_depth == 3
            release.set()
        assert sent_late
        assert await ref.ask(GetItems()) == ["0", "1", "2", "late"]


async def test_timers_fire_at_the_right_mock_time(autojump_clock: trio.abc.Clock) -> None:
    async with open_test_system() as system:
        alarm = system.ref(Alarm, "a")
        deadline_ms = await alarm.ask(Arm(after_s=90))
        assert deadline_ms == int(TEST_EPOCH.timestamp() * 1000) + 90_000
        await trio.sleep(89)
        await settle(system)
        assert (await system.inspect(Alarm, "a"))["state"]["rang_at_ms"] is None
        await trio.sleep(2)
        await settle(system)
        assert (await system.inspect(Alarm, "a"))["state"]["rang_at_ms"] == deadline_ms


async def test_timers_derived_from_state_survive_a_restart(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_test_system(config=EngineConfig(supervision=FAST_RESTARTS)) as system:
        alarm = system.ref(Alarm, "a")
        deadline_ms = await alarm.ask(Arm(after_s=90))
        await trio.sleep(30)
        with pytest.raises(ActorCrashed):
            await alarm.ask(Crash())  # cancels the in-memory timer
        await trio.sleep(61)
        await settle(system)
        state = (await system.inspect(Alarm, "a"))["state"]
        assert state["rang_at_ms"] == deadline_ms  # re-armed from the persisted deadline


async def test_timers_survive_a_whole_system_restart(autojump_clock: trio.abc.Clock) -> None:
    journal = InMemoryJournal()
    started = trio.current_time()
    async with open_test_system(journal=journal) as system:
        deadline_ms = await system.ref(Alarm, "a").ask(Arm(after_s=120))
    await trio.sleep(20)  # the process is down for a while; wall time moves on
    resumed_wall = TEST_EPOCH + timedelta(seconds=trio.current_time() - started)
    async with open_test_system(journal=journal, wall_anchor=resumed_wall) as system:
        system.spawn(Alarm, "a")  # a restarted process re-activates what it owns
        await trio.sleep(99)
        await settle(system)
        assert (await system.inspect(Alarm, "a"))["state"]["rang_at_ms"] is None
        await trio.sleep(2)
        await settle(system)
        state = (await system.inspect(Alarm, "a"))["state"]
    assert state["rang_at_ms"] == deadline_ms


async def test_an_actor_with_a_pending_timer_is_not_passivated(
    autojump_clock: trio.abc.Clock,
) -> None:
    config = EngineConfig(passivate_after_s=10, passivation_sweep_s=1)
    async with open_test_system(config=config) as system:
        await system.ref(Alarm, "a").ask(Arm(after_s=100))
        await trio.sleep(50)
        await settle(system)
        assert system.live_count == 1
        await trio.sleep(70)  # rings at 100, idle by 110, swept soon after
        await settle(system)
        assert system.live_count == 0


async def test_shutdown_stops_every_actor_and_leaks_no_task(
    autojump_clock: trio.abc.Clock,
) -> None:
    stopped: list[str] = []

    class Tracked(Recorder):
        kind = "tracked"

        async def on_stop(self) -> None:
            stopped.append(self.key)

    async def count_tasks() -> int:
        root = trio.lowlevel.current_root_task()
        assert root is not None

        def walk(task: trio.lowlevel.Task) -> int:
            return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

        return walk(root)

    before = await count_tasks()
    async with open_test_system() as system:
        for key in ("a", "b", "c"):
            await system.ref(Tracked, key).tell(Append(key))
        await system.ref(Alarm, "t").ask(Arm(after_s=1000))  # a pending timer task
        ref = system.ref(Tracked, "a")
    assert sorted(stopped) == ["a", "b", "c"]
    assert await count_tasks() == before
    with pytest.raises(SystemClosed):
        await ref.tell(Append("too late"))


async def test_at_most_one_activation_per_identity(autojump_clock: trio.abc.Clock) -> None:
    async with open_test_system() as system:
        refs = [system.ref(Recorder, "same") for _ in range(20)]
        async with trio.open_nursery() as nursery:
            for i, ref in enumerate(refs):
                nursery.start_soon(ref.tell, Append(str(i)))
        items = await refs[0].ask(GetItems())
        assert sorted(items, key=int) == [str(i) for i in range(20)]
        assert system.live_count == 1


async def test_introspection_lists_actors_and_reads_state(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_test_system() as system:
        await system.ref(Counter, "x").ask(Add(2))
        await system.ref(Recorder, "y").ask(Append("hello"))
        await trio.sleep(5)
        listing = {(a.kind, a.key): a for a in system.actors()}
        assert set(listing) == {("counter", "x"), ("recorder", "y")}
        counter = listing[("counter", "x")]
        assert counter.status is ActorStatus.RUNNING
        assert counter.mailbox_depth == 0 and counter.restarts == 0 and counter.messages == 1
        assert counter.last_message_at is not None
        assert (system.clock.now() - counter.last_message_at).total_seconds() == pytest.approx(5)
        assert [a.key for a in system.actors(kind="recorder")] == ["y"]
        assert await system.inspect(Counter, "x") == {
            "sequence": 1,
            "state": {"total": 2, "history": (2,)},
        }


async def test_one_hundred_thousand_actors_can_be_activated(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_test_system(config=EngineConfig(passivate_after_s=None)) as system:
        for i in range(100_000):
            system.ref(Recorder, str(i)).tell_nowait(Append("x"))
        await settle(system)
        assert system.live_count == 100_000
        assert await system.ref(Recorder, "99999").ask(GetItems()) == ["x"]


class _Worker(Recorder):
    """Starts background work that reports back through its own mailbox."""

    kind = "worker"

    async def receive(self, message: object) -> object:
        if isinstance(message, Append) and message.item.startswith("job:"):
            self.start_task(self._job, message.item.removeprefix("job:"))
            return "started"
        if isinstance(message, Append) and message.item == "explode":
            self.start_task(self._explode)
            return "started"
        return await super().receive(message)

    async def _job(self, name: str) -> None:
        await trio.sleep(10)
        await self.ref.tell(Append(f"done:{name}"))

    async def _explode(self) -> None:
        await trio.sleep(1)
        raise RuntimeError("task blew up")


async def test_actor_tasks_run_beside_the_mailbox(autojump_clock: trio.abc.Clock) -> None:
    async with open_test_system() as system:
        ref = system.ref(_Worker, "w")
        assert await ref.ask(Append("job:a")) == "started"
        assert await ref.ask(Append("job:b")) == "started"
        assert await ref.ask(GetItems()) == []  # the mailbox is not held up
        assert not system.is_idle()  # tasks in flight count as work
        await settle(system)
        assert sorted(await ref.ask(GetItems())) == ["done:a", "done:b"]


async def test_a_failing_task_crashes_its_actor_and_a_restart_cancels_tasks(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_test_system(config=EngineConfig(supervision=FAST_RESTARTS)) as system:
        ref = system.ref(_Worker, "w")
        await ref.ask(Append("job:slow"))  # would finish at t=10
        await ref.ask(Append("explode"))  # fails at t=1 and crashes the actor
        await trio.sleep(20)
        await settle(system)
        info = system.info(_Worker, "w")
        assert info is not None and info.restarts == 1
        assert await ref.ask(GetItems()) == []  # the slow job was cancelled with its instance
