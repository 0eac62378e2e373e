"""A raw JSON client over one sandbox connection, for protocol-level tests."""

from __future__ import annotations

from typing import Any

from penpay.actors.deriv.transport import MessageConnection
from penpay.actors.deriv.wire import decode, encode


class Raw:
    def __init__(self, conn: MessageConnection) -> None:
        self.conn = conn

    async def send(self, message: dict[str, Any]) -> None:
        await self.conn.send_message(encode(message))

    async def recv(self) -> dict[str, Any]:
        return decode(await self.conn.get_message())

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.send(message)
        return await self.recv()

    async def ok(self, message: dict[str, Any]) -> dict[str, Any]:
        response = await self.call(message)
        assert "error" not in response, response
        return response

    async def error(self, message: dict[str, Any]) -> dict[str, Any]:
        response = await self.call(message)
        assert "error" in response, response
        error: dict[str, Any] = response["error"]
        return error
