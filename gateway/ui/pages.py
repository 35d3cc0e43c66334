"""The dashboard's pages: overview, events, deliveries, runs, subscriptions."""

from __future__ import annotations

from datetime import datetime
from importlib import resources
from typing import Any

from litestar import Request, Response, get
from litestar.datastructures import State

from gateway.api.common import ApiError, parse_time
from gateway.reload import list_processes
from gateway.store import dashboard, deliveries, queries
from gateway.store.dashboard import (
    Cursor,
    DeliveryFilter,
    EventFilter,
    RunFilter,
)
from gateway.ui.render import render

PAGE_SIZE = 50
# Bulk retry shows an exact count up to this many deliveries, then "at least".
COUNT_CAP = 10_000
_MAX_FILTER_LENGTH = 200
_STATIC_TYPES = {"style.css": "text/css", "live.js": "text/javascript"}


class BadFilter(ValueError):
    """A query parameter that the page cannot use; shown to the user as a 400."""


def _text(value: str | None, name: str) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value) > _MAX_FILTER_LENGTH or "\x00" in value:
        raise BadFilter(f"{name} must be at most {_MAX_FILTER_LENGTH} characters")
    return value.strip()


def _choice(value: str | None, name: str, allowed: tuple[str, ...]) -> str | None:
    if not value:
        return None
    if value not in allowed:
        raise BadFilter(
            f"invalid {name} {value[:40]!r}; use one of {', '.join(allowed)}"
        )
    return value


def _time(value: str | None, name: str) -> datetime | None:
    try:
        return parse_time(_text(value, name), name)
    except ApiError as exc:
        raise BadFilter(str(exc.detail)) from None
    except (ValueError, OverflowError):
        raise BadFilter(f"invalid {name} {value!r}") from None


def _cursor(value: str | None) -> Cursor | None:
    if not value:
        return None
    try:
        return Cursor.decode(value)
    except ValueError:
        raise BadFilter(
            "invalid page position; start again from the first page"
        ) from None


def _next_cursor(rows: list[dict[str, Any]]) -> str | None:
    if len(rows) < PAGE_SIZE:
        return None
    return Cursor(rows[-1]["created_at"], rows[-1]["id"]).encode()


def _unusable_id(value: str) -> bool:
    """Tell whether an id from a URL cannot name any row, such as one with a NUL."""
    return len(value) > _MAX_FILTER_LENGTH or "\x00" in value


def bad_filter(request: Request[Any, Any, Any], exc: BadFilter) -> Response[str]:
    return render(request, "error.html", 400, message=str(exc))


def _gateway(state: State) -> Any:
    return state["mfo"]


# overview


@get("/", name="ui:overview")
async def overview(request: Request[Any, Any, Any], state: State) -> Response[str]:
    """Show the live counters, the running config and the processes."""
    gateway = _gateway(state)
    async with gateway.db.connection() as conn:
        counters = await dashboard.hour_counters(conn)
    reloader = gateway.reloader
    config = gateway.config()
    return render(
        request,
        "overview.html",
        counters=counters,
        config=config,
        reload_state=reloader.state if reloader else None,
        processes=await list_processes(gateway.db),
        notice=request.query_params.get("notice"),
    )


@get("/counters")
async def counters_fragment(
    request: Request[Any, Any, Any], state: State
) -> Response[str]:
    """Render the last hour's counters alone, for the overview to poll."""
    async with _gateway(state).db.connection() as conn:
        counters = await dashboard.hour_counters(conn)
    return render(request, "_counters.html", counters=counters)


# events


@get("/events")
async def events_page(
    request: Request[Any, Any, Any],
    state: State,
    provider: str | None = None,
    type: str | None = None,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
    before: str | None = None,
) -> Response[str]:
    """List events newest first, filtered by provider, type, status and time."""
    values = {
        "provider": provider,
        "type": type,
        "status": status,
        "since": since,
        "until": until,
    }
    filters = EventFilter(
        provider=_text(provider, "provider"),
        type=_text(type, "type"),
        status=_choice(status, "status", dashboard.EVENT_STATUSES),
        since=_time(since, "since"),
        until=_time(until, "until"),
    )
    async with _gateway(state).db.connection() as conn:
        rows = await dashboard.list_events(conn, filters, _cursor(before), PAGE_SIZE)
        providers = await dashboard.list_providers(conn)
    return render(
        request,
        "events.html",
        events=rows,
        filters=values,
        providers=providers,
        statuses=dashboard.EVENT_STATUSES,
        next_page=_next_cursor(rows),
        first_page=before is not None,
    )


@get("/events/{event_id:str}")
async def event_page(
    request: Request[Any, Any, Any], state: State, event_id: str
) -> Response[str]:
    """Show an event's payload, the route it came in on, its deliveries and runs."""
    if _unusable_id(event_id):
        return render(request, "error.html", 404, message="event not found")
    async with _gateway(state).db.connection() as conn:
        event = await dashboard.get_event(conn, event_id)
        if event is None:
            return render(
                request, "error.html", 404, message=f"event {event_id!r} not found"
            )
        sent = await deliveries.deliveries_for_event(conn, event_id)
        runs = await queries.runs_for_event(conn, event_id)
    return render(request, "event.html", event=event, deliveries=sent, runs=runs)


# deliveries


def delivery_filter(
    status: str | None,
    subscription: str | None,
    event_type: str | None,
    event_id: str | None,
    since: str | None,
    until: str | None,
) -> DeliveryFilter:
    return DeliveryFilter(
        status=_choice(status, "status", dashboard.DELIVERY_STATUSES),
        subscription=_text(subscription, "subscription"),
        event_type=_text(event_type, "event type"),
        event_id=_text(event_id, "event id"),
        since=_time(since, "since"),
        until=_time(until, "until"),
    )


@get("/deliveries")
async def deliveries_page(
    request: Request[Any, Any, Any],
    state: State,
    status: str | None = None,
    subscription: str | None = None,
    event_type: str | None = None,
    event_id: str | None = None,
    since: str | None = None,
    until: str | None = None,
    before: str | None = None,
) -> Response[str]:
    """List deliveries newest first, with a bulk retry of what the filter shows."""
    values = {
        "status": status,
        "subscription": subscription,
        "event_type": event_type,
        "event_id": event_id,
        "since": since,
        "until": until,
    }
    filters = delivery_filter(status, subscription, event_type, event_id, since, until)
    retryable = filters.status in ("failed", "succeeded") and not filters.event_id
    gateway = _gateway(state)
    async with gateway.db.connection() as conn:
        rows = await dashboard.list_deliveries(
            conn, filters, _cursor(before), PAGE_SIZE
        )
        matched = (
            await dashboard.count_deliveries(conn, filters, COUNT_CAP)
            if retryable
            else None
        )
        subscriptions = await queries.list_subscriptions(conn)
    return render(
        request,
        "deliveries.html",
        deliveries=rows,
        filters=values,
        statuses=dashboard.DELIVERY_STATUSES,
        subscriptions=subscriptions,
        matched=matched,
        count_cap=COUNT_CAP,
        next_page=_next_cursor(rows),
        first_page=before is not None,
        notice=request.query_params.get("notice"),
    )


@get("/deliveries/{delivery_id:str}")
async def delivery_page(
    request: Request[Any, Any, Any], state: State, delivery_id: str
) -> Response[str]:
    """Show a delivery with every attempt and a retry button."""
    if _unusable_id(delivery_id):
        return render(request, "error.html", 404, message="delivery not found")
    async with _gateway(state).db.connection() as conn:
        row = await deliveries.get_delivery(conn, delivery_id)
        if row is None:
            return render(
                request,
                "error.html",
                404,
                message=f"delivery {delivery_id!r} not found",
            )
        attempts = await deliveries.list_attempts(conn, delivery_id)
    return render(
        request,
        "delivery.html",
        delivery=row,
        attempts=attempts,
        notice=request.query_params.get("notice"),
    )


# subscriptions


@get("/subscriptions")
async def subscriptions_page(
    request: Request[Any, Any, Any], state: State
) -> Response[str]:
    """List subscriptions with their last day's success rate and last error."""
    async with _gateway(state).db.connection() as conn:
        rows = await dashboard.subscription_health(conn)
    return render(
        request,
        "subscriptions.html",
        subscriptions=rows,
        window_hours=dashboard.HEALTH_WINDOW_HOURS,
        notice=request.query_params.get("notice"),
    )


# pipeline runs


@get("/runs")
async def runs_page(
    request: Request[Any, Any, Any],
    state: State,
    pipeline: str | None = None,
    status: str | None = None,
    event_id: str | None = None,
    before: str | None = None,
) -> Response[str]:
    """List pipeline runs newest first, by pipeline and status."""
    values = {"pipeline": pipeline, "status": status, "event_id": event_id}
    filters = RunFilter(
        pipeline=_text(pipeline, "pipeline"),
        status=_choice(status, "status", dashboard.RUN_STATUSES),
        event_id=_text(event_id, "event id"),
    )
    gateway = _gateway(state)
    async with gateway.db.connection() as conn:
        rows = await dashboard.list_runs(conn, filters, _cursor(before), PAGE_SIZE)
    return render(
        request,
        "runs.html",
        runs=rows,
        filters=values,
        pipelines=[pipeline.name for pipeline in gateway.config().pipelines],
        statuses=dashboard.RUN_STATUSES,
        next_page=_next_cursor(rows),
        first_page=before is not None,
    )


@get("/runs/{run_id:str}")
async def run_page(
    request: Request[Any, Any, Any], state: State, run_id: str
) -> Response[str]:
    """Show a pipeline run with each step's status, output or error."""
    if _unusable_id(run_id):
        return render(request, "error.html", 404, message="run not found")
    async with _gateway(state).db.connection() as conn:
        run = await queries.get_run(conn, run_id)
    if run is None:
        return render(request, "error.html", 404, message=f"run {run_id!r} not found")
    return render(request, "run.html", run=run)


# static files


@get("/static/{name:str}")
async def static_file(name: str) -> Response[bytes]:
    """Serve the dashboard's stylesheet and script."""
    media_type = _STATIC_TYPES.get(name)
    if media_type is None:
        return Response(b"not found", status_code=404, media_type="text/plain")
    content = (resources.files("gateway.ui") / "static" / name).read_bytes()
    return Response(
        content,
        media_type=media_type,
        headers={"cache-control": "max-age=3600", "x-content-type-options": "nosniff"},
    )
