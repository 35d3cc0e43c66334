"""Create, list, delete, pause, resume and re-key subscriptions over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from litestar import Controller, delete, get, post
from litestar.datastructures import State

from gateway.api.common import ApiError, jsonable, runtime
from gateway.config.checks import header_problem, parse_duration, url_problem
from gateway.config.model import DeliveryDefaults
from gateway.config.subscriptions import (
    build_retry_policy,
    parse_disable_after,
    parse_max_in_flight,
    parse_rate_limit,
    parse_timeout,
)
from gateway.config.templates import (
    TemplateCompileError,
    compile_expression,
    compile_tree,
)
from gateway.delivery.egress import EgressPolicy, check_literal_target, egress_policy
from gateway.delivery.signing import generate_secret, secret_key
from gateway.events import DELIVER_JOB, DELIVERIES_PER_JOB, Work, new_tag
from gateway.exceptions import EgressRejected
from gateway.ids import new_id
from gateway.store import deliveries, queries

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
    "connect_timeout",
    "max_in_flight",
    "rate_limit",
    "disable_after",
}
# Grace periods of a secret rotation: the old secret signs for at most 30 days.
DEFAULT_ROTATION_GRACE = 24 * 3600.0
MAX_ROTATION_GRACE = 30 * 86400.0
# Resuming enqueues this many held deliveries at once; the sweep sends the rest.
_RESUME_PAGE = 500
_RESUME_MAX = 10_000

Errors = list[dict[str, str]]


def _check_url(data: dict[str, Any], policy: EgressPolicy, errors: Errors) -> None:
    url = data.get("url")
    problem = url_problem(url) if isinstance(url, str) else "is missing or not a string"
    if problem is not None:
        errors.append(
            {"field": "url", "message": f"{problem}; send an http:// or https:// URL"}
        )
        return
    try:
        check_literal_target(url, policy)
    except EgressRejected as exc:
        errors.append({"field": "url", "message": str(exc)})


MAX_PATTERNS = 100


def _check_events(data: dict[str, Any], errors: Errors) -> None:
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
    elif len(events) > MAX_PATTERNS or any(len(item) > 200 for item in events):
        errors.append(
            {
                "field": "events",
                "message": f"give at most {MAX_PATTERNS} patterns of up to 200 characters",
            }
        )


def _check_secret(data: dict[str, Any], errors: Errors) -> None:
    secret = data.get("secret")
    if secret is None:
        data["secret"] = generate_secret()
        return
    try:
        secret_key(secret if isinstance(secret, str) else "")
    except ValueError as exc:
        errors.append({"field": "secret", "message": str(exc)})


def _check_templates(data: dict[str, Any], errors: Errors) -> None:
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


def _setting(
    data: dict[str, Any],
    key: str,
    parse: Callable[[Any], Any],
    default: Any,
    errors: Errors,
) -> Any:
    if key not in data:
        return default
    try:
        return parse(data[key])
    except ValueError as exc:
        errors.append({"field": key, "message": str(exc)})
        return default


def _check_settings(
    data: dict[str, Any], defaults: DeliveryDefaults, errors: Errors
) -> dict[str, Any]:
    """Read the delivery settings, with the same meaning as in subscriptions.yaml."""

    def report(path: str, message: str, container: Any, key: str | int) -> None:
        errors.append({"field": path, "message": message})

    retry = defaults.retry
    if data.get("retry") is not None:
        retry = build_retry_policy(data, "retry", defaults.retry, "retry", report)
    return {
        "timeout": _setting(data, "timeout", parse_timeout, defaults.timeout, errors),
        "connect_timeout": _setting(
            data, "connect_timeout", parse_timeout, defaults.connect_timeout, errors
        ),
        "retry": retry.as_dict(),
        "max_in_flight": _setting(
            data, "max_in_flight", parse_max_in_flight, defaults.max_in_flight, errors
        ),
        "rate_limit": _setting(
            data, "rate_limit", parse_rate_limit, defaults.rate_limit, errors
        ),
        "disable_after": _setting(
            data, "disable_after", parse_disable_after, defaults.disable_after, errors
        ),
    }


def parse_subscription(
    data: Any, defaults: DeliveryDefaults, policy: EgressPolicy
) -> dict[str, Any]:
    """Validate a subscribe request body and return the row to insert."""
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    errors: Errors = []
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        errors.append({"field": ", ".join(unknown), "message": "unknown field"})
    data = dict(data)
    _check_url(data, policy, errors)
    _check_events(data, errors)
    _check_secret(data, errors)
    _check_templates(data, errors)
    settings = _check_settings(data, defaults, errors)
    headers = data.get("headers") or {}
    if not isinstance(headers, dict) or not all(
        isinstance(v, str) for v in headers.values()
    ):
        errors.append(
            {"field": "headers", "message": "must map header names to strings"}
        )
    else:
        for name, value in headers.items():
            problem = header_problem(name, value)
            if problem is not None:
                errors.append({"field": "headers", "message": problem})
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
        "description": description,
        **settings,
    }


def _parse_rotation(data: Any) -> tuple[str, float]:
    """Read a rotation body: an optional new `secret` and a `grace` duration."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    unknown = sorted(set(data) - {"secret", "grace"})
    if unknown:
        raise ApiError(
            400, f"unknown fields {', '.join(unknown)}; allowed: grace, secret"
        )
    secret = data.get("secret")
    if secret is None:
        secret = generate_secret()
    try:
        secret_key(secret if isinstance(secret, str) else "")
    except ValueError as exc:
        raise ApiError(400, f"invalid secret: {exc}") from None
    grace = DEFAULT_ROTATION_GRACE
    if data.get("grace") is not None:
        try:
            grace = parse_duration(data["grace"])
        except ValueError as exc:
            raise ApiError(400, f"invalid grace: {exc}") from None
        if grace > MAX_ROTATION_GRACE:
            raise ApiError(400, f"grace {data['grace']!r} is longer than 30d")
    return secret, grace


def _unix_time(row: dict[str, Any]) -> float:
    """Return when a pending delivery is due, as a Unix time; 0 means now."""
    due = row["next_attempt_at"]
    return due.timestamp() if due is not None else 0.0


async def _enqueue_held(mfo: Any, sub_id: str) -> int:
    """Enqueue the pending deliveries of a subscription that was paused or disabled."""
    after, count = None, 0
    while count < _RESUME_MAX:
        async with mfo.db.transaction() as conn:
            rows = await deliveries.claim_pending(
                conn, sub_id, after, _RESUME_PAGE, new_tag("resume"), DELIVERIES_PER_JOB
            )
        if not rows:
            break
        after = rows[-1]["id"]
        work = [
            Work(
                DELIVER_JOB, row["job_key"], {"delivery_id": row["id"]}, _unix_time(row)
            )
            for row in rows
        ]
        await mfo.queue.enqueue_work(work)
        count += len(rows)
    return count


def _secret_in_yaml(mfo: Any, row: dict[str, Any]) -> bool:
    """Tell whether subscriptions.yaml sets this subscription's secret."""
    if row["source"] != "config":
        return False
    declared = {sub.name: sub for sub in mfo.config().subscriptions}
    sub = declared.get(row["name"])
    return sub is not None and sub.secret is not None


class SubscriptionController(Controller):
    path = "/api/notifications"
    tags = ("subscriptions",)

    @post("/subscribe", status_code=201)
    async def subscribe(self, state: State, data: Any) -> dict[str, Any]:
        """Create a subscription; a `whsec_` secret is generated when none is given."""
        mfo = runtime(state)
        policy = egress_policy(mfo.settings)
        row = parse_subscription(data, mfo.config().defaults, policy)
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
        """Delete a subscription; its pending deliveries fail, as nothing sends them."""
        async with runtime(state).db.transaction() as conn:
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

    @post("/subscriptions/{sub_id:str}/pause", status_code=200)
    async def pause(self, state: State, sub_id: str) -> dict[str, Any]:
        """Stop sending; deliveries wait, due or not, until the subscription resumes."""
        async with runtime(state).db.connection() as conn:
            row = await queries.get_subscription(conn, sub_id)
            if row is None:
                raise ApiError(404, f"subscription {sub_id!r} not found")
            if row["status"] == "paused":
                return jsonable(row)
            paused = await queries.change_subscription_status(
                conn, row["id"], "paused", "paused over the API", ("active",)
            )
        if paused is None:
            raise ApiError(
                409,
                f"subscription {sub_id!r} is {row['status']}; only an active"
                " subscription can be paused",
            )
        return jsonable(paused)

    @post("/subscriptions/{sub_id:str}/resume", status_code=200)
    async def resume(self, state: State, sub_id: str) -> dict[str, Any]:
        """Send again, from paused or disabled; held deliveries go out now."""
        mfo = runtime(state)
        async with mfo.db.connection() as conn:
            row = await queries.get_subscription(conn, sub_id)
            if row is None:
                raise ApiError(404, f"subscription {sub_id!r} not found")
            resumed = await queries.change_subscription_status(
                conn, row["id"], "active", None, ("paused", "disabled")
            )
        if resumed is None:
            return {**jsonable(row), "resumed_deliveries": 0}
        count = await _enqueue_held(mfo, row["id"])
        return {**jsonable(resumed), "resumed_deliveries": count}

    @post("/subscriptions/{sub_id:str}/rotate-secret", status_code=200)
    async def rotate_secret(
        self, state: State, sub_id: str, data: Any = None
    ) -> dict[str, Any]:
        """Replace the signing secret; during `grace` (default 24h) both sign.

        The body may give the new `secret`; one is generated otherwise.
        """
        secret, grace = _parse_rotation(data)
        mfo = runtime(state)
        async with mfo.db.connection() as conn:
            row = await queries.get_subscription(conn, sub_id)
            if row is None:
                raise ApiError(404, f"subscription {sub_id!r} not found")
            if _secret_in_yaml(mfo, row):
                raise ApiError(
                    409,
                    f"subscription {sub_id!r} takes its secret from"
                    " subscriptions.yaml; change it there and reload, and the old"
                    " secret keeps signing for 24h",
                )
            rotated = await queries.rotate_secret(conn, row["id"], secret, grace)
        assert rotated is not None
        return jsonable(rotated)
