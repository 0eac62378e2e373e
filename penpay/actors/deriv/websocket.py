"""A lean RFC 6455 WebSocket over a trio stream, for the Deriv client and the sandbox.

Why not ``trio_websocket``: it writes every message with its own ``send()``
system call, so 100 callers multiplexed on one socket pay 100 system calls
(and 100 wake-ups of the peer) where one would do. Here a writer task drains
everything queued since it last ran into *one* ``send_all``, and a reader
task turns everything one ``receive_some`` returned into messages before
anyone is woken, so throughput grows with concurrency while a lone caller
still gets its frame written at once.

Scope (all Deriv needs): text and binary messages (binary is decoded as
UTF-8, as before), fragmentation on receive, ping/pong/close control frames,
client masking, no extensions, no subprotocols. The HTTP upgrade is done with
``h11``; ``ws://`` and ``wss://`` are supported on the client side.

The connection is a :class:`~penpay.actors.deriv.transport.MessageConnection`:

* ``send_message`` queues the frame and returns without waiting for the
  socket (it waits only when more than ``max_buffered_bytes`` are queued);
* ``get_message`` returns a queued message without yielding and parks only
  when none is queued; messages received before a close are still delivered,
  then :class:`TransportClosed` is raised;
* ``aclose`` sends a close frame and waits (bounded, shielded) for the peer's.
"""

from __future__ import annotations

import base64
import hashlib
import os
import ssl
import struct
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import trio

from penpay.actors.deriv.transport import TransportClosed

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""Largest message accepted (a bigger one closes the connection with 1009)."""
MAX_BUFFERED_BYTES = 1024 * 1024
"""Queued outgoing bytes above which ``send_message`` waits for the socket."""
MAX_QUEUED_MESSAGES = 4096
"""Received messages not yet taken by ``get_message`` above which reading pauses."""
RECEIVE_BYTES = 256 * 1024
HANDSHAKE_BYTES_MAX = 64 * 1024

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_U16 = struct.Struct("!H")
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


class ProtocolError(Exception):
    """The peer broke RFC 6455; ``code`` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class HandshakeFailed(Exception):
    """The HTTP upgrade did not produce a WebSocket (``status`` when the server answered)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


# -- frames -----------------------------------------------------------------


def _xor(payload: bytes, key: bytes) -> bytes:
    """Mask or unmask ``payload`` with the 4-byte ``key`` (the operation is its own inverse)."""
    n = len(payload)
    if n == 0:
        return payload
    stream = (key * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        n, "little"
    )


class _MaskKeys:
    """Masking keys from the OS's CSPRNG, drawn 4 KiB at a time (one system call per 1024)."""

    def __init__(self) -> None:
        self._pool = b""
        self._pos = 0

    def next(self) -> bytes:
        pos = self._pos
        if pos >= len(self._pool):
            self._pool = os.urandom(4096)
            pos = 0
        self._pos = pos + 4
        return self._pool[pos : pos + 4]


_mask_keys = _MaskKeys()


def encode_frame(opcode: int, payload: bytes, *, mask: bool) -> bytes:
    """One final frame; clients must ``mask``, servers must not."""
    n = len(payload)
    first = 0x80 | opcode
    bit = 0x80 if mask else 0
    if n < 126:
        header = bytes((first, bit | n))
    elif n < 0x10000:
        header = _HEADER_16.pack(first, bit | 126, n)
    else:
        header = _HEADER_64.pack(first, bit | 127, n)
    if not mask:
        return header + payload
    key = _mask_keys.next()
    return header + key + _xor(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    if code in (CLOSE_NO_STATUS, CLOSE_ABNORMAL):
        return b""
    return _U16.pack(code) + reason.encode("utf-8")[:123]


class FrameReader:
    """Incremental frame parser; :meth:`feed` returns whole messages and control frames.

    Data messages come back assembled (opcode ``OP_TEXT`` or ``OP_BINARY``)
    whatever their fragmentation; control frames come back as they arrive,
    even between the fragments of a message. Violations raise
    :class:`ProtocolError` with the close code to send.
    """

    def __init__(self, *, expect_masked: bool, max_message_bytes: int = MAX_MESSAGE_BYTES):
        self._buffer = bytearray()
        self._expect_masked = expect_masked
        self._max = max_message_bytes
        self._fragments: list[bytes] = []
        self._fragment_opcode = 0
        self._fragment_bytes = 0

    def feed(self, data: bytes | bytearray) -> list[tuple[int, bytes]]:
        buf = self._buffer
        buf += data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(buf)
        expect_masked = self._expect_masked
        while end - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            if b0 & 0x70:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, "reserved bits set")
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            n = b1 & 0x7F
            header = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                header = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                header = 10
            if bool(b1 & 0x80) != expect_masked:
                raise ProtocolError(
                    CLOSE_PROTOCOL_ERROR,
                    "client frames must be masked" if expect_masked else "server frame is masked",
                )
            if opcode >= 8:
                if not fin or n > 125:
                    raise ProtocolError(CLOSE_PROTOCOL_ERROR, "bad control frame")
                if opcode > OP_PONG:
                    raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
            elif n + self._fragment_bytes > self._max:
                raise ProtocolError(CLOSE_TOO_BIG, f"message larger than {self._max} bytes")
            start = pos + header + (4 if expect_masked else 0)
            stop = start + n
            if stop > end:
                break
            payload = bytes(buf[start:stop])
            if expect_masked:
                payload = _xor(payload, bytes(buf[start - 4 : start]))
            pos = stop
            if opcode >= 8:
                out.append((opcode, payload))
            elif opcode == OP_CONTINUATION:
                if not self._fragment_opcode:
                    raise ProtocolError(CLOSE_PROTOCOL_ERROR, "continuation without a message")
                self._fragments.append(payload)
                self._fragment_bytes += n
                if fin:
                    out.append((self._fragment_opcode, b"".join(self._fragments)))
                    self._fragments = []
                    self._fragment_opcode = 0
                    self._fragment_bytes = 0
            elif opcode in (OP_TEXT, OP_BINARY):
                if self._fragment_opcode:
                    raise ProtocolError(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
                if fin:
                    out.append((opcode, payload))
                else:
                    self._fragment_opcode = opcode
                    self._fragments = [payload]
                    self._fragment_bytes = n
            else:
                raise ProtocolError(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if pos:
            del buf[:pos]
        return out


def _parse_close(payload: bytes) -> tuple[int, str]:
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise ProtocolError(CLOSE_PROTOCOL_ERROR, "one-byte close payload")
    (code,) = _U16.unpack_from(payload)
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None
    return code, reason


# -- the connection -------------------------------------------------------------


class WebSocketConnection:
    """One open WebSocket; see the module docstring. Made by :func:`open_websocket`."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        client: bool,
        initial: bytes = b"",
        close_timeout_s: float = 1.0,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
    ) -> None:
        self._stream = stream
        self._mask = client
        self._frames = FrameReader(expect_masked=not client, max_message_bytes=max_message_bytes)
        self._initial = bytes(initial)
        self._close_timeout_s = close_timeout_s
        self._max_buffered = max_buffered_bytes
        self._inbox: deque[str] = deque()
        self._inbox_lot = trio.lowlevel.ParkingLot()
        self._room_lot = trio.lowlevel.ParkingLot()
        self._out: list[bytes] = []
        self._out_bytes = 0
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._drained_lot = trio.lowlevel.ParkingLot()
        self._state_lot = trio.lowlevel.ParkingLot()
        self._send_lock = trio.Lock()
        self._reading = False
        self._close_sent = False
        self._peer_closed = False
        self._eof = False
        self._stream_closed = False
        self.closed_reason: str | None = None
        """Why no more messages will arrive (set once)."""
        self.close_code: int | None = None
        self.writes = 0
        """``send_all`` calls made (a write carries every frame queued since the last)."""
        self.frames_sent = 0

    # -- MessageConnection --------------------------------------------------

    async def send_message(self, message: str) -> None:
        if self._close_sent or self.closed_reason is not None:
            raise TransportClosed(self.closed_reason or "websocket closing")
        self._queue(encode_frame(OP_TEXT, message.encode("utf-8"), mask=self._mask))
        while self._out_bytes > self._max_buffered and self.closed_reason is None:
            await self._drained_lot.park()
        if self.closed_reason is not None and self._out_bytes > self._max_buffered:
            raise TransportClosed(self.closed_reason)

    def send_nowait(self, message: str) -> bool:
        """Queue ``message`` unless over ``max_buffered_bytes`` (then False: await a send)."""
        if self._close_sent or self.closed_reason is not None:
            raise TransportClosed(self.closed_reason or "websocket closing")
        if self._out_bytes > self._max_buffered:
            return False
        self._queue(encode_frame(OP_TEXT, message.encode("utf-8"), mask=self._mask))
        return True

    async def get_message(self) -> str:
        inbox = self._inbox
        while not inbox:
            if self.closed_reason is not None:
                raise TransportClosed(self.closed_reason)
            await self._inbox_lot.park()
        message = inbox.popleft()
        if self._room_lot and len(inbox) < MAX_QUEUED_MESSAGES // 2:
            self._room_lot.unpark_all()
        return message

    async def aclose(self) -> None:
        """Close handshake, bounded by ``close_timeout_s`` and shielded; idempotent."""
        if self._stream_closed:
            return
        with trio.move_on_after(self._close_timeout_s) as scope:
            scope.shield = True
            if not self._close_sent and not self._eof:
                self._send_close(CLOSE_NORMAL, "")
            await self._flush()
            await self._await_peer_close()
        self._finish(CLOSE_NORMAL, "websocket closed: 1000 closed by this side")
        await self._close_stream()

    # -- sending ------------------------------------------------------------

    def _queue(self, frame: bytes) -> None:
        self._out.append(frame)
        self._out_bytes += len(frame)
        if self._writer_lot:
            self._writer_lot.unpark()

    def _send_close(self, code: int, reason: str) -> None:
        if self._close_sent:
            return
        self._queue(encode_frame(OP_CLOSE, close_payload(code, reason), mask=self._mask))
        self._close_sent = True

    async def _flush(self) -> None:
        """Write everything queued (one ``send_all`` per batch); errors end the connection."""
        async with self._send_lock:
            while self._out and not self._stream_closed:
                frames = self._out
                self._out = []
                self._out_bytes = 0
                data = frames[0] if len(frames) == 1 else b"".join(frames)
                self.writes += 1
                self.frames_sent += len(frames)
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    self._out = []
                    self._out_bytes = 0
                    self._lost(f"websocket lost while sending: {exc!r}")
                finally:
                    if self._drained_lot and self._out_bytes <= self._max_buffered:
                        self._drained_lot.unpark_all()

    async def _writer(self) -> None:
        while not self._stream_closed:
            if not self._out:
                await self._writer_lot.park()
                continue
            await self._flush()

    # -- receiving ----------------------------------------------------------

    async def _reader(self) -> None:
        self._reading = True
        try:
            if self._initial:
                initial, self._initial = self._initial, b""
                self._received(initial)
            while not self._peer_closed and not self._eof and not self._stream_closed:
                while len(self._inbox) >= MAX_QUEUED_MESSAGES and self.closed_reason is None:
                    await self._room_lot.park()
                try:
                    data = await self._stream.receive_some(RECEIVE_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    self._lost(f"websocket lost: {exc!r}")
                    return
                if not data:
                    self._eof = True
                    self._lost("websocket closed: 1006 connection dropped without a close frame")
                    return
                self._received(data)
        finally:
            self._reading = False
            self._state_lot.unpark_all()

    def _received(self, data: bytes | bytearray) -> None:
        try:
            frames = self._frames.feed(data)
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        inbox = self._inbox
        delivered = False
        for opcode, payload in frames:
            if opcode in (OP_TEXT, OP_BINARY):
                if self.closed_reason is not None:
                    continue  # after our close or an error, data is discarded
                try:
                    inbox.append(payload.decode("utf-8"))
                except UnicodeDecodeError:
                    self._protocol_error(ProtocolError(CLOSE_INVALID_DATA, "message is not UTF-8"))
                    break
                delivered = True
            elif opcode == OP_PING:
                if not self._close_sent:
                    self._queue(encode_frame(OP_PONG, payload, mask=self._mask))
            elif opcode == OP_CLOSE:
                self._peer_closed = True
                try:
                    code, reason = _parse_close(payload)
                except ProtocolError as exc:
                    self._protocol_error(exc)
                    break
                self._send_close(code if code != CLOSE_NO_STATUS else CLOSE_NORMAL, "")
                self._finish(code, f"websocket closed: {code} {reason}".rstrip())
                break
        if delivered and self._inbox_lot:
            self._inbox_lot.unpark_all()

    async def _await_peer_close(self) -> None:
        """Until the peer's close frame or EOF, reading here once the reader task is gone."""
        while not self._peer_closed and not self._eof and not self._stream_closed:
            if self._reading:
                await self._state_lot.park()
                continue
            try:
                data = await self._stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            if not data:
                self._eof = True
                return
            try:
                frames = self._frames.feed(data)
            except ProtocolError:
                return
            if any(opcode == OP_CLOSE for opcode, _ in frames):
                self._peer_closed = True

    # -- state --------------------------------------------------------------

    def _protocol_error(self, exc: ProtocolError) -> None:
        self._send_close(exc.code, exc.reason)
        self._finish(exc.code, f"websocket closed: {exc.code} {exc.reason}")
        self._peer_closed = True  # stop reading: nothing more is trusted

    def _lost(self, reason: str) -> None:
        self._eof = True
        self._finish(CLOSE_ABNORMAL, reason)

    def _finish(self, code: int, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self.close_code = code
        self._inbox_lot.unpark_all()
        self._drained_lot.unpark_all()
        self._room_lot.unpark_all()
        self._state_lot.unpark_all()

    async def _close_stream(self) -> None:
        if self._stream_closed:
            return
        self._stream_closed = True
        self._writer_lot.unpark_all()
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(self._stream)


@asynccontextmanager
async def open_websocket(
    stream: trio.abc.Stream,
    *,
    client: bool,
    initial: bytes = b"",
    close_timeout_s: float = 1.0,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    max_buffered_bytes: int = MAX_BUFFERED_BYTES,
) -> AsyncIterator[WebSocketConnection]:
    """Run an upgraded ``stream`` as a WebSocket for the ``async with``; closes it on exit.

    ``initial`` holds bytes already read past the HTTP handshake.
    """
    ws = WebSocketConnection(
        stream,
        client=client,
        initial=initial,
        close_timeout_s=close_timeout_s,
        max_message_bytes=max_message_bytes,
        max_buffered_bytes=max_buffered_bytes,
    )
    raised: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws._reader)
            nursery.start_soon(ws._writer)
            try:
                yield ws
            except BaseException as exc:
                raised = exc  # re-raised below as itself, not wrapped in an ExceptionGroup
            finally:
                await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await ws._close_stream()
    if raised is not None:
        raise raised


# -- the HTTP upgrade -----------------------------------------------------------


def accept_token(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def _tokens(value: bytes | None) -> set[bytes]:
    return {t.strip().lower() for t in value.split(b",")} if value else set()


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> object:
    received = 0
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await stream.receive_some(16_384)
        received += len(data)
        if received > HANDSHAKE_BYTES_MAX:
            raise HandshakeFailed("handshake too large")
        conn.receive_data(bytes(data))


async def client_handshake(stream: trio.abc.Stream, host: str, target: str) -> bytes:
    """Upgrade ``stream``; returns any bytes the server sent after its 101 answer."""
    conn = h11.Connection(h11.CLIENT)
    key = base64.b64encode(os.urandom(16))
    request = h11.Request(
        method="GET",
        target=target,
        headers=[
            (b"Host", host.encode("idna")),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Key", key),
            (b"Sec-WebSocket-Version", b"13"),
        ],
    )
    await stream.send_all(conn.send(request))
    try:
        event = await _next_event(conn, stream)
    except h11.RemoteProtocolError as exc:
        raise HandshakeFailed(f"bad HTTP answer: {exc}") from None
    if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
        headers = list(event.headers)
        if b"websocket" not in _tokens(_header(headers, b"upgrade")):
            raise HandshakeFailed("101 without Upgrade: websocket", 101)
        if _header(headers, b"sec-websocket-accept") != accept_token(key):
            raise HandshakeFailed("bad Sec-WebSocket-Accept", 101)
        if _header(headers, b"sec-websocket-extensions"):
            raise HandshakeFailed("server chose an extension that was not offered", 101)
        return bytes(conn.trailing_data[0])
    if isinstance(event, h11.Response | h11.InformationalResponse):
        raise HandshakeFailed(
            f"server refused the upgrade: HTTP {event.status_code}", event.status_code
        )
    raise HandshakeFailed(f"no HTTP answer ({type(event).__name__})")


@dataclass(frozen=True)
class UpgradeRequest:
    """A WebSocket upgrade request as the server received it."""

    target: str
    headers: list[tuple[bytes, bytes]]
    key: bytes


async def server_read_request(stream: trio.abc.Stream) -> tuple[h11.Connection, UpgradeRequest]:
    """Read and check the upgrade request; :class:`HandshakeFailed` (after a 400) if not one."""
    conn = h11.Connection(h11.SERVER)
    try:
        event = await _next_event(conn, stream)
    except h11.RemoteProtocolError as exc:
        raise HandshakeFailed(f"bad HTTP request: {exc}") from None
    if not isinstance(event, h11.Request):
        raise HandshakeFailed("no HTTP request")
    headers = list(event.headers)
    key = _header(headers, b"sec-websocket-key")
    if (
        event.method != b"GET"
        or b"websocket" not in _tokens(_header(headers, b"upgrade"))
        or b"upgrade" not in _tokens(_header(headers, b"connection"))
        or _header(headers, b"sec-websocket-version") != b"13"
        or key is None
    ):
        await server_reject(stream, conn, 400, b"not a WebSocket upgrade")
        raise HandshakeFailed("not a WebSocket upgrade", 400)
    return conn, UpgradeRequest(event.target.decode("ascii", "replace"), headers, key)


async def server_accept(
    stream: trio.abc.Stream, conn: h11.Connection, request: UpgradeRequest
) -> bytes:
    """Answer 101; returns any bytes the client sent after its request."""
    answer = h11.InformationalResponse(
        status_code=101,
        headers=[
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Accept", accept_token(request.key)),
        ],
    )
    await stream.send_all(conn.send(answer))
    return bytes(conn.trailing_data[0])


async def server_reject(
    stream: trio.abc.Stream, conn: h11.Connection, status: int, body: bytes
) -> None:
    response = h11.Response(
        status_code=status,
        headers=[("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    await stream.send_all(conn.send(response) + conn.send(h11.Data(data=body)))
    await stream.send_all(conn.send(h11.EndOfMessage()))


@asynccontextmanager
async def connect_websocket(
    url: str, *, connect_timeout_s: float = 10.0, close_timeout_s: float = 1.0
) -> AsyncIterator[WebSocketConnection]:
    """Open ``ws://`` or ``wss://`` ``url`` for the ``async with``.

    Raises :class:`TransportClosed` if the connection or the upgrade fails.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise TransportClosed(f"cannot connect to {url}: not a ws:// or wss:// URL")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    stream: trio.abc.Stream | None = None
    try:
        with trio.fail_after(connect_timeout_s):
            tcp = await trio.open_tcp_stream(parts.hostname, port)
            stream = tcp
            if secure:
                tls = trio.SSLStream(
                    tcp, ssl.create_default_context(), server_hostname=parts.hostname
                )
                stream = tls
                await tls.do_handshake()
            initial = await client_handshake(stream, host, target)
    except (OSError, trio.TooSlowError, trio.BrokenResourceError, HandshakeFailed) as exc:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        raise TransportClosed(f"cannot connect to {url}: {exc!r}") from None
    except BaseException:
        if stream is not None:
            await trio.aclose_forcefully(stream)
        raise
    async with open_websocket(
        stream, client=True, initial=initial, close_timeout_s=close_timeout_s
    ) as ws:
        yield ws
