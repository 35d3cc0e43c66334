"""Read stored events and pipeline runs over HTTP."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get, post
from litestar.datastructures import State

from gateway.api.common import ApiError, jsonable, runtime
from gateway.events import replay_event
from gateway.store import deliveries, queries


class EventController(Controller):
    path = "/api/events"
    tags = ("events",)

    @get("/{event_id:str}")
    async def get_event(self, state: State, event_id: str) -> dict[str, Any]:
        async with runtime(state).db.connection() as conn:
            event = await queries.get_event(conn, event_id)
            if event is None:
                raise ApiError(404, f"event {event_id!r} not found")
            sent = await deliveries.deliveries_for_event(conn, event_id)
            runs = await queries.runs_for_event(conn, event_id)
        return {
            **jsonable(event),
            "deliveries": [jsonable(row) for row in sent],
            "runs": [jsonable(row) for row in runs],
        }

    @post("/{event_id:str}/replay", status_code=202)
    async def replay(
        self, state: State, event_id: str, data: Any = None
    ) -> dict[str, Any]:
        """Deliver a stored event again to the subscriptions that match it now.

        Each new delivery gets a new webhook-id. With `missing_only`, only
        subscriptions without a delivery of the event get one. Pipelines do
        not run again.
        """
        missing_only = _missing_only(data)
        mfo = runtime(state)
        async with mfo.db.transaction() as conn:
            result = await replay_event(conn, event_id, missing_only)
        if result is None:
            raise ApiError(404, f"event {event_id!r} not found")
        delivery_ids, work = result
        await mfo.queue.enqueue_work(work)
        return {"event_id": event_id, "deliveries": delivery_ids}


def _missing_only(data: Any) -> bool:
    if data is None:
        return False
    if not isinstance(data, dict) or set(data) - {"missing_only"}:
        raise ApiError(400, 'request body must be {} or {"missing_only": true}')
    value = data.get("missing_only", False)
    if not isinstance(value, bool):
        raise ApiError(400, "missing_only must be true or false")
    return value


class JobController(Controller):
    path = "/api/jobs"
    tags = ("jobs",)

    @get("/{run_id:str}")
    async def get_run(self, state: State, run_id: str) -> dict[str, Any]:
        """Return a pipeline run with its state and the result of each step."""
        async with runtime(state).db.connection() as conn:
            run = await queries.get_run(conn, run_id)
        if run is None:
            raise ApiError(404, f"job {run_id!r} not found")
        return jsonable(run)
