"""``BodyLimit`` refuses an oversized body with 413 before it is read into memory.

Each test counts the chunks the app pulls from the client: a ``Content-Length``
over the limit is refused before any, and a streamed body (no length) is cut
off at the first chunk past the limit, not read to its end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from penpay.http.body_limit import BodyLimit
from penpay.http.problems import PROBLEM_JSON, Problem, problem_handler

LIMIT = 1024
CALLBACK_LIMIT = 4 * LIMIT
CHUNK = b"x" * 256
CHUNKS = 1000  # 256 000 bytes offered, far past either limit


class Upload:
    """A request body of ``chunks`` chunks that counts how many were pulled."""

    def __init__(self, chunks: int = CHUNKS) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield CHUNK

    @property
    def size(self) -> int:
        return self.chunks * len(CHUNK)


async def echo_length(request: Request) -> Response:
    return JSONResponse({"received": len(await request.body())})


def app() -> BodyLimit:
    """A Starlette app whose routes read the whole body, behind ``BodyLimit``."""
    inner = Starlette(
        routes=[Route("/{path:path}", echo_length, methods=["POST"])],
        exception_handlers={Problem: problem_handler},
    )
    return BodyLimit(inner, LIMIT, {"/callbacks/": CALLBACK_LIMIT})


async def post(
    asgi: BodyLimit | None, path: str, upload: Upload, *, declare_length: bool
) -> httpx.Response:
    headers = {"Content-Length": str(upload.size)} if declare_length else {}
    transport = httpx.ASGITransport(app=asgi or app())
    async with httpx.AsyncClient(transport=transport, base_url="http://penpay") as client:
        return await client.post(path, content=upload, headers=headers)


def assert_413(answer: httpx.Response, limit: int) -> None:
    assert answer.status_code == 413, answer.text
    assert answer.headers["content-type"] == PROBLEM_JSON
    body = answer.json()
    assert (body["code"], body["status"]) == ("payload_too_large", 413)
    assert str(limit) in body["detail"]


async def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    upload = Upload()
    answer = await post(None, "/auth/login", upload, declare_length=True)
    assert_413(answer, LIMIT)
    assert upload.pulled == 0


async def test_a_streamed_body_is_cut_off_at_the_limit() -> None:
    upload = Upload()
    answer = await post(None, "/auth/login", upload, declare_length=False)
    assert_413(answer, LIMIT)
    assert upload.pulled == LIMIT // len(CHUNK) + 1  # the chunk that crossed it, no more


async def test_a_body_within_the_limit_reaches_the_app() -> None:
    for declare_length in (True, False):
        upload = Upload(LIMIT // len(CHUNK))
        answer = await post(None, "/auth/login", upload, declare_length=declare_length)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"received": LIMIT}


async def test_a_path_prefix_has_its_own_limit() -> None:
    upload = Upload(CALLBACK_LIMIT // len(CHUNK))
    answer = await post(None, "/callbacks/mpesa/stk/t", upload, declare_length=False)
    assert answer.json() == {"received": CALLBACK_LIMIT}
    default = await post(None, "/auth/login", Upload(CALLBACK_LIMIT // len(CHUNK)),
                         declare_length=False)  # fmt: skip
    assert_413(default, LIMIT)
    over = Upload()
    assert_413(await post(None, "/callbacks/x", over, declare_length=True), CALLBACK_LIMIT)
    assert over.pulled == 0


async def test_a_reader_outside_starlette_handlers_still_gets_413() -> None:
    """A bare ASGI app reading ``receive`` itself: the middleware answers for it."""

    async def drain(scope: Scope, receive: Receive, send: Send) -> None:
        while (await receive()).get("more_body", False):
            pass
        await JSONResponse({"read": "all"})(scope, receive, send)

    upload = Upload()
    answer = await post(BodyLimit(drain, LIMIT), "/anything", upload, declare_length=False)
    assert_413(answer, LIMIT)
    assert upload.pulled == LIMIT // len(CHUNK) + 1


def test_the_longest_matching_prefix_wins() -> None:
    limit = BodyLimit(app(), 1, {"/a/": 2, "/a/b/": 3})
    assert [limit.limit_for(p) for p in ("/x", "/a/x", "/a/b/x")] == [1, 2, 3]
