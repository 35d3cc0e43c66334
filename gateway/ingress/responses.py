"""Render the templated response of a route or handshake and the context it reads."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from litestar import Response

from gateway.config.model import ResponseConfig, RouteConfig
from gateway.config.templates import RenderError, TextTemplate
from gateway.exceptions import InvalidPayload
from gateway.ingress.request import WebhookRequest

REDACTED = "[redacted]"
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"
# Latin-1 without control characters, so a value cannot split a header.
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")
_BODYLESS_STATUSES = (204, 304)


@dataclass(frozen=True)
class RenderedResponse:
    """A status, headers and body ready to send."""

    status: int
    body: bytes = b""
    media_type: str = _JSON
    headers: dict[str, str] = field(default_factory=dict)

    def to_litestar(self) -> Response[bytes]:
        body = b"" if self.status in _BODYLESS_STATUSES else self.body
        # Litestar appends "; charset=utf-8" to a text/* media type even when it
        # has a charset, but keeps a Content-Type header given explicitly.
        headers = self.headers
        if self.status not in _BODYLESS_STATUSES:
            headers = {**headers, "content-type": self.media_type}
        return Response(
            content=body,
            status_code=self.status,
            media_type=self.media_type,
            headers=headers,
        )


def json_response(
    status: int, body: Any, headers: Mapping[str, str] = {}
) -> RenderedResponse:
    return RenderedResponse(status, json.dumps(body).encode(), _JSON, dict(headers))


def template_context(
    route: RouteConfig,
    request: WebhookRequest,
    payload: Any,
    hidden_query: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Build the names templates see: payload, headers, query, method, provider, route.

    Query parameters that carry a secret are replaced by `[redacted]`, so an
    event template cannot copy an API key into stored data.
    """
    try:
        query = request.query
    except ValueError:
        raise InvalidPayload("query string has too many parameters") from None
    query = {name: REDACTED if name in hidden_query else v for name, v in query.items()}
    return {
        "payload": payload,
        "headers": dict(request.headers),
        "query": query,
        "method": request.method,
        "provider": route.provider,
        "route": route.name,
    }


def render_response(
    config: ResponseConfig, context: Mapping[str, Any], default_status: int
) -> RenderedResponse:
    """Render a response template; raise RenderError when any part fails."""
    status = _render_status(config.status, context, default_status)
    headers = {name: _render_header(name, t, context) for name, t in config.headers}
    media_type = headers.pop("content-type", None)
    body = b""
    if isinstance(config.body, TextTemplate):
        body = config.body.render(context).encode("utf-8", "replace")
        media_type = media_type or _TEXT
    elif config.body is not None:
        value = config.body.render(context)
        try:
            body = json.dumps(value, allow_nan=False, ensure_ascii=False).encode(
                "utf-8", "replace"
            )
        except (TypeError, ValueError) as exc:
            raise RenderError(f"response body is not JSON: {exc}") from exc
        media_type = media_type or _JSON
    return RenderedResponse(status, body, media_type or _TEXT, headers)


def _render_status(
    status: int | TextTemplate | None, context: Mapping[str, Any], default: int
) -> int:
    if status is None:
        return default
    if isinstance(status, int):
        return status
    text = status.render(context).strip()
    if not text.isdigit() or not 200 <= int(text) <= 599:
        raise RenderError(
            f"status template {status.source!r} rendered {text[:20]!r}, not a status"
            " code from 200 to 599"
        )
    return int(text)


def _render_header(
    name: str, template: TextTemplate, context: Mapping[str, Any]
) -> str:
    value = template.render(context).strip()
    if not _HEADER_VALUE.match(value):
        raise RenderError(
            f"header {name!r} rendered a value with line breaks, control characters"
            " or characters outside Latin-1"
        )
    return value
