"""The RFC 6455 transport: framing, coalescing, close and drop, large messages, control frames.

Most tests run two ends over ``trio.testing.memory_stream_pair`` (one end
may be raw bytes, to check the wire); the interop tests use real sockets
against ``trio_websocket``, an independent implementation.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio_websocket
from trio.testing import MockClock, lockstep_stream_pair, memory_stream_pair

from penpay.actors.deriv import DerivTimeout, TransportClosed, memory_pair, websocket_connector
from penpay.actors.deriv.rpc import DerivRpc
from penpay.actors.deriv.websocket import (
    CLOSE_INVALID_DATA,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    ProtocolError,
    WebSocketConnection,
    encode_frame,
    open_websocket,
)
from penpay.actors.deriv.wire import decode, encode
from penpay.sandbox.deriv import DerivWorld, serve_deriv_sandbox

# -- frames -------------------------------------------------------------------


def _frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """A frame built by hand (for fragments and deliberately broken frames)."""
    whole = encode_frame(opcode, payload, mask=mask)
    return bytes([whole[0] & 0x7F if not fin else whole[0]]) + whole[1:]


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 1_000_000])
@pytest.mark.parametrize("mask", [True, False])
def test_frames_round_trip_in_any_chunking(size: int, mask: bool) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    wire = encode_frame(OP_TEXT, payload, mask=mask) + encode_frame(OP_PING, b"hi", mask=mask)
    reader = FrameReader(expect_masked=mask)
    got: list[tuple[int, bytes]] = []
    step = 7 if size < 70_000 else 65_536
    for i in range(0, len(wire), step):
        got += reader.feed(wire[i : i + step])
    assert got == [(OP_TEXT, payload), (OP_PING, b"hi")]


def test_length_encodings_on_the_wire() -> None:
    assert encode_frame(OP_TEXT, b"x" * 125, mask=False)[:2] == bytes([0x81, 125])
    assert encode_frame(OP_TEXT, b"x" * 126, mask=False)[:4] == bytes([0x81, 126, 0, 126])
    long = encode_frame(OP_BINARY, b"x" * 70_000, mask=True)
    assert long[:2] == bytes([0x82, 0x80 | 127])
    assert struct.unpack("!Q", long[2:10]) == (70_000,)
    assert long[14:] != b"x" * 70_000  # masked


def test_fragments_reassemble_around_control_frames() -> None:
    reader = FrameReader(expect_masked=True)
    wire = (
        _frame(OP_TEXT, b"hel", fin=False)
        + _frame(OP_PING, b"p")
        + _frame(OP_CONTINUATION, b"l", fin=False)
        + _frame(OP_CONTINUATION, b"o")
    )
    assert reader.feed(wire) == [(OP_PING, b"p"), (OP_TEXT, b"hello")]


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (encode_frame(OP_TEXT, b"x", mask=False), CLOSE_PROTOCOL_ERROR),  # client must mask
        (bytes([0xC1]) + encode_frame(OP_TEXT, b"x", mask=True)[1:], CLOSE_PROTOCOL_ERROR),  # RSV1
        (encode_frame(OP_PING, b"x" * 126, mask=True), CLOSE_PROTOCOL_ERROR),  # control > 125
        (_frame(OP_PING, b"x", fin=False), CLOSE_PROTOCOL_ERROR),  # fragmented control
        (_frame(OP_CONTINUATION, b"x"), CLOSE_PROTOCOL_ERROR),  # nothing to continue
        (_frame(OP_TEXT, b"a", fin=False) + _frame(OP_TEXT, b"b"), CLOSE_PROTOCOL_ERROR),
        (encode_frame(0x3, b"", mask=True), CLOSE_PROTOCOL_ERROR),  # reserved opcode
        (encode_frame(OP_TEXT, b"x" * 101, mask=True), CLOSE_TOO_BIG),
        (_frame(OP_TEXT, b"x" * 60, fin=False) + _frame(OP_CONTINUATION, b"x" * 60), CLOSE_TOO_BIG),
    ],
)
def test_violations_name_their_close_code(wire: bytes, code: int) -> None:
    reader = FrameReader(expect_masked=True, max_message_bytes=100)
    with pytest.raises(ProtocolError) as info:
        reader.feed(wire)
    assert info.value.code == code


def test_oversized_frame_is_refused_from_its_header() -> None:
    reader = FrameReader(expect_masked=False, max_message_bytes=1_000)
    with pytest.raises(ProtocolError) as info:
        reader.feed(encode_frame(OP_TEXT, b"x" * 5_000, mask=False)[:10])
    assert info.value.code == CLOSE_TOO_BIG


# -- connections ----------------------------------------------------------------


@asynccontextmanager
async def ws_pair(
    max_message_bytes: int = 4 * 1024 * 1024,
) -> AsyncIterator[tuple[WebSocketConnection, WebSocketConnection]]:
    client_stream, server_stream = memory_stream_pair()
    async with (
        open_websocket(client_stream, client=True, max_message_bytes=max_message_bytes) as client,
        open_websocket(server_stream, client=False, max_message_bytes=max_message_bytes) as server,
    ):
        yield client, server


@asynccontextmanager
async def raw_client() -> AsyncIterator[tuple[trio.abc.Stream, WebSocketConnection]]:
    """A server end, and the raw stream a test writes client frames to."""
    raw, server_stream = memory_stream_pair()
    async with open_websocket(server_stream, client=False, close_timeout_s=0.5) as server:
        yield raw, server


async def read_frames(
    stream: trio.abc.Stream, count: int, *, masked: bool = False
) -> list[tuple[int, bytes]]:
    reader = FrameReader(expect_masked=masked)
    frames: list[tuple[int, bytes]] = []
    while len(frames) < count:
        data = await stream.receive_some()
        assert data, "stream ended"
        frames += reader.feed(data)
    return frames


async def test_messages_flow_both_ways() -> None:
    async with ws_pair() as (client, server):
        await client.send_message('{"ping":1}')
        assert await server.get_message() == '{"ping":1}'
        await server.send_message("é ünïcode ✓")
        assert await client.get_message() == "é ünïcode ✓"


async def test_concurrent_sends_are_coalesced_into_few_writes() -> None:
    async with ws_pair() as (client, server):

        async def send(n: int) -> None:
            await client.send_message(f"message {n}")

        async with trio.open_nursery() as nursery:
            for n in range(200):
                nursery.start_soon(send, n)
        got = {await server.get_message() for _ in range(200)}
        assert got == {f"message {n}" for n in range(200)}
        assert client.frames_sent == 200
        assert client.writes <= 5, client.writes


async def test_one_sender_is_written_at_once() -> None:
    async with ws_pair() as (client, server):
        for n in range(3):
            await client.send_message(f"m{n}")
            assert await server.get_message() == f"m{n}"
        assert client.writes == 3


async def test_messages_keep_their_order_from_one_sender() -> None:
    async with ws_pair() as (client, server):
        for n in range(500):
            await client.send_message(str(n))
        assert [await server.get_message() for _ in range(500)] == [str(n) for n in range(500)]


async def test_large_messages_both_ways() -> None:
    big = "x" * 3_000_000
    async with ws_pair() as (client, server):
        await client.send_message(big)
        assert await server.get_message() == big
        await server.send_message(big + "y")
        assert await client.get_message() == big + "y"


async def test_too_large_message_closes_with_1009() -> None:
    async with ws_pair(max_message_bytes=1_000) as (client, server):
        await client.send_message("x" * 2_000)
        with pytest.raises(TransportClosed, match="1009"):
            await server.get_message()
        with pytest.raises(TransportClosed, match="1009"):
            await client.get_message()


async def test_ping_is_answered_with_pong() -> None:
    async with raw_client() as (raw, server):
        await raw.send_all(encode_frame(OP_PING, b"are you there", mask=True))
        assert await read_frames(raw, 1) == [(OP_PONG, b"are you there")]
        await raw.send_all(encode_frame(OP_PONG, b"unsolicited", mask=True))
        await raw.send_all(encode_frame(OP_TEXT, b"after", mask=True))
        assert await server.get_message() == "after"


async def test_fragmented_message_from_raw_client() -> None:
    async with raw_client() as (raw, server):
        await raw.send_all(_frame(OP_TEXT, b'{"pi', fin=False))
        await raw.send_all(_frame(OP_PING, b"1"))
        await raw.send_all(_frame(OP_CONTINUATION, b'ng":1}'))
        assert await server.get_message() == '{"ping":1}'
        assert await read_frames(raw, 1) == [(OP_PONG, b"1")]


async def test_peer_close_is_answered_and_ends_reads() -> None:
    async with raw_client() as (raw, server):
        await raw.send_all(encode_frame(OP_TEXT, b"last words", mask=True))
        await raw.send_all(encode_frame(OP_CLOSE, struct.pack("!H", 1001) + b"bye", mask=True))
        assert await server.get_message() == "last words"  # delivered before the close
        with pytest.raises(TransportClosed, match="1001 bye"):
            await server.get_message()
        with pytest.raises(TransportClosed):
            await server.send_message("too late")
        assert await read_frames(raw, 1) == [(OP_CLOSE, struct.pack("!H", 1001))]


async def test_close_handshake_from_either_side() -> None:
    async with ws_pair() as (client, server):
        await client.aclose()
        with pytest.raises(TransportClosed, match="1000"):
            await server.get_message()
        assert client.close_code == CLOSE_NORMAL
        await client.aclose()  # idempotent


async def test_drop_without_close_frame() -> None:
    async with raw_client() as (raw, server):
        await raw.aclose()
        with pytest.raises(TransportClosed, match="1006"):
            await server.get_message()


async def test_close_times_out_when_the_peer_never_answers(autojump_clock: MockClock) -> None:
    async with raw_client() as (raw, server):
        start = trio.current_time()
        await server.aclose()
        assert trio.current_time() - start == pytest.approx(0.5)
        assert await read_frames(raw, 1) == [(OP_CLOSE, struct.pack("!H", CLOSE_NORMAL))]


async def test_invalid_utf8_closes_with_1007() -> None:
    async with raw_client() as (raw, server):
        await raw.send_all(encode_frame(OP_TEXT, b"\xff\xfe", mask=True))
        with pytest.raises(TransportClosed, match=str(CLOSE_INVALID_DATA)):
            await server.get_message()
        (opcode, payload), *_ = await read_frames(raw, 1)
        assert opcode == OP_CLOSE and payload[:2] == struct.pack("!H", CLOSE_INVALID_DATA)


async def test_protocol_error_closes_with_1002() -> None:
    async with raw_client() as (raw, server):
        await raw.send_all(encode_frame(OP_TEXT, b"unmasked", mask=False))
        with pytest.raises(TransportClosed, match=str(CLOSE_PROTOCOL_ERROR)):
            await server.get_message()


async def test_send_waits_under_back_pressure(autojump_clock: MockClock) -> None:
    client_stream, raw = lockstep_stream_pair()  # a write blocks until the peer reads
    async with open_websocket(
        client_stream, client=True, close_timeout_s=1.0, max_buffered_bytes=1_000
    ) as client:
        await client.send_message("first")
        await trio.testing.wait_all_tasks_blocked()  # the writer is stuck in send_all
        assert client.send_nowait("x" * 2_000)  # queued: under the mark before it
        assert not client.send_nowait("y")  # over the mark: the caller must wait
        sent: list[str] = []

        async def sender() -> None:
            await client.send_message("z")
            sent.append("z")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            await trio.testing.wait_all_tasks_blocked()
            assert sent == []
            frames = await read_frames(raw, 3, masked=True)
        assert sent == ["z"]
        assert [payload for _, payload in frames] == [b"first", b"x" * 2_000, b"z"]


# -- real sockets and an independent implementation --------------------------------


async def test_trio_websocket_client_talks_to_the_sandbox(world: DerivWorld) -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_deriv_sandbox, world, "127.0.0.1", 0)
        async with trio_websocket.open_websocket_url(address.url) as ws:
            await ws.send_message(encode({"ping": 1, "req_id": 5}))
            answer = decode(str(await ws.get_message()))
            assert answer["ping"] == "pong" and answer["req_id"] == 5
            await ws.ping(b"x")  # answered by the sandbox's transport
            await ws.send_message("y" * 200_000)  # not JSON: an error answer, not a crash
            assert decode(str(await ws.get_message()))["error"]["code"] == "BadRequest"
        nursery.cancel_scope.cancel()


async def test_our_client_talks_to_a_trio_websocket_server() -> None:
    async def echo(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.send_message(await ws.get_message())
        except trio_websocket.ConnectionClosed:
            pass

    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_websocket.serve_websocket, echo, "127.0.0.1", 0, None)
        connect = websocket_connector(f"ws://127.0.0.1:{server.port}/any?x=1")
        async with connect() as conn:
            for text in ("short", "z" * 70_000):
                await conn.send_message(text)
                assert await conn.get_message() == text
        nursery.cancel_scope.cancel()


async def test_not_a_websocket_request_gets_400(world: DerivWorld) -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve_deriv_sandbox, world, "127.0.0.1", 0)
        stream = await trio.open_tcp_stream("127.0.0.1", address.port)
        await stream.send_all(b"GET /websockets/v3 HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += await stream.receive_some()
        assert answer.startswith(b"HTTP/1.1 400")
        await stream.aclose()
        nursery.cancel_scope.cancel()


# -- call deadlines ------------------------------------------------------------


async def test_call_deadlines_fire_in_order_of_deadline(autojump_clock: MockClock) -> None:
    client_end, _silent_server = memory_pair()
    rpc = DerivRpc(client_end)
    fired: list[tuple[float, float]] = []

    async def call(timeout_s: float) -> None:
        start = trio.current_time()
        with pytest.raises(DerivTimeout):
            await rpc.call({"ping": 1}, timeout_s=timeout_s)
        fired.append((timeout_s, trio.current_time() - start))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(rpc.run)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, 30.0)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, 2.0)  # earlier than the one the timer sleeps on
        await trio.sleep(40)
        assert fired == [(2.0, pytest.approx(2.0)), (30.0, pytest.approx(30.0))]
        assert rpc.pending_count == 0
        nursery.cancel_scope.cancel()


async def test_answered_calls_do_not_pile_up_in_the_deadline_heap(
    autojump_clock: MockClock,
) -> None:
    client_end, server_end = memory_pair()
    rpc = DerivRpc(client_end)

    async def echo() -> None:
        while True:
            request = decode(await server_end.get_message())
            await server_end.send_message(encode({"ping": "pong", "req_id": request["req_id"]}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(rpc.run)
        nursery.start_soon(echo)
        await trio.testing.wait_all_tasks_blocked()
        for _ in range(1_000):
            assert (await rpc.call({"ping": 1}, timeout_s=30.0))["ping"] == "pong"
        assert len(rpc._deadlines) <= 70
        nursery.cancel_scope.cancel()


async def test_cancelled_caller_leaves_no_pending_call(autojump_clock: MockClock) -> None:
    client_end, _silent_server = memory_pair()
    rpc = DerivRpc(client_end)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rpc.run)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(1):
            await rpc.call({"ping": 1}, timeout_s=30.0)
        assert rpc.pending_count == 0
        nursery.cancel_scope.cancel()
