"""Operator routes owned by identity: user status changes and the audit log."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from penpay.http.auth.body import read_json
from penpay.http.auth.guards import require_user
from penpay.http.params import ascii_int
from penpay.http.problems import FieldError, Problem
from penpay.http.responses import json_response
from penpay.storage.audit import PAGE_LIMIT_MAX, AuditEntry, AuditLog
from penpay.storage.identity import UserNotFound

if TYPE_CHECKING:
    from penpay.http.services import Services


class StatusBody(msgspec.Struct, forbid_unknown_fields=True):
    status: Literal["pending", "active", "suspended", "closed"]


def _audit(request: Request) -> AuditLog:
    services: Services = request.app.state.services
    if services.audit is None:
        raise Problem(503, "service_unavailable", "The audit log is not configured.")
    return services.audit


def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    value = ascii_int(raw, 0, maximum)
    if value is None:
        raise Problem(
            422, "validation_failed", f"{name} must be an integer from 0 to {maximum}",
            errors=[FieldError(name, f"got {raw!r}")],
        )  # fmt: skip
    return value


async def set_user_status(request: Request) -> Response:
    principal = await require_user(request, role="admin")
    services: Services = request.app.state.services
    if services.auth is None:
        raise Problem(503, "service_unavailable", "Identity is not configured.")
    try:
        user_id = uuid.UUID(request.path_params["id"])
    except ValueError:
        raise Problem(404, "not_found", "No such user.") from None
    body = await read_json(request, StatusBody)
    try:
        user = await services.auth.set_status(
            user_id, body.status, actor=f"user:{principal.user_id}"
        )
    except UserNotFound:
        raise Problem(404, "not_found", "No such user.") from None
    return json_response({"user_id": str(user.id), "status": user.status})


def _entry(entry: AuditEntry) -> dict[str, object]:
    return {
        "seq": entry.seq,
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "subject": entry.subject,
        "payload": entry.payload,
        "prev_hash": entry.prev_hash.hex(),
        "hash": entry.hash.hex(),
    }


async def list_audit(request: Request) -> Response:
    """``?cursor=<seq>&limit=``: entries after ``cursor`` in chain order."""
    await require_user(request, role="admin")
    after = _int_param(request, "cursor", 0, 2**62)
    limit = max(1, _int_param(request, "limit", 100, PAGE_LIMIT_MAX))
    entries = await _audit(request).page(after_seq=after, limit=limit)
    next_cursor = str(entries[-1].seq) if len(entries) == limit else None
    return json_response({"items": [_entry(e) for e in entries], "next_cursor": next_cursor})


async def verify_audit(request: Request) -> Response:
    await require_user(request, role="admin")
    return json_response(await _audit(request).verify())
