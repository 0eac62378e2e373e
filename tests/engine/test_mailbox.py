"""The actor mailbox keeps the memory channel's contract the engine relies on."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from penpay.engine.mailbox import Mailbox


async def test_messages_come_out_in_order() -> None:
    box = Mailbox[int](10)
    for n in range(5):
        box.put_nowait(n)
    assert [await box.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(trio.WouldBlock):
        box.get_nowait()


async def test_a_full_box_refuses_nowait_and_makes_writers_wait_their_turn() -> None:
    box = Mailbox[str](1)
    box.put_nowait("first")
    with pytest.raises(trio.WouldBlock):
        box.put_nowait("refused")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(box.put, "second")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(box.put, "third")
        await trio.testing.wait_all_tasks_blocked()
        assert box.writers_waiting == 2
        got = [await box.get() for _ in range(3)]
    assert got == ["first", "second", "third"]


async def test_the_reader_waits_for_a_message() -> None:
    box = Mailbox[int](4)
    got: list[int] = []

    async def reader() -> None:
        got.append(await box.get())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        box.put_nowait(7)
    assert got == [7]


async def test_closing_drains_then_ends_and_refuses_writers() -> None:
    box = Mailbox[int](1)
    box.put_nowait(1)
    refused: list[BaseException] = []

    async def writer() -> None:
        try:
            await box.put(2)
        except trio.ClosedResourceError as exc:
            refused.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        box.close()
    assert len(refused) == 1
    with pytest.raises(trio.ClosedResourceError):
        box.put_nowait(3)
    assert await box.get() == 1
    with pytest.raises(trio.EndOfChannel):
        await box.get()


async def test_closing_wakes_a_waiting_reader_with_end_of_channel() -> None:
    box = Mailbox[int](1)
    ended = False

    async def reader() -> None:
        nonlocal ended
        with pytest.raises(trio.EndOfChannel):
            await box.get()
        ended = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        box.close()
    assert ended


async def test_get_is_a_checkpoint_and_a_cancelled_wait_loses_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    box = Mailbox[int](2)
    box.put_nowait(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await box.get()  # an item is there, yet get() still honours cancellation
    assert scope.cancelled_caught and len(box) == 1
    assert await box.get() == 1
    with trio.move_on_after(1) as waited:
        await box.get()  # nothing comes: the wait is cancelled cleanly
    assert waited.cancelled_caught
    box.put_nowait(2)
    assert await box.get() == 2  # and a later get works


def test_a_mailbox_holds_at_least_one_message() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Mailbox[int](0)
