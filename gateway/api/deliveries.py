"""List, inspect and retry deliveries over HTTP."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, post
from litestar.datastructures import State

from gateway.api.common import ApiError, jsonable, parse_limit, parse_time, runtime
from gateway.events import deliver_work, new_tag
from gateway.store import deliveries

_STATUSES = ("pending", "succeeded", "failed")
_PAGE = 500
_RETRY_FIELDS = (
    "ids",
    "status",
    "subscription",
    "event_type",
    "since",
    "until",
    "dry_run",
    "limit",
    "after",
)


def _filters(
    status: str | None,
    subscription: str | None,
    event_type: str | None,
    since: str | None,
    until: str | None,
) -> dict[str, Any]:
    if status is not None and status not in _STATUSES:
        raise ApiError(
            400, f"invalid status {status!r}; use one of {', '.join(_STATUSES)}"
        )
    for name, value in (
        ("subscription", subscription),
        ("event_type", event_type),
        ("since", since),
        ("until", until),
    ):
        if value is not None and not isinstance(value, str):
            raise ApiError(400, f"{name} must be a string")
    return {
        "status": status,
        "subscription": subscription,
        "event_type": event_type,
        "since": parse_time(since, "since"),
        "until": parse_time(until, "until"),
    }


async def retry_deliveries(mfo: Any, ids: list[str]) -> list[str]:
    """Put finished deliveries back to pending and enqueue one attempt each.

    The new job keys are stored with the status change, so if the process
    dies before enqueueing, the sweep finds the jobs missing and enqueues them.
    """
    if not ids:
        return []
    tag = new_tag("retry")
    async with mfo.db.transaction() as conn:
        rows = await deliveries.requeue_deliveries(conn, ids, tag)
    work = [deliver_work(row["id"], row["attempts"], tag=tag) for row in rows]
    await mfo.queue.enqueue_work(work)
    return [row["id"] for row in rows]


def _retry_request(data: Any) -> tuple[dict[str, Any], bool, int | None, str | None]:
    """Validate a bulk retry body; return filters, dry_run, page size and cursor."""
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    unknown = sorted(set(data) - set(_RETRY_FIELDS))
    if unknown:
        raise ApiError(
            400,
            f"unknown fields {', '.join(unknown)}; allowed: {', '.join(_RETRY_FIELDS)}",
        )

    dry_run = data.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ApiError(400, "dry_run must be true or false")
    limit = data.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)):
        raise ApiError(400, "limit must be a whole number")
    after = data.get("after")
    if after is not None and not isinstance(after, str):
        raise ApiError(400, "after must be a delivery id")

    page = None if limit is None else parse_limit(limit)
    return _retry_filters(data), dry_run, page, after


def _retry_filters(data: dict[str, Any]) -> dict[str, Any]:
    """Build the filters of a bulk retry.

    It never selects pending deliveries, nor those of deleted subscriptions.
    """
    status = data.get("status")
    if status == "pending":
        raise ApiError(400, "pending deliveries are already queued; nothing to retry")
    filters = _filters(
        status,
        data.get("subscription"),
        data.get("event_type"),
        data.get("since"),
        data.get("until"),
    )

    ids = data.get("ids")
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ApiError(400, "ids must be a list of delivery ids")
        if not ids:
            raise ApiError(
                400, "ids is empty; give at least one delivery id or a filter"
            )
        filters["ids"] = ids
    elif not any(filters.values()):
        raise ApiError(
            400,
            "give ids or at least one filter; retrying everything is not allowed",
        )
    elif status is None:
        # A filter without a status selects dead letters, so running the same
        # retry twice does not resend deliveries that succeeded in between.
        filters["status"] = "failed"
    filters["not_pending"] = True
    # A deleted subscription's deliveries cannot be sent, so they never match.
    filters["live_subscription"] = True
    return filters


class DeliveryController(Controller):
    path = "/api/deliveries"
    tags = ("deliveries",)

    @get("/")
    async def list_deliveries(
        self,
        state: State,
        status: str | None = None,
        subscription: str | None = None,
        event_type: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """List deliveries oldest first; `after` is the last id of the previous page."""
        filters = _filters(status, subscription, event_type, since, until)
        filters["after"] = after
        size = parse_limit(limit)
        async with runtime(state).db.connection() as conn:
            rows = await deliveries.list_deliveries(conn, filters, size)
        next_after = rows[-1]["id"] if len(rows) == size else None
        return {"deliveries": [jsonable(row) for row in rows], "next_after": next_after}

    @get("/{delivery_id:str}")
    async def get_delivery(self, state: State, delivery_id: str) -> dict[str, Any]:
        async with runtime(state).db.connection() as conn:
            row = await deliveries.get_delivery(conn, delivery_id)
            if row is None:
                raise ApiError(404, f"delivery {delivery_id!r} not found")
            attempts = await deliveries.list_attempts(conn, delivery_id)
        return {**jsonable(row), "attempts_log": [jsonable(a) for a in attempts]}

    @post("/{delivery_id:str}/retry", status_code=202)
    async def retry_one(self, state: State, delivery_id: str) -> dict[str, Any]:
        mfo = runtime(state)
        async with mfo.db.connection() as conn:
            row = await deliveries.get_delivery(conn, delivery_id)
        if row is None:
            raise ApiError(404, f"delivery {delivery_id!r} not found")
        if row["status"] == "pending":
            raise ApiError(409, f"delivery {delivery_id!r} is already pending")
        retried = await retry_deliveries(mfo, [delivery_id])
        if not retried:
            # Either the subscription is deleted or another retry came first.
            raise ApiError(
                409,
                f"delivery {delivery_id!r} was not retried: its subscription"
                f" {row['subscription_id']!r} is deleted, or it is pending already;"
                " see GET /api/deliveries/" + delivery_id,
            )
        return {"retried": retried}

    @post("/retry", status_code=200)
    async def retry_many(self, state: State, data: Any) -> dict[str, Any]:
        """Retry deliveries by `ids` or by filter; `dry_run` only counts them.

        A filter without `status` retries failed deliveries. With `limit`,
        one page is retried and `next_after` is the `after` of the next page,
        or null at the end, so a client can show progress and stop at any
        page. Without it, every page is retried in this request.
        """
        mfo = runtime(state)
        filters, dry_run, limit, after = _retry_request(data)
        if dry_run:
            async with mfo.db.connection() as conn:
                matched = await deliveries.count_deliveries(conn, filters)
            return {
                "matched": matched,
                "retried": 0,
                "dry_run": True,
                "next_after": None,
            }
        matched, retried = 0, 0
        while True:
            size = limit or _PAGE
            async with mfo.db.connection() as conn:
                rows = await deliveries.list_deliveries(
                    conn, {**filters, "after": after}, size
                )
            after = rows[-1]["id"] if len(rows) == size else None
            matched += len(rows)
            retried += len(await retry_deliveries(mfo, [row["id"] for row in rows]))
            if limit is not None or after is None:
                break
        return {
            "matched": matched,
            "retried": retried,
            "dry_run": False,
            "next_after": after,
        }
