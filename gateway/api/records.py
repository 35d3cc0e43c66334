"""Read stored events and pipeline runs over HTTP."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get
from litestar.datastructures import State

from gateway.api.common import ApiError, jsonable, runtime
from gateway.store import queries


class EventController(Controller):
    path = "/api/events"
    tags = ("events",)

    @get("/{event_id:str}")
    async def get_event(self, state: State, event_id: str) -> dict[str, Any]:
        async with runtime(state).db.connection() as conn:
            event = await queries.get_event(conn, event_id)
            if event is None:
                raise ApiError(404, f"event {event_id!r} not found")
            deliveries = await queries.deliveries_for_event(conn, event_id)
            runs = await queries.runs_for_event(conn, event_id)
        return {
            **jsonable(event),
            "deliveries": [jsonable(row) for row in deliveries],
            "runs": [jsonable(row) for row in runs],
        }


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
