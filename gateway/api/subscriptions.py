"""Create, list and delete subscriptions over HTTP."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from litestar import Controller, delete, get, post
from litestar.datastructures import State

from gateway.api.common import ApiError, jsonable, runtime
from gateway.config.checks import parse_duration
from gateway.config.templates import (
    TemplateCompileError,
    compile_expression,
    compile_tree,
)
from gateway.delivery.signing import generate_secret, secret_key
from gateway.ids import new_id
from gateway.store import queries

_FIELDS = {
    "url",
    "events",
    "secret",
    "filter",
    "template",
    "retry",
    "description",
    "headers",
    "timeout",
}


def _check_url(data: dict[str, Any], errors: list[dict[str, str]]) -> None:
    url = data.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        errors.append({"field": "url", "message": "must be an http:// or https:// URL"})


def _check_events(data: dict[str, Any], errors: list[dict[str, str]]) -> None:
    events = data.get("events")
    if isinstance(events, str):
        data["events"] = [events]
    elif not (
        isinstance(events, list)
        and events
        and all(isinstance(item, str) and item for item in events)
    ):
        errors.append(
            {"field": "events", "message": "must be a non-empty list of patterns"}
        )


def _check_secret(data: dict[str, Any], errors: list[dict[str, str]]) -> None:
    secret = data.get("secret")
    if secret is None:
        data["secret"] = generate_secret()
        return
    try:
        secret_key(secret if isinstance(secret, str) else "")
    except ValueError as exc:
        errors.append({"field": "secret", "message": str(exc)})


def _check_templates(data: dict[str, Any], errors: list[dict[str, str]]) -> None:
    if data.get("filter") is not None:
        if not isinstance(data["filter"], str):
            errors.append(
                {"field": "filter", "message": "must be an expression string"}
            )
        else:
            try:
                compile_expression(data["filter"])
            except TemplateCompileError as exc:
                errors.append(
                    {"field": "filter", "message": f"invalid expression: {exc}"}
                )
    if data.get("template") is not None:
        try:
            compile_tree(data["template"])
        except TemplateCompileError as exc:
            errors.append({"field": "template", "message": f"invalid template: {exc}"})


def _check_retry(
    data: dict[str, Any], defaults: dict[str, Any], errors: list[dict[str, str]]
) -> dict[str, Any]:
    retry = data.get("retry")
    if retry is None:
        return defaults["retry"]
    if not isinstance(retry, dict) or set(retry) - {"schedule", "jitter"}:
        errors.append(
            {"field": "retry", "message": "must be {schedule: [...], jitter: 0.2}"}
        )
        return defaults["retry"]
    try:
        schedule = [parse_duration(item) for item in retry.get("schedule", [])]
    except ValueError as exc:
        errors.append({"field": "retry.schedule", "message": str(exc)})
        schedule = []
    jitter = retry.get("jitter", defaults["retry"]["jitter"])
    if (
        isinstance(jitter, bool)
        or not isinstance(jitter, int | float)
        or not 0 <= jitter <= 1
    ):
        errors.append(
            {"field": "retry.jitter", "message": "must be a number from 0 to 1"}
        )
        jitter = 0.0
    if "schedule" not in retry:
        schedule = defaults["retry"]["schedule"]
    return {"schedule": schedule, "jitter": jitter}


def parse_subscription(data: Any, defaults: dict[str, Any]) -> dict[str, Any]:
    """Validate a subscribe request body and return the row to insert."""
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    errors: list[dict[str, str]] = []
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        errors.append({"field": ", ".join(unknown), "message": "unknown field"})
    data = dict(data)
    _check_url(data, errors)
    _check_events(data, errors)
    _check_secret(data, errors)
    _check_templates(data, errors)
    retry = _check_retry(data, defaults, errors)
    headers = data.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(v, str) for v in headers.values()
    ):
        errors.append(
            {"field": "headers", "message": "must map header names to strings"}
        )
    timeout = defaults["timeout"]
    if data.get("timeout") is not None:
        try:
            timeout = parse_duration(data["timeout"])
            if not 0 < timeout <= 300:
                raise ValueError("timeout must be between 1ms and 5m")
        except ValueError as exc:
            errors.append({"field": "timeout", "message": str(exc)})
    description = data.get("description") or ""
    if not isinstance(description, str):
        errors.append({"field": "description", "message": "must be a string"})
    if errors:
        raise ApiError(400, "invalid subscription", errors)
    return {
        "id": new_id("sub"),
        "url": data["url"],
        "events": data["events"],
        "secret": data["secret"],
        "filter": data.get("filter"),
        "template": data.get("template"),
        "headers": headers,
        "timeout": timeout,
        "retry": retry,
        "description": description,
    }


class SubscriptionController(Controller):
    path = "/api/notifications"
    tags = ("subscriptions",)

    @post("/subscribe", status_code=201)
    async def subscribe(self, state: State, data: Any) -> dict[str, Any]:
        """Create a subscription; a `whsec_` secret is generated when none is given."""
        mfo = runtime(state)
        defaults = mfo.config().defaults
        row = parse_subscription(
            data, {"timeout": defaults.timeout, "retry": defaults.retry.as_dict()}
        )
        async with mfo.db.connection() as conn:
            created = await queries.insert_subscription(conn, row)
        return jsonable(created)

    @get("/subscriptions")
    async def list_subscriptions(self, state: State) -> dict[str, Any]:
        async with runtime(state).db.connection() as conn:
            rows = await queries.list_subscriptions(conn)
        return {"subscriptions": [jsonable(row) for row in rows]}

    @get("/subscriptions/{sub_id:str}")
    async def get_subscription(self, state: State, sub_id: str) -> dict[str, Any]:
        async with runtime(state).db.connection() as conn:
            row = await queries.get_subscription(conn, sub_id)
        if row is None:
            raise ApiError(404, f"subscription {sub_id!r} not found")
        return jsonable(row)

    @delete("/subscriptions/{sub_id:str}", status_code=200)
    async def delete_subscription(self, state: State, sub_id: str) -> dict[str, Any]:
        async with runtime(state).db.connection() as conn:
            row = await queries.get_subscription(conn, sub_id)
            if row is None:
                raise ApiError(404, f"subscription {sub_id!r} not found")
            if row["source"] == "config":
                raise ApiError(
                    409,
                    f"subscription {sub_id!r} is declared in subscriptions.yaml;"
                    " remove it there and reload",
                )
            await queries.delete_subscription(conn, row["id"])
        return {"id": row["id"], "deleted": True}
