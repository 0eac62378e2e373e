"""The actor system: activation, mailboxes, supervision, timers, shutdown.

Every actor activation is one trio task reading one bounded memory channel,
so all messages to one identity are handled one at a time, in the order each
sender sent them. Activation is synchronous (create the channel, start the
task), which is what guarantees at most one live activation per identity:
there is no await between "not live" and "registered".
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Any, Final, TypeVar

import msgspec
import outcome
import trio

from penpay.engine.actor import Actor
from penpay.engine.clock import Clock, Entropy
from penpay.engine.errors import (
    ActorCrashed,
    ActorParked,
    ActorStopped,
    AskTimeout,
    ConcurrencyConflict,
    EngineError,
    JournalCorrupt,
    MailboxFull,
    Rejection,
    SystemClosed,
)
from penpay.engine.introspection import ActorInfo, ActorStatus
from penpay.engine.mailbox import Mailbox
from penpay.engine.persistence import InMemoryJournal, Journal
from penpay.engine.ref import ActorRef
from penpay.engine.supervision import SupervisionPolicy

log = logging.getLogger("penpay.engine")

A = TypeVar("A", bound=Actor)


class EngineConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Limits of the runtime; every one has a unit in its name."""

    mailbox_capacity: int = 1024
    #: Idle seconds before an actor is passivated; None keeps actors resident.
    passivate_after_s: float | None = 300.0
    passivation_sweep_s: float = 5.0
    ask_timeout_s: float = 10.0
    supervision: SupervisionPolicy = SupervisionPolicy()
    snapshot_every_events: int = 100
    shutdown_grace_s: float = 5.0


class ActorProps(msgspec.Struct, frozen=True, kw_only=True):
    """How the system creates and runs one kind of actor."""

    factory: Callable[[], Actor]
    mailbox_capacity: int
    batch_messages_max: int
    passivate_after_s: float | None
    supervision: SupervisionPolicy


class _Reply:
    """A one-shot reply slot for an ``ask``, built on trio's low-level parking.

    Cheaper than a reply channel per ask. The actor may answer before the
    asker has parked (sending can yield), so an early answer is kept and
    returned without parking.
    """

    __slots__ = ("_outcome", "_task", "bucket", "cancelled", "message", "ref", "started")

    def __init__(self, ref: ActorRef, message: Any) -> None:
        self._outcome: outcome.Outcome[Any] | None = None
        self._task: trio.lowlevel.Task | None = None
        self.cancelled = False
        self.started = trio.current_time()
        self.ref = ref
        self.message = message
        self.bucket = 0

    def succeed(self, value: Any) -> None:
        self._set(outcome.Value(value))

    def fail(self, error: BaseException) -> None:
        self._set(outcome.Error(error))

    def time_out(self) -> None:
        waited = trio.current_time() - self.started
        self.fail(AskTimeout(self.ref.address, waited, self.message))

    def _set(self, result: outcome.Outcome[Any]) -> None:
        if self.cancelled or self._outcome is not None:
            return
        if self._task is not None:
            task, self._task = self._task, None
            self._outcome = result
            trio.lowlevel.reschedule(task, result)
        else:
            self._outcome = result

    async def wait(self) -> Any:
        if self._outcome is not None:
            await trio.lowlevel.checkpoint()
            return self._outcome.unwrap()
        self._task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._task = None
            self.cancelled = True
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)


class _AskDeadlines:
    """Times out waiting asks with one task, not a cancel scope each.

    Deadlines are kept in buckets of ``RESOLUTION_S`` (an ask times out at most
    that late, never early), and an ask that is answered leaves its bucket at
    once. Keeping answered asks until their deadline would hold three objects
    per ask for the whole timeout, and the garbage collector's young
    collections would walk all of them: at tens of thousands of asks a second
    that alone was the tail latency of every reply.
    """

    RESOLUTION_S: Final = 0.01

    def __init__(self) -> None:
        self._buckets: dict[int, set[_Reply]] = {}
        self._heap: list[int] = []  # bucket numbers, each once
        self._wake: trio.CancelScope | None = None
        self._sleeping_until = math.inf
        self._changed = trio.Event()

    def add(self, deadline: float, reply: _Reply) -> None:
        bucket = math.ceil(deadline / self.RESOLUTION_S)
        waiting = self._buckets.get(bucket)
        if waiting is None:
            waiting = self._buckets[bucket] = set()
            heapq.heappush(self._heap, bucket)
            if bucket * self.RESOLUTION_S < self._sleeping_until:
                if self._wake is not None:
                    self._wake.cancel()
                self._changed.set()
        waiting.add(reply)
        reply.bucket = bucket

    def discard(self, reply: _Reply) -> None:
        """The ask is over (answered, failed or cancelled): forget its deadline."""
        waiting = self._buckets.get(reply.bucket)
        if waiting is not None:
            waiting.discard(reply)

    async def run(self) -> None:
        while True:
            if not self._heap:
                self._changed = trio.Event()
                self._sleeping_until = math.inf
                await self._changed.wait()
                continue
            bucket = self._heap[0]
            due = bucket * self.RESOLUTION_S
            if due <= trio.current_time():
                heapq.heappop(self._heap)
                for reply in self._buckets.pop(bucket, ()):
                    reply.time_out()
                continue
            self._sleeping_until = due
            with trio.CancelScope() as self._wake:
                await trio.sleep_until(due)
            self._wake = None
            self._sleeping_until = math.inf


class _Envelope:
    __slots__ = ("message", "reply")

    def __init__(self, message: Any, reply: _Reply | None) -> None:
        self.message = message
        self.reply = reply


class _Timed:
    """A timer's message, bound to the instance that armed it.

    Cancelling a timer cannot take back a message it already queued. After
    a crash the new instance re-arms what it needs from its recovered
    state, so a message queued for the old one is dropped, not acted on twice.
    """

    __slots__ = ("act", "generation", "message")

    def __init__(self, message: Any, act: _Activation, generation: int) -> None:
        self.message, self.act, self.generation = message, act, generation

    def for_instance_of(self, act: _Activation) -> bool:
        return self.act is act and self.generation == act.generation


_PASSIVATE: Final = object()  # sentinel sent by the sweeper
_INSPECT: Final = object()  # sentinel asking for introspect()
_TASK_FAILED: Final = object()  # sentinel: a task of this actor raised


class Timer:
    """A scheduled message; :meth:`cancel` before it fires to drop it."""

    __slots__ = ("_activation", "_scope", "fired")

    def __init__(self, activation: _Activation) -> None:
        self._activation = activation
        self._scope = trio.CancelScope()
        self.fired = False

    @property
    def pending(self) -> bool:
        return not self.fired and not self._scope.cancel_called

    def cancel(self) -> None:
        self._scope.cancel()
        self._activation.timers.discard(self)


class _Activation:
    __slots__ = (
        "current",
        "failure",
        "failures",
        "generation",
        "instance",
        "key",
        "kind",
        "last_activity",
        "mailbox",
        "messages",
        "processing",
        "props",
        "ref",
        "restarts",
        "status",
        "task_error",
        "task_scopes",
        "tasks",
        "timers",
    )

    def __init__(self, ref: ActorRef, props: ActorProps, now: float) -> None:
        self.ref = ref
        self.kind = ref.kind
        self.key = ref.key
        self.props = props
        self.mailbox = Mailbox[_Envelope](props.mailbox_capacity)
        self.status = ActorStatus.STARTING
        self.restarts = 0
        self.messages = 0
        self.failures: deque[float] = deque()
        self.failure: str | None = None
        self.last_activity = now
        self.processing = False
        self.instance: Actor | None = None
        self.timers: set[Timer] = set()
        self.current: _Envelope | None = None
        self.task_scopes: set[trio.CancelScope] = set()
        self.generation = 0  # bumped when an instance goes; stale tasks then stay quiet
        self.tasks = 0
        self.task_error: BaseException | None = None

    def depth(self) -> int:
        return len(self.mailbox)


def _still_timely(act: _Activation, env: _Envelope) -> bool:
    """Unwrap a timer's message in ``env``; False if it was armed by a past instance."""
    timed = env.message
    if type(timed) is not _Timed:
        return True
    if not timed.for_instance_of(act):
        return False
    env.message = timed.message
    return True


def _raise_task_error(act: _Activation) -> None:
    """Raise (once) the error a task of ``act``'s actor failed with, if any."""
    error, act.task_error = act.task_error, None
    if error is not None:
        raise error


def _failure_reply(act: _Activation, what: str, exc: Exception) -> EngineError:
    """What the asker of a message that raised is told."""
    reply: EngineError
    if isinstance(exc, ConcurrencyConflict):
        reply = ActorStopped(f"{act.ref.address} stopped handling {what}: {exc}")
    else:
        reply = ActorCrashed(f"{act.ref.address} crashed handling {what}: {exc!r}")
    reply.__cause__ = exc
    return reply


class ActorSystem:
    """Hosts actors. Open one with :func:`open_actor_system`."""

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        config: EngineConfig,
        clock: Clock,
        entropy: Entropy,
        journal: Journal,
    ) -> None:
        self._nursery = nursery
        self.config = config
        self.clock = clock
        self.entropy = entropy
        self.journal = journal
        self._props: dict[type[Actor], ActorProps] = {}
        self._live: dict[tuple[type[Actor], str], _Activation] = {}
        #: Restarts per actor kind since the system started (for operators' counters).
        self.restarts_by_kind: Counter[str] = Counter()
        self._closing = False
        self._tasks_done = trio.Event()
        self._running_tasks = 0
        self.kinds: dict[str, type[Actor]] = {}
        self._ask_deadlines = _AskDeadlines()

    # ----------------------------------------------------------------- kinds

    def register(
        self,
        kind: type[A],
        factory: Callable[[], A] | None = None,
        *,
        mailbox_capacity: int | None = None,
        passivate_after_s: float | bool | None = True,
        supervision: SupervisionPolicy | None = None,
    ) -> None:
        """Declare how to build and run actors of ``kind``.

        ``passivate_after_s=True`` (the default) takes the system's setting;
        ``None`` keeps these actors resident. Unregistered kinds are
        registered with defaults and ``kind()`` as the factory on first use.
        """
        if passivate_after_s is True:
            passivate: float | None = self.config.passivate_after_s
        elif passivate_after_s is False:
            passivate = None
        else:
            passivate = passivate_after_s
        self._props[kind] = ActorProps(
            factory=factory or kind,
            mailbox_capacity=mailbox_capacity or self.config.mailbox_capacity,
            batch_messages_max=kind.batch_messages_max,
            passivate_after_s=passivate,
            supervision=supervision or self.config.supervision,
        )
        self.kinds[kind.kind] = kind

    def _props_for(self, kind: type[Actor]) -> ActorProps:
        props = self._props.get(kind)
        if props is None:
            self.register(kind)
            props = self._props[kind]
        return props

    # ------------------------------------------------------------ addressing

    def ref(self, kind: type[Actor], key: str) -> ActorRef:
        """The address of ``kind``/``key``; nothing is activated until it is used."""
        return ActorRef(self, kind, key)

    def spawn(self, kind: type[Actor], key: str) -> ActorRef:
        """Activate ``kind``/``key`` now (if not live) and return its address."""
        ref = ActorRef(self, kind, key)
        self._activation_for(ref)
        return ref

    def _activation_for(self, ref: ActorRef) -> _Activation:
        act = self._live.get((ref.kind, ref.key))
        if act is None:
            if self._closing:
                raise SystemClosed(f"cannot deliver to {ref.address}: the system is shutting down")
            props = self._props_for(ref.kind)
            act = _Activation(ref, props, trio.current_time())
            self._live[(ref.kind, ref.key)] = act
            self._running_tasks += 1
            self._nursery.start_soon(self._run, act, name=ref.address)
        elif act.status is ActorStatus.FAILED:
            raise ActorParked(f"{ref.address} is parked after failing: {act.failure}")
        return act

    async def _deliver(self, ref: ActorRef, message: Any, reply: _Reply | None) -> None:
        while True:
            act = self._activation_for(ref)
            try:
                await act.mailbox.put(_Envelope(message, reply))
                return
            except trio.ClosedResourceError:
                self._raise_if_gone(act)

    def _deliver_nowait(self, ref: ActorRef, message: Any) -> None:
        act = self._activation_for(ref)
        try:
            act.mailbox.put_nowait(_Envelope(message, None))
        except trio.WouldBlock:
            raise MailboxFull(
                f"{ref.address} has {act.props.mailbox_capacity} messages waiting"
            ) from None
        except trio.ClosedResourceError:
            self._raise_if_gone(act)
            self._deliver_nowait(ref, message)

    def _raise_if_gone(self, act: _Activation) -> None:
        """After a closed mailbox: raise, or return to retry on a new activation."""
        if act.status is ActorStatus.FAILED:
            raise ActorParked(f"{act.ref.address} is parked after failing: {act.failure}")
        if self._closing:
            raise SystemClosed(f"{act.ref.address}: the system is shutting down")

    async def _ask(self, ref: ActorRef, message: Any, timeout: float | None) -> Any:
        timeout_s = self.config.ask_timeout_s if timeout is None else timeout
        reply = _Reply(ref, message)
        act = self._activation_for(ref)
        try:
            act.mailbox.put_nowait(_Envelope(message, reply))
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass
        else:
            # Fast path: enqueued without yielding. The reply's deadline goes in
            # the shared expiry buckets instead of a cancel scope per ask.
            deadlines = self._ask_deadlines
            deadlines.add(trio.current_time() + timeout_s, reply)
            try:
                return await reply.wait()
            finally:
                deadlines.discard(reply)
        # Slow path (a full or just-closed mailbox): the send itself must time out too.
        with trio.move_on_after(timeout_s):
            await self._deliver(ref, message, reply)
            return await reply.wait()
        raise AskTimeout(ref.address, timeout_s, message)

    # ---------------------------------------------------------- supervision

    async def _run(self, act: _Activation) -> None:
        try:
            await self._supervise(act)
        finally:
            self._running_tasks -= 1
            if self._running_tasks == 0:
                self._tasks_done.set()

    async def _supervise(self, act: _Activation) -> None:
        policy = act.props.supervision
        while True:
            try:
                instance = act.props.factory()
            except Exception as exc:
                # A factory that cannot build the actor will not do better on a
                # retry: park this identity; every other actor carries on.
                log.error("%s cannot be created: %r", act.ref.address, exc)
                act.restarts += 1
                self._park(act, exc)
                return
            instance.key = act.key
            instance.ref = act.ref
            instance.system = self
            act.instance = instance
            act.status = ActorStatus.STARTING
            try:
                await instance.on_start()
                act.status = ActorStatus.RUNNING
                await self._serve(act, instance)
                act.status = ActorStatus.STOPPING
                self._cancel_timers(act)
                await instance.on_passivate()
                await instance.on_stop()
                if not self._closing and act.depth() > 0:
                    continue  # messages arrived while stopping: carry on, same task
                self._deregister(act)
                return
            except ConcurrencyConflict as exc:
                log.warning("%s stopped: %s", act.ref.address, exc)
                self._stop(act, ActorStopped(f"{act.ref.address} stopped: {exc}"))
                return
            except JournalCorrupt as exc:
                log.error("%s cannot recover its state: %s", act.ref.address, exc)
                await self._notify_failure(instance, exc)
                act.restarts += 1
                self._park(act, exc)
                return
            except Exception as exc:
                self._cancel_timers(act)
                act.failure = f"{type(exc).__name__}: {exc}"  # the last crash, for operators
                await self._notify_failure(instance, exc)
                if self._closing:
                    self._deregister(act)
                    return
                now = trio.current_time()
                act.failures.append(now)
                while act.failures and act.failures[0] <= now - policy.window_s:
                    act.failures.popleft()
                act.restarts += 1
                self.restarts_by_kind[act.kind.kind] += 1
                if len(act.failures) > policy.max_restarts:
                    log.error(
                        "%s parked after %d crashes in %g s: %r",
                        act.ref.address, len(act.failures), policy.window_s, exc,
                    )
                    self._park(act, exc)
                    return
                delay = policy.backoff_s(len(act.failures))
                log.warning("%s crashed (%r); restarting in %.3f s", act.ref.address, exc, delay)
                act.status = ActorStatus.RESTARTING
                await trio.sleep(delay)
            except BaseException:
                # Cancelled: the system is being torn down under us.
                if act.current is not None and act.current.reply is not None:
                    act.current.reply.fail(SystemClosed(f"{act.ref.address}: shut down"))
                self._deregister(act)
                raise

    async def _serve(self, act: _Activation, instance: Actor) -> None:
        """Handle messages until the mailbox closes or the actor passivates."""
        mailbox = act.mailbox
        while True:
            # A task's failure crashes the actor. Its notice may not have fit in
            # a full mailbox: a busy actor comes back here between messages and
            # crashes all the same.
            _raise_task_error(act)
            try:
                env = await mailbox.get()
            except trio.EndOfChannel:
                return
            if not _still_timely(act, env):
                continue
            message = env.message
            if message is _PASSIVATE:
                if self._idle_for_passivation(act, trio.current_time()):
                    return
                continue
            if message is _TASK_FAILED:
                _raise_task_error(act)  # unless it was raised before its notice came
                continue
            if message is _INSPECT:
                assert env.reply is not None
                try:
                    env.reply.succeed(instance.introspect())
                except Exception as exc:
                    env.reply.fail(exc)
                continue
            if act.props.batch_messages_max > 1:
                await self._serve_batch(act, instance, env)
                continue
            act.processing = True
            act.current = env
            act.last_activity = trio.current_time()
            try:
                result = await instance.receive(message)
            except Rejection as rejection:
                if env.reply is not None:
                    env.reply.fail(rejection)
            except Exception as exc:
                if env.reply is not None:
                    env.reply.fail(_failure_reply(act, type(message).__name__, exc))
                act.processing = False
                act.current = None
                raise
            else:
                if env.reply is not None:
                    env.reply.succeed(result)
            act.messages += 1
            act.processing = False
            act.current = None

    async def _serve_batch(self, act: _Activation, instance: Actor, first: _Envelope) -> None:
        """Take ``first`` plus whatever else is queued (up to the limit) as one batch."""
        batch = [first]
        sentinels: list[_Envelope] = []
        limit = act.props.batch_messages_max
        while len(batch) < limit:
            try:
                env = act.mailbox.get_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if env.message is _TASK_FAILED:
                break  # the batch so far, then the crash (``_serve`` raises the task's error)
            if not _still_timely(act, env):
                continue
            if env.message is _PASSIVATE or env.message is _INSPECT:
                sentinels.append(env)  # handled after the batch, in order
                continue
            batch.append(env)
        act.processing = True
        act.last_activity = trio.current_time()
        try:
            replies = await instance.receive_batch([env.message for env in batch])
        except Exception as exc:
            crashed = _failure_reply(act, "a batch", exc)
            for env in batch:
                if env.reply is not None:
                    env.reply.fail(crashed)
            act.processing = False
            raise
        if len(replies) != len(batch):
            raise RuntimeError(
                f"{act.ref.address}.receive_batch returned {len(replies)} replies "
                f"for {len(batch)} messages"
            )
        for env, reply in zip(batch, replies, strict=True):
            if env.reply is None:
                continue
            if isinstance(reply, Rejection):
                env.reply.fail(reply)
            else:
                env.reply.succeed(reply)
        act.messages += len(batch)
        act.processing = False
        for env in sentinels:
            if env.message is _INSPECT and env.reply is not None:
                env.reply.succeed(instance.introspect())

    async def _notify_failure(self, instance: Actor, exc: BaseException) -> None:
        try:
            await instance.on_failure(exc)
        except Exception:
            log.exception("%s.on_failure raised", type(instance).__name__)

    def _cancel_timers(self, act: _Activation) -> None:
        """Cancel everything the current instance left running: timers and tasks."""
        for timer in list(act.timers):
            timer.cancel()
        for scope in act.task_scopes:
            scope.cancel()
        act.task_scopes.clear()
        act.task_error = None  # the crash it would cause has happened (or is moot)
        act.generation += 1

    def _start_task(
        self, instance: Actor, fn: Callable[..., Awaitable[Any]], *args: Any
    ) -> None:
        act = self._live.get((type(instance), instance.key))
        if act is None or act.instance is not instance:
            raise ActorStopped(f"{instance.ref.address}: cannot start a task from a stopped actor")
        scope = trio.CancelScope()
        act.task_scopes.add(scope)
        self._nursery.start_soon(self._run_task, act, scope, act.generation, fn, args)

    async def _run_task(
        self,
        act: _Activation,
        scope: trio.CancelScope,
        generation: int,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
    ) -> None:
        act.tasks += 1
        try:
            with scope:
                await fn(*args)
        except Exception as exc:
            # A failed task is a crash of its actor: hand it to the supervisor
            # through the mailbox, so it is handled in order with messages. A
            # full mailbox has no room for the notice, but then the actor is
            # busy, and ``_serve`` finds ``task_error`` before its next message.
            log.warning("task of %s failed: %r", act.ref.address, exc)
            if act.instance is not None and generation == act.generation:
                act.task_error = exc
                with suppress(trio.WouldBlock, trio.ClosedResourceError):
                    act.mailbox.put_nowait(_Envelope(_TASK_FAILED, None))
        finally:
            act.tasks -= 1
            act.task_scopes.discard(scope)

    def _deregister(self, act: _Activation) -> None:
        if self._live.get((act.kind, act.key)) is act:
            del self._live[(act.kind, act.key)]
        act.mailbox.close()
        self._fail_queued(act, SystemClosed(f"{act.ref.address}: stopped"))

    def _stop(self, act: _Activation, error: EngineError) -> None:
        self._cancel_timers(act)
        if self._live.get((act.kind, act.key)) is act:
            del self._live[(act.kind, act.key)]
        act.mailbox.close()
        self._fail_queued(act, error)

    def _park(self, act: _Activation, exc: BaseException) -> None:
        self._cancel_timers(act)
        act.status = ActorStatus.FAILED
        act.failure = f"{type(exc).__name__}: {exc}"
        act.instance = None
        act.mailbox.close()
        self._fail_queued(act, ActorParked(f"{act.ref.address} is parked: {act.failure}"))

    def _fail_queued(self, act: _Activation, error: EngineError) -> None:
        while True:
            try:
                env = act.mailbox.get_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            if env.reply is not None:
                env.reply.fail(error)

    def unpark(self, kind: type[Actor], key: str) -> bool:
        """Forget a parked actor so the next message activates it afresh."""
        act = self._live.get((kind, key))
        if act is None or act.status is not ActorStatus.FAILED:
            return False
        del self._live[(kind, key)]
        return True

    # ---------------------------------------------------------- passivation

    def _idle_for_passivation(self, act: _Activation, now: float) -> bool:
        after = act.props.passivate_after_s
        return (
            after is not None
            and not act.processing
            and not act.timers
            and not act.tasks
            and now - act.last_activity >= after
            and act.depth() == 0
        )

    async def _sweep_idle(self) -> None:
        """Ask idle actors to passivate; each re-checks when the request arrives."""
        while True:
            await trio.sleep(self.config.passivation_sweep_s)
            now = trio.current_time()
            for act in list(self._live.values()):
                if act.status is ActorStatus.RUNNING and self._idle_for_passivation(act, now):
                    with suppress(trio.WouldBlock, trio.ClosedResourceError):
                        act.mailbox.put_nowait(_Envelope(_PASSIVATE, None))

    # ---------------------------------------------------------------- timers

    def _schedule(self, instance: Actor, delay_s: float, message: Any) -> Timer:
        act = self._live.get((type(instance), instance.key))
        if act is None or act.instance is not instance:
            raise ActorStopped(f"{instance.ref.address}: cannot schedule from a stopped actor")
        timer = Timer(act)
        act.timers.add(timer)
        self._nursery.start_soon(self._fire, act, timer, delay_s, message)
        return timer

    async def _fire(self, act: _Activation, timer: Timer, delay_s: float, message: Any) -> None:
        timed = _Timed(message, act, act.generation)
        with timer._scope:
            await trio.sleep(delay_s)
            timer.fired = True
            act.timers.discard(timer)
            try:
                await self._deliver(act.ref, timed, None)
            except EngineError as exc:
                log.warning("timer for %s dropped: %s", act.ref.address, exc)

    # --------------------------------------------------------- introspection

    def actors(
        self, *, kind: str | None = None, status: ActorStatus | str | None = None,
        limit: int | None = None,
    ) -> list[ActorInfo]:
        """Live and parked actors, for operators."""
        now_trio = trio.current_time()
        now_wall = self.clock.now()
        result: list[ActorInfo] = []
        for act in self._live.values():
            if kind is not None and act.kind.kind != kind:
                continue
            if status is not None and act.status != status:
                continue
            result.append(
                ActorInfo(
                    kind=act.kind.kind,
                    key=act.key,
                    status=act.status,
                    mailbox_depth=act.depth(),
                    restarts=act.restarts,
                    messages=act.messages,
                    last_message_at=(
                        now_wall - timedelta(seconds=now_trio - act.last_activity)
                        if act.messages
                        else None
                    ),
                    failure=act.failure,
                )
            )
            if limit is not None and len(result) >= limit:
                break
        return result

    def info(self, kind: type[Actor], key: str) -> ActorInfo | None:
        for item in self.actors(kind=kind.kind):
            if item.key == key:
                return item
        return None

    async def inspect(self, kind: type[Actor], key: str, *, timeout: float | None = None) -> Any:
        """One actor's state, read through its mailbox (activating it if needed)."""
        ref = ActorRef(self, kind, key)
        reply = _Reply(ref, "inspect")
        timeout_s = self.config.ask_timeout_s if timeout is None else timeout
        with trio.move_on_after(timeout_s):
            act = self._activation_for(ref)
            await act.mailbox.put(_Envelope(_INSPECT, reply))
            return await reply.wait()
        raise AskTimeout(ref.address, timeout_s, "inspect")

    def is_idle(self) -> bool:
        """True when no actor has work in hand (timers may still be pending)."""
        for act in self._live.values():
            if act.status is ActorStatus.FAILED:
                continue
            if act.status is not ActorStatus.RUNNING or act.processing or act.tasks:
                return False
            if len(act.mailbox) or act.mailbox.writers_waiting:
                return False
        return True

    @property
    def live_count(self) -> int:
        return len(self._live)

    # -------------------------------------------------------------- shutdown

    async def aclose(self) -> None:
        """Stop accepting messages, let every actor drain and stop, then cancel the rest."""
        if self._closing:
            return
        self._closing = True
        for act in list(self._live.values()):
            act.mailbox.close()
        if self._running_tasks:
            with trio.move_on_after(self.config.shutdown_grace_s):
                await self._tasks_done.wait()
        self._nursery.cancel_scope.cancel()


@asynccontextmanager
async def open_actor_system(
    *,
    config: EngineConfig | None = None,
    clock: Clock | None = None,
    entropy: Entropy | None = None,
    journal: Journal | None = None,
) -> AsyncIterator[ActorSystem]:
    """Run an actor system for the duration of the ``async with`` block.

    On exit every actor is passivated (state snapshotted, ``on_stop`` called),
    then timers and anything else still running are cancelled, so no task
    outlives the block.
    """
    clock = clock or Clock()
    async with trio.open_nursery() as nursery:
        system = ActorSystem(
            nursery,
            config=config or EngineConfig(),
            clock=clock,
            entropy=entropy or Entropy(),
            journal=journal if journal is not None else InMemoryJournal(clock.now_ms),
        )
        nursery.start_soon(system._sweep_idle, name="penpay.engine.sweep_idle")
        nursery.start_soon(system._ask_deadlines.run, name="penpay.engine.ask_deadlines")
        try:
            yield system
        finally:
            with trio.CancelScope(shield=True):
                await system.aclose()
