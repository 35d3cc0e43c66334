"""List, inspect and retry deliveries over HTTP."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, post
from litestar.datastructures import State

from gateway.api.common import ApiError, jsonable, parse_limit, parse_time, runtime
from gateway.events import deliver_work
from gateway.store import queries

_STATUSES = ("pending", "succeeded", "failed")
_BATCH = 500


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
    return {
        "status": status,
        "subscription": subscription,
        "event_type": event_type,
        "since": parse_time(since, "since"),
        "until": parse_time(until, "until"),
    }


async def retry_deliveries(mfo: Any, ids: list[str]) -> list[str]:
    """Put deliveries back to pending and enqueue one attempt each."""
    async with mfo.db.connection() as conn:
        changed = await queries.requeue_deliveries(conn, ids)
        rows = [
            await queries.get_delivery(conn, delivery_id) for delivery_id in changed
        ]
    tag = f":retry{len(rows)}"
    work = [deliver_work(row["id"], row["attempts"], tag=tag) for row in rows if row]
    await mfo.queue.enqueue_work(work)
    return changed


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
        """List deliveries oldest first; pass the last id as `after` for the next page."""
        filters = _filters(status, subscription, event_type, since, until)
        filters["after"] = after
        size = parse_limit(limit)
        async with runtime(state).db.connection() as conn:
            rows = await queries.list_deliveries(conn, filters, size)
        next_after = rows[-1]["id"] if len(rows) == size else None
        return {"deliveries": [jsonable(row) for row in rows], "next_after": next_after}

    @get("/{delivery_id:str}")
    async def get_delivery(self, state: State, delivery_id: str) -> dict[str, Any]:
        async with runtime(state).db.connection() as conn:
            row = await queries.get_delivery(conn, delivery_id)
            if row is None:
                raise ApiError(404, f"delivery {delivery_id!r} not found")
            attempts = await queries.list_attempts(conn, delivery_id)
        return {**jsonable(row), "attempts_log": [jsonable(a) for a in attempts]}

    @post("/{delivery_id:str}/retry", status_code=202)
    async def retry_one(self, state: State, delivery_id: str) -> dict[str, Any]:
        mfo = runtime(state)
        async with mfo.db.connection() as conn:
            row = await queries.get_delivery(conn, delivery_id)
        if row is None:
            raise ApiError(404, f"delivery {delivery_id!r} not found")
        if row["status"] == "pending":
            raise ApiError(409, f"delivery {delivery_id!r} is already pending")
        retried = await retry_deliveries(mfo, [delivery_id])
        return {"retried": retried}

    @post("/retry", status_code=200)
    async def retry_many(self, state: State, data: dict[str, Any]) -> dict[str, Any]:
        """Retry deliveries by `ids` or by filter; `dry_run` only counts them."""
        mfo = runtime(state)
        allowed = {
            "ids",
            "status",
            "subscription",
            "event_type",
            "since",
            "until",
            "dry_run",
        }
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ApiError(400, f"unknown fields {', '.join(unknown)}")
        filters = _filters(
            data.get("status"),
            data.get("subscription"),
            data.get("event_type"),
            data.get("since"),
            data.get("until"),
        )
        ids = data.get("ids")
        if ids is not None:
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ApiError(400, "ids must be a list of delivery ids")
            filters["ids"] = ids
        elif not any(filters.values()):
            raise ApiError(
                400,
                "give ids or at least one filter; retrying everything is not allowed",
            )
        matched, retried, after = 0, 0, None
        while True:
            async with mfo.db.connection() as conn:
                rows = await queries.list_deliveries(
                    conn, {**filters, "after": after}, _BATCH
                )
            if not rows:
                break
            after = rows[-1]["id"]
            candidates = [row["id"] for row in rows if row["status"] != "pending"]
            matched += len(candidates)
            if not data.get("dry_run"):
                retried += len(await retry_deliveries(mfo, candidates))
        return {
            "matched": matched,
            "retried": retried,
            "dry_run": bool(data.get("dry_run")),
        }
