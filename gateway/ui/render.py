"""Render the dashboard's Jinja templates into HTML responses."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from litestar import Request, Response

# Payloads and outputs longer than this are cut on the page; the API has them whole.
MAX_SHOWN_JSON = 256 * 1024

# The pages load only their own CSS and script, and may not be framed, so a
# page of another site cannot overlay the dashboard's buttons.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self';"
        " connect-src 'self'; form-action 'self'; frame-ancestors 'none';"
        " base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def _format_time(value: Any) -> str:
    if not isinstance(value, datetime):
        return "-" if value is None else str(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _format_age(value: Any) -> str:
    """Say how long ago a time was, such as `3m ago`, or `in 20s` for a future one."""
    if not isinstance(value, datetime):
        return ""
    seconds = (datetime.now(UTC) - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            amount = f"{int(seconds // size)}{unit}"
            break
    else:
        amount = f"{int(seconds)}s"
    return f"in {amount}" if future else f"{amount} ago"


def _pretty_json(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    if len(text) > MAX_SHOWN_JSON:
        return text[:MAX_SHOWN_JSON] + "\n… cut here; the API returns the whole value"
    return text


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _query(values: dict[str, Any], **changes: Any) -> str:
    """Build a query string from filter values, leaving out empty ones."""
    merged = {**values, **changes}
    return urlencode({k: v for k, v in merged.items() if v not in (None, "")})


environment = Environment(
    loader=PackageLoader("gateway.ui", "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
environment.filters.update(
    time=_format_time, age=_format_age, pretty=_pretty_json, percent=_percent
)
environment.globals["query"] = _query


def render(
    request: Request[Any, Any, Any],
    template: str,
    status_code: int = 200,
    **context: Any,
) -> Response[str]:
    """Render a template with the session's CSRF token and the current path."""
    html = environment.get_template(template).render(
        csrf_token=request.scope.get("mfo_csrf", ""),
        path=request.url.path,
        **context,
    )
    return Response(
        html,
        status_code=status_code,
        media_type="text/html",
        headers=SECURITY_HEADERS,
    )
