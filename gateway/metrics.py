"""Prometheus metrics: what this process counted, and what it reads when scraped.

Counted in process: ingress requests by provider, route and status (an ASGI
wrapper around the app), delivery attempts, finished deliveries, attempt
duration and end-to-end latency (hooks in the delivery code). Read at each
scrape: queue depth, config reloads, and events by type. Events are counted
in PostgreSQL, so every API process reports the same deployment-wide
`mfo_events_total`; aggregate it with `max`, not `sum`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any

from litestar import Litestar, Response, get
from litestar.datastructures import State
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from gateway.exceptions import GatewayError
from gateway.store.database import Database

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]

# The `_created` series double every counter's output and no mfo alert reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

INGRESS_REQUESTS = Counter(
    "mfo_ingress_requests",
    "Requests to provider routes, by provider, route and HTTP status.",
    ["provider", "route", "status"],
    registry=REGISTRY,
)
INGRESS_DURATION = Histogram(
    "mfo_ingress_request_duration_seconds",
    "Time from a provider request's arrival to the start of the answer.",
    ["provider", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
DELIVERY_ATTEMPTS = Counter(
    "mfo_delivery_attempts",
    "Delivery attempts made by this process, by outcome (succeeded or failed).",
    ["outcome"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "mfo_deliveries",
    "Deliveries finished by this process: succeeded, or failed after the last"
    " attempt of the retry schedule (a dead letter).",
    ["outcome"],
    registry=REGISTRY,
)
ATTEMPT_DURATION = Histogram(
    "mfo_delivery_attempt_duration_seconds",
    "Duration of one outgoing POST, from connecting to reading the response.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "mfo_delivery_latency_seconds",
    "Time from an event being stored to its successful delivery, retries included.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
    registry=REGISTRY,
)
for _outcome in ("succeeded", "failed"):
    DELIVERY_ATTEMPTS.labels(_outcome)
    DELIVERIES.labels(_outcome)

_WEBHOOK_HANDLER_PREFIX = "webhook:"
# A scrape waits this long for the database or the queue, then reports without.
_SCRAPE_TIMEOUT = 3.0
# Events committed later than this after their created_at would be missed.
_EVENT_SETTLE_SECONDS = 60
_WARNING_INTERVAL = 60.0


# ingress


async def observe_http(app: ASGIApp, scope: Scope, receive: Any, send: Any) -> None:
    """Call the app, and count the request when a provider route handles it.

    Litestar stores the matched handler in the scope before the handler runs,
    and provider route handlers are named `webhook:PROVIDER/ROUTE`.
    """
    if scope["type"] != "http":
        await app(scope, receive, send)
        return
    started = time.perf_counter()
    answered = False

    async def send_and_count(message: dict[str, Any]) -> None:
        nonlocal answered
        if message["type"] == "http.response.start" and not answered:
            answered = True
            _count_ingress(scope, message["status"], started)
        await send(message)

    try:
        await app(scope, receive, send_and_count)
    except BaseException:
        if not answered:
            _count_ingress(scope, 500, started)
        raise


def _count_ingress(scope: Scope, status: int, started: float) -> None:
    name = getattr(scope.get("route_handler"), "name", None)
    if not isinstance(name, str) or not name.startswith(_WEBHOOK_HANDLER_PREFIX):
        return
    provider, _, route = name[len(_WEBHOOK_HANDLER_PREFIX) :].partition("/")
    INGRESS_REQUESTS.labels(provider, route, str(status)).inc()
    INGRESS_DURATION.labels(provider, route).observe(time.perf_counter() - started)


# deliveries


def observe_attempt(row: dict[str, Any], outcome: Any) -> None:
    """Count one delivery attempt; a success also finishes its delivery.

    `row` is the delivery as the dispatcher read it, with `event_created_at`;
    `outcome` is the attempt's `AttemptOutcome`.
    """
    ATTEMPT_DURATION.observe(outcome.duration_ms / 1000)
    if not outcome.succeeded:
        DELIVERY_ATTEMPTS.labels("failed").inc()
        return
    DELIVERY_ATTEMPTS.labels("succeeded").inc()
    DELIVERIES.labels("succeeded").inc()
    created = row.get("event_created_at")
    if isinstance(created, datetime):
        latency = (datetime.now(UTC) - created).total_seconds()
        DELIVERY_LATENCY.observe(max(0.0, latency))


def observe_dead_letter(row: dict[str, Any]) -> None:
    """Count a delivery that failed for good."""
    DELIVERIES.labels("failed").inc()


# read at scrape time


class EventTally:
    """Count stored events by type without reading the whole table at each scrape.

    Events older than a settle window are added to a running tally once;
    only the window is counted again at each scrape. A transaction that
    commits more than the window after its event's created_at is missed.

    NOTE: the first scrape counts the whole table through an index. Where
    that takes longer than the scrape timeout (tens of millions of events),
    `mfo_events_total` stays absent until a scrape finishes it in time.
    """

    def __init__(self) -> None:
        self.settled: Tally[str] = Tally()
        self.boundary: datetime | None = None

    async def read(self, db: Database) -> dict[str, int]:
        async with db.connection() as conn:
            cursor = await conn.execute(
                "SELECT now() - make_interval(secs => %s) AS boundary",
                (_EVENT_SETTLE_SECONDS,),
            )
            row = await cursor.fetchone()
            assert row is not None
            boundary: datetime = row["boundary"]
            if self.boundary is None or boundary > self.boundary:
                self.settled.update(await _count_events(conn, self.boundary, boundary))
                self.boundary = boundary
            recent = await _count_events(conn, self.boundary, None)
        return dict(self.settled + recent)


async def _count_events(
    conn: Any, start: datetime | None, end: datetime | None
) -> Tally[str]:
    clauses, params = [], []
    if start is not None:
        clauses.append("created_at >= %s")
        params.append(start)
    if end is not None:
        clauses.append("created_at < %s")
        params.append(end)
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    cursor = await conn.execute(
        f"SELECT type, count(*) AS n FROM mfo_events{where} GROUP BY type", params
    )
    return Tally({row["type"]: int(row["n"]) for row in await cursor.fetchall()})


class ScrapeCollector:
    """Report the values that `refresh` read for the latest scrape."""

    def __init__(self) -> None:
        self.events: dict[str, int] | None = None
        self.queue: dict[str, int] = {}
        self.reloads: tuple[int, int] | None = None
        self.config_version: str | None = None

    def collect(self) -> Iterator[Metric]:
        if self.events is not None:
            events = CounterMetricFamily(
                "mfo_events",
                "Events stored by the whole deployment, by type, read from PostgreSQL.",
                labels=["type"],
            )
            for event_type, count in sorted(self.events.items()):
                events.add_metric([event_type], count)
            yield events
        if self.queue:
            depth = GaugeMetricFamily(
                "mfo_queue_jobs",
                "Jobs in the saq queue: queued (due now), active, incomplete (all).",
                labels=["state"],
            )
            for state, count in sorted(self.queue.items()):
                depth.add_metric([state], count)
            yield depth
        if self.reloads is not None:
            yield CounterMetricFamily(
                "mfo_config_reloads",
                "Config reloads this process swapped in.",
                value=self.reloads[0],
            )
            yield CounterMetricFamily(
                "mfo_config_reload_errors",
                "Config reloads this process rejected because the config was invalid.",
                value=self.reloads[1],
            )
        if self.config_version is not None:
            info = GaugeMetricFamily(
                "mfo_config_info",
                "The config version this process runs, as a label; the value is 1.",
                labels=["version"],
            )
            info.add_metric([self.config_version], 1)
            yield info


_SCRAPE = ScrapeCollector()
REGISTRY.register(_SCRAPE)
_TALLY = EventTally()
_last_warning = {"at": 0.0}


async def refresh(gateway: Any, count_events: bool) -> None:
    """Read the scrape-time values from the gateway, its queue and its database.

    A value that cannot be read in time is left out of this scrape.
    """
    _SCRAPE.config_version = gateway.config().version
    reloader = getattr(gateway, "reloader", None)
    if reloader is not None:
        _SCRAPE.reloads = (reloader.state.reloads, reloader.state.failed_reloads)
    _SCRAPE.queue = await _read_or_skip("queue depth", _queue_depth(gateway)) or {}
    if count_events and gateway.db is not None:
        _SCRAPE.events = await _read_or_skip("event counts", _TALLY.read(gateway.db))


async def _queue_depth(gateway: Any) -> dict[str, int]:
    if gateway.queue is None:
        return {}
    saq = gateway.queue.saq
    return {kind: await saq.count(kind) for kind in ("queued", "active", "incomplete")}


async def _read_or_skip(what: str, reading: Awaitable[Any]) -> Any:
    try:
        return await asyncio.wait_for(reading, _SCRAPE_TIMEOUT)
    except Exception as exc:
        now = time.monotonic()
        if now - _last_warning["at"] > _WARNING_INTERVAL:
            _last_warning["at"] = now
            logger.warning("metrics: could not read %s, left out: %r", what, exc)
        return None


def render_metrics() -> bytes:
    return generate_latest(REGISTRY)


@get("/metrics", include_in_schema=False)
async def metrics_endpoint(state: State) -> Response[bytes]:
    """Serve the metrics in the Prometheus text format."""
    await refresh(state["mfo"], count_events=state.get("count_events", True))
    # The header given explicitly keeps Litestar from adding a second charset.
    return Response(
        render_metrics(),
        media_type=CONTENT_TYPE_LATEST,
        headers={"content-type": CONTENT_TYPE_LATEST},
    )


def build_metrics_app(gateway: Any) -> Litestar:
    """Build an app that serves only /metrics, for processes without HTTP routes."""
    return Litestar(
        route_handlers=[metrics_endpoint],
        state=State({"mfo": gateway, "count_events": False}),
        logging_config=None,
        openapi_config=None,
        debug=False,
    )


class MetricsServer:
    """Serve /metrics on host:port inside the running event loop.

    The process keeps its own signal handlers, so stopping is up to `stop`.
    """

    def __init__(self, gateway: Any, host: str, port: int) -> None:
        import uvicorn

        class _Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        self.address = f"{host}:{port}"
        self.server = _Server(
            uvicorn.Config(
                build_metrics_app(gateway),
                host=host,
                port=port,
                log_config=None,
                access_log=False,
                lifespan="off",
            )
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start listening; raise GatewayError when the port cannot be bound."""
        self.task = asyncio.get_running_loop().create_task(self.server.serve())
        for _ in range(200):
            if self.server.started or self.task.done():
                break
            await asyncio.sleep(0.05)
        if self.task.done() or not self.server.started:
            await self.stop()
            raise GatewayError(
                f"failed to listen on {self.address} for metrics (the log above has the reason);"
                " choose another port with --metrics-port"
            )
        logger.info("serving metrics on http://%s/metrics", self.address)

    async def stop(self) -> None:
        if self.task is None:
            return
        self.server.should_exit = True
        # A failed bind ends the server task with SystemExit.
        with contextlib.suppress(Exception, SystemExit):
            await asyncio.wait_for(self.task, 10)
        self.task = None
