"""Turn compiled provider routes into Litestar route handlers.

A request passes, in order: size limit, decompression, signature check over
the raw bytes, parsing, JSON Schema validation, the idempotency key and the
event rules. It is stored with its events before the 202 goes out.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from litestar import Request, Response, route
from litestar.handlers import HTTPRouteHandler

from gateway.config.model import GatewayConfig, RouteConfig
from gateway.config.templates import RenderError
from gateway.events import NewEvent, WorkQueue, store_request
from gateway.exceptions import IngressError, InvalidPayload, UnmappablePayload
from gateway.ids import new_id
from gateway.ingress.decode import decompress, parse_body, read_body
from gateway.ingress.verify import SignatureVerifier, build_verifier
from gateway.store.database import Database

logger = logging.getLogger(__name__)

_EVENT_TYPE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,199}$")
_MAX_IDEMPOTENCY_KEY = 512
_REDACTED = "[redacted]"


class IngressRuntime(Protocol):
    """The services a provider route uses at request time."""

    db: Database
    queue: WorkQueue

    def config(self) -> GatewayConfig: ...


@dataclass(frozen=True)
class _CompiledRoute:
    config: RouteConfig
    verifier: SignatureVerifier
    secret_headers: frozenset[str]


def _request_headers(request: Request[Any, Any, Any]) -> dict[str, str]:
    return {name.lower(): value for name, value in request.headers.items()}


def _stored_headers(
    headers: dict[str, str], secret_headers: frozenset[str]
) -> dict[str, str]:
    return {
        name: (_REDACTED if name in secret_headers else value)
        for name, value in headers.items()
    }


def _map_events(route_config: RouteConfig, context: dict[str, Any]) -> list[NewEvent]:
    events = []
    for rule in route_config.events:
        try:
            if rule.when is not None and not rule.when.test(context):
                continue
            event_type = rule.type.render(context).strip()
            data = rule.data.render(context) if rule.data else context["payload"]
        except RenderError as exc:
            raise UnmappablePayload(
                f"event rule at line {rule.location.line}: {exc}"
            ) from None
        if not _EVENT_TYPE.match(event_type):
            raise UnmappablePayload(
                f"event type rendered as {event_type!r}, which is not a valid event type;"
                " check the headers and fields the route's type template uses"
            )
        events.append(NewEvent(event_type, data))
    return events


def _idempotency_key(route_config: RouteConfig, context: dict[str, Any]) -> str | None:
    if route_config.idempotency_key is None:
        return None
    try:
        key = route_config.idempotency_key.render(context).strip()
    except RenderError as exc:
        raise UnmappablePayload(f"idempotency key: {exc}") from None
    if len(key) > _MAX_IDEMPOTENCY_KEY:
        raise InvalidPayload(
            f"idempotency key is longer than {_MAX_IDEMPOTENCY_KEY} characters"
        )
    return key or None


async def _accept(
    runtime: IngressRuntime, compiled: _CompiledRoute, request: Request[Any, Any, Any]
) -> tuple[int, dict[str, Any]]:
    route_config = compiled.config
    headers = _request_headers(request)
    raw = await read_body(
        request.stream(), headers.get("content-length"), route_config.max_body_bytes
    )
    compiled.verifier.verify(raw, headers)
    body = decompress(raw, headers.get("content-encoding"), route_config.max_body_bytes)
    payload = parse_body(body, headers.get("content-type"))
    if route_config.schema is not None:
        errors = route_config.schema.errors(payload)
        if errors:
            raise InvalidPayload(
                f"payload does not match schema {route_config.schema.path}", errors
            )

    context = {
        "payload": payload,
        "headers": headers,
        "query": dict(request.query_params),
        "provider": route_config.provider,
        "route": route_config.name,
    }
    key = _idempotency_key(route_config, context)
    events = _map_events(route_config, context)
    request_row = {
        "id": new_id("req"),
        "provider": route_config.provider,
        "route": route_config.name,
        "method": request.method,
        "path": request.url.path,
        "headers": _stored_headers(headers, compiled.secret_headers),
        "body": raw,
        "remote_addr": request.client.host if request.client else None,
        "idempotency_key": key,
    }
    result = await store_request(runtime.db, runtime.config(), request_row, events)
    body_out: dict[str, Any] = {
        "request_id": result.request_id,
        "event_id": result.event_ids[0] if result.event_ids else None,
        "event_ids": result.event_ids,
    }
    if result.duplicate:
        return 200, {**body_out, "duplicate": True}
    await runtime.queue.enqueue_work(result.work)
    return 202, body_out


def build_route_handler(
    runtime: IngressRuntime, route_config: RouteConfig
) -> HTTPRouteHandler:
    """Create the Litestar handler for one configured route."""
    secret_headers = {"authorization", "cookie"}
    if route_config.verify.type == "header_secret" and route_config.verify.header:
        secret_headers.add(route_config.verify.header.lower())
    compiled = _CompiledRoute(
        route_config, build_verifier(route_config.verify), frozenset(secret_headers)
    )

    async def receive_webhook(request: Request[Any, Any, Any]) -> Response[Any]:
        started = time.perf_counter()
        try:
            status, body = await _accept(runtime, compiled, request)
        except IngressError as exc:
            status, body = exc.status_code, exc.as_body()
            log = logger.warning if status in (401, 413) else logger.info
            log(
                "ingress %s %s rejected: %s",
                route_config.qualified_name,
                status,
                exc.message,
            )
        else:
            logger.info(
                "ingress %s %s request=%s events=%s duration_ms=%.1f",
                route_config.qualified_name,
                status,
                body["request_id"],
                ",".join(body["event_ids"]) or "-",
                (time.perf_counter() - started) * 1000,
            )
        return Response(content=body, status_code=status, media_type="application/json")

    return route(
        route_config.path,
        http_method=[route_config.method],
        name=f"webhook:{route_config.qualified_name}",
        request_max_body_size=None,
        include_in_schema=True,
        summary=f"Receive {route_config.qualified_name} webhooks",
        tags=["webhooks"],
    )(receive_webhook)


def build_route_handlers(
    runtime: IngressRuntime, routes: Sequence[RouteConfig]
) -> list[HTTPRouteHandler]:
    return [build_route_handler(runtime, route_config) for route_config in routes]
