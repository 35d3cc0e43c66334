"""Turn compiled provider routes into Litestar route handlers.

A request passes, in order, the size limit, the route's handshakes (which
respond without storing anything), the signature or secret check over the
raw bytes, decompression and strict parsing, JSON Schema validation, the
idempotency key and the event rules. It is stored with its events in one
transaction before the response goes out. That response is 202 for a new
request, 200 with the original event ids for a duplicate, or the route's
`response:` template.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from litestar import Request, Response, route
from litestar.enums import HttpMethod
from litestar.handlers import HTTPRouteHandler

from gateway.config.model import GatewayConfig, RouteConfig
from gateway.config.templates import RenderError
from gateway.events import IngestResult, NewEvent, RequestBatcher, WorkQueue
from gateway.exceptions import IngressError, InvalidPayload, UnmappablePayload
from gateway.ids import new_id
from gateway.ingress.decode import decompress, parse_body, read_body, unstorable_value
from gateway.ingress.handshakes import answer_handshake
from gateway.ingress.request import WebhookRequest
from gateway.ingress.responses import (
    REDACTED,
    RenderedResponse,
    json_response,
    render_response,
    template_context,
)
from gateway.ingress.schemes import SignatureVerifier, build_verifier
from gateway.store.database import Database

logger = logging.getLogger(__name__)

# Dot-separated segments, none empty, so a template that renders "github."
# for a missing header is caught.
_EVENT_TYPE = re.compile(r"^(?=.{1,200}$)[A-Za-z0-9_:/-]+(?:\.[A-Za-z0-9_:/-]+)*$")
_MAX_IDEMPOTENCY_KEY = 512
_SECRET_HEADERS = ("authorization", "cookie", "proxy-authorization")


class IngressRuntime(Protocol):
    """The services a provider route uses at request time."""

    db: Database
    queue: WorkQueue
    batcher: RequestBatcher

    def config(self) -> GatewayConfig: ...


@dataclass(frozen=True)
class _CompiledRoute:
    config: RouteConfig
    verifier: SignatureVerifier
    secret_headers: frozenset[str]
    secret_query: frozenset[str]


def _secret_places(route_config: RouteConfig) -> tuple[set[str], set[str]]:
    """Return the header and query names that carry the route's secrets."""
    headers, query = set(_SECRET_HEADERS), set()
    specs = route_config.verify.parts or (route_config.verify,)
    for spec in specs:
        if spec.type in ("header_secret", "api_key") and spec.header:
            headers.add(spec.header.lower())
        if spec.type == "api_key" and spec.query:
            query.add(spec.query)
    return headers, query


def _stored_headers(
    headers: dict[str, str], secret_headers: frozenset[str]
) -> dict[str, str]:
    return {
        name: (REDACTED if name in secret_headers else value)
        for name, value in headers.items()
    }


def _load_payload(route_config: RouteConfig, request: WebhookRequest) -> Any:
    decode = route_config.decode
    limit = decode.max_decompressed_bytes or route_config.max_body_bytes
    body = decompress(request.body, request.header("content-encoding"), limit)
    return parse_body(body, request.header("content-type"), decode)


def _validate_payload(route_config: RouteConfig, payload: Any) -> None:
    if route_config.schema is None:
        return
    errors = route_config.schema.errors(payload)
    if errors:
        raise InvalidPayload(
            f"payload does not match schema {route_config.schema.path}", errors
        )


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
                f"event type rendered as {event_type[:100]!r}, which is not a valid"
                " event type; check the headers and fields its template uses"
            )
        problem = unstorable_value(data)
        if problem:
            raise UnmappablePayload(
                f"event {event_type} has {problem}, which PostgreSQL cannot store"
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
    if unstorable_value(key):
        raise InvalidPayload("idempotency key contains U+0000 or an unpaired surrogate")
    return key or None


def _answer(
    route_config: RouteConfig, result: IngestResult, context: dict[str, Any]
) -> RenderedResponse:
    """Build the response to a stored request: the route's template or the default."""
    body: dict[str, Any] = {
        "request_id": result.request_id,
        "event_id": result.event_ids[0] if result.event_ids else None,
        "event_ids": result.event_ids,
    }
    if result.duplicate:
        body["duplicate"] = True
    default = json_response(200 if result.duplicate else 202, body)
    if route_config.response is None:
        return default
    context = {**context, **body, "duplicate": result.duplicate}
    try:
        return render_response(route_config.response, context, default.status)
    except RenderError as exc:
        # The request is stored already, so the provider must still get a success.
        logger.warning(
            "ingress %s: response template failed, sent the default response: %s",
            route_config.qualified_name,
            exc,
        )
        return default


async def _accept(
    runtime: IngressRuntime, compiled: _CompiledRoute, request: Request[Any, Any, Any]
) -> tuple[RenderedResponse, str]:
    """Run one request through the route; return the response and a log summary."""
    route_config = compiled.config
    raw = await read_body(
        request.stream(),
        request.headers.get("content-length"),
        route_config.max_body_bytes,
    )
    incoming = WebhookRequest.from_litestar(request, raw)
    handshake = answer_handshake(
        route_config,
        compiled.verifier,
        incoming,
        lambda: _load_payload(route_config, incoming),
    )
    if handshake is not None:
        return handshake[1], f"handshake={handshake[0].name}"
    if incoming.method != route_config.method:
        raise InvalidPayload(
            f"{incoming.method} on this route is only for handshakes, and no"
            " handshake condition matched the request"
        )

    compiled.verifier.verify_request(incoming)
    payload = _load_payload(route_config, incoming)
    _validate_payload(route_config, payload)
    context = template_context(route_config, incoming, payload, compiled.secret_query)
    key = _idempotency_key(route_config, context)
    events = _map_events(route_config, context)
    # The batcher enqueues the jobs of new requests once they are committed.
    result = await _store(runtime, compiled, incoming, key, events)
    summary = f"request={result.request_id} events={','.join(result.event_ids) or '-'}"
    return _answer(route_config, result, context), summary


async def _store(
    runtime: IngressRuntime,
    compiled: _CompiledRoute,
    incoming: WebhookRequest,
    key: str | None,
    events: list[NewEvent],
) -> IngestResult:
    route_config = compiled.config
    request_row = {
        "id": new_id("req"),
        "provider": route_config.provider,
        "route": route_config.name,
        "method": incoming.method,
        "path": incoming.path,
        "headers": _stored_headers(dict(incoming.headers), compiled.secret_headers),
        "body": incoming.body,
        "remote_addr": incoming.client_host,
        "idempotency_key": key,
    }
    return await runtime.batcher.store(runtime.config(), request_row, events)


def build_route_handler(
    runtime: IngressRuntime, route_config: RouteConfig
) -> HTTPRouteHandler:
    """Create the Litestar handler for one configured route."""
    secret_headers, secret_query = _secret_places(route_config)
    compiled = _CompiledRoute(
        route_config,
        build_verifier(route_config.verify),
        frozenset(secret_headers),
        frozenset(secret_query),
    )

    async def receive_webhook(request: Request[Any, Any, Any]) -> Response[Any]:
        started = time.perf_counter()
        try:
            answer, summary = await _accept(runtime, compiled, request)
        except IngressError as exc:
            answer = json_response(
                exc.status_code, exc.as_body(), getattr(exc, "headers", {})
            )
            log = logger.warning if answer.status in (401, 403, 413) else logger.info
            log(
                "ingress %s %s rejected: %s",
                route_config.qualified_name,
                answer.status,
                exc.message,
            )
        else:
            logger.info(
                "ingress %s %s %s duration_ms=%.1f",
                route_config.qualified_name,
                answer.status,
                summary,
                (time.perf_counter() - started) * 1000,
            )
        return answer.to_litestar()

    return route(
        route_config.path,
        http_method=[HttpMethod(method) for method in route_config.methods],
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
