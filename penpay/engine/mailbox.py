"""An actor's mailbox: a bounded FIFO with one reader, on trio's low-level parking.

A ``trio`` memory channel would do, but it is built for many readers and
writers, clones and statistics, and every message pays for that twice (send
and receive). An actor's mailbox has exactly one reader, its serve loop, so a
deque, the parked reader and a parking lot for writers that wait on a full
box are all it needs. Semantics follow the memory channel's where the engine
relies on them: ``WouldBlock`` when full or empty, ``ClosedResourceError``
for writers after :meth:`close`, ``EndOfChannel`` for the reader once a
closed box is empty, and :meth:`get` is a checkpoint.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Generic, TypeVar

import trio

T = TypeVar("T")


class Mailbox(Generic[T]):
    __slots__ = ("_capacity", "_closed", "_items", "_reader", "_writers")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a mailbox holds at least one message")
        self._capacity = capacity
        self._items: deque[T] = deque()
        self._reader: trio.lowlevel.Task | None = None
        self._writers = trio.lowlevel.ParkingLot()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def writers_waiting(self) -> int:
        """Writers parked on a full mailbox."""
        return len(self._writers)

    def put_nowait(self, item: T) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the mailbox is closed")
        if len(self._items) >= self._capacity:
            raise trio.WouldBlock
        self._items.append(item)
        self._wake_reader()

    async def put(self, item: T) -> None:
        """Enqueue, waiting (FIFO with other writers) while the mailbox is full."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                self.put_nowait(item)
            except trio.WouldBlock:
                await self._writers.park()
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return

    def get_nowait(self) -> T:
        if not self._items:
            if self._closed:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        item = self._items.popleft()
        if self._writers:
            self._writers.unpark()
        return item

    async def get(self) -> T:
        """The next message, waiting for one; ``EndOfChannel`` once closed and empty."""
        if self._items or self._closed:
            await trio.lowlevel.checkpoint()
            return self.get_nowait()
        assert self._reader is None, "a mailbox has one reader"
        self._reader = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._reader = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        return self.get_nowait()

    def close(self) -> None:
        """No more writes; the reader drains what is queued, then sees ``EndOfChannel``."""
        self._closed = True
        self._writers.unpark_all()
        self._wake_reader()

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None:
            self._reader = None
            trio.lowlevel.reschedule(reader)
