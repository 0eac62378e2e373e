"""Operator routes over the actor runtime: list actors, read one actor's state."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from penpay.engine import Actor, ActorStatus, EngineError, EventSourcedActor
from penpay.http.params import ascii_int
from penpay.http.problems import FieldError, Problem
from penpay.http.responses import json_response
from penpay.http.services import Services

_LIMIT_MAX = 1000


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "100")
    limit = ascii_int(raw, 1, _LIMIT_MAX)
    if limit is None:
        raise Problem(
            422, "validation_failed", "limit must be an integer from 1 to 1000",
            errors=[FieldError("limit", f"got {raw!r}")],
        )
    return limit


async def list_actors(request: Request) -> Response:
    services: Services = request.app.state.services
    status = request.query_params.get("status")
    if status is not None and status not in set(ActorStatus):
        raise Problem(
            422, "validation_failed", f"unknown status {status!r}",
            errors=[FieldError("status", f"one of {', '.join(ActorStatus)}")],
        )
    actors = services.system.actors(
        kind=request.query_params.get("kind"), status=status, limit=_limit(request)
    )
    return json_response({"items": actors})


async def _has_history(services: Services, kind: type[Actor], key: str) -> bool:
    if not issubclass(kind, EventSourcedActor):
        return False
    journal = services.system.journal
    pid = f"{kind.kind}/{key}"
    try:
        return bool(await journal.load_snapshot(pid) or await journal.read_events(pid))
    except EngineError as exc:
        raise Problem(503, "service_unavailable", f"the journal cannot be read: {exc}") from exc


async def get_actor(request: Request) -> Response:
    services: Services = request.app.state.services
    kind_name = request.path_params["kind"]
    key = request.path_params["key"]
    kind = services.system.kinds.get(kind_name)
    if kind is None:
        raise Problem(404, "not_found", f"no actor kind named {kind_name!r}")
    info = services.system.info(kind, key)
    if info is not None and info.status is ActorStatus.FAILED:
        return json_response({"actor": info, "state": None})
    if info is None and not await _has_history(services, kind, key):
        # Never activate an actor for an arbitrary key: only live actors, or
        # ones with a journal to recover from, exist.
        raise Problem(404, "not_found", f"no actor {kind_name}/{key}")
    try:
        state = await services.system.inspect(kind, key)
    except EngineError as exc:
        raise Problem(503, "service_unavailable", f"{kind_name}/{key}: {exc}") from exc
    return json_response({"actor": services.system.info(kind, key), "state": state})
