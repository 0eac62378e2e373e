"""Request bodies decoded into msgspec Structs, with problem+json on failure."""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec
from starlette.requests import Request

from penpay.http.problems import FieldError, Problem

T = TypeVar("T")

#: Identity bodies are tiny; anything bigger is refused before decoding.
BODY_BYTES_MAX = 16 * 1024
#: What msgspec raises for bytes that are not JSON it can read. A document
#: nested deeper than the interpreter's recursion limit (``[[[[…``) raises
#: RecursionError, not DecodeError: it is the client's fault all the same.
UNDECODABLE = (msgspec.DecodeError, RecursionError)
_PATH = re.compile(r"at `\$\.?([^`]*)`")


async def read_json(request: Request, kind: type[T]) -> T:
    """Decode the body as ``kind``: 413 if too large, 400 if not JSON, 422 if the wrong shape."""
    body = await request.body()
    if len(body) > BODY_BYTES_MAX:
        raise Problem(413, "payload_too_large", f"Bodies are limited to {BODY_BYTES_MAX} bytes.")
    try:
        msgspec.json.decode(body)
    except UNDECODABLE:
        raise _not_json() from None
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:  # a DecodeError subclass: must come first
        raise _invalid(exc) from None
    except UNDECODABLE:
        raise _not_json() from None


def _not_json() -> Problem:
    return Problem(400, "bad_request", "The body must be a JSON object.")


def _invalid(exc: msgspec.ValidationError) -> Problem:
    """422 naming the field msgspec complained about."""
    message = str(exc)
    match = _PATH.search(message)
    field = match.group(1) if match else ""
    if not field and message.startswith("Object missing required field"):
        field = message.split("`")[1]
    detail = message.split(" - at ")[0]
    return Problem(
        422, "validation_failed", "The body is not valid.",
        errors=[FieldError(field or "body", detail)],
    )  # fmt: skip
