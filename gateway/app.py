"""Build the Litestar application: provider routes, the API and the worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import psycopg
from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException, SerializationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import OpenAPIMediaType, RequestBody
from litestar.router import Router
from psycopg_pool import PoolTimeout
from saq import Worker

from gateway.api.admin import AdminController
from gateway.api.auth import bearer_guard, ensure_api_token
from gateway.api.deliveries import DeliveryController
from gateway.api.records import EventController, JobController
from gateway.api.subscriptions import SubscriptionController
from gateway.config.loader import load_config
from gateway.config.model import GatewayConfig
from gateway.delivery.egress import egress_policy
from gateway.delivery.policy import sync_delivery_settings
from gateway.delivery.signing import generate_secret
from gateway.events import RequestBatcher
from gateway.exceptions import GatewayError
from gateway.ids import new_id
from gateway.ingress.routes import build_route_handlers
from gateway.jobs import (
    SHUTDOWN_GRACE,
    WORKER_CONCURRENCY,
    JobQueue,
    WorkerRuntime,
    create_worker,
)
from gateway.metrics import metrics_endpoint, observe_http
from gateway.reload import ConfigReloader, ReloadState
from gateway.settings import Settings
from gateway.store import queries
from gateway.store.database import Database
from gateway.store.embedded import (
    revive_embedded_postgres,
    start_embedded_postgres,
    stop_embedded_postgres,
)
from gateway.ui import build_ui_router

logger = logging.getLogger(__name__)

EMBEDDED_CHECK_INTERVAL = 5.0


# Connections beyond those of attempts in flight: sweep, enqueues, API.
_SPARE_CONNECTIONS = 4


class Gateway:
    """The running parts one process shares: config, database, queue, worker."""

    def __init__(self, settings: Settings, config: GatewayConfig) -> None:
        self.settings = settings
        self._config = config
        self.database_url: str | None = None
        self.db: Database = None  # type: ignore[assignment]
        self.queue: JobQueue = None  # type: ignore[assignment]
        self.batcher: RequestBatcher = None  # type: ignore[assignment]
        self.worker: Worker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._worker_runtime: WorkerRuntime | None = None
        self.reloader: ConfigReloader | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def config(self) -> GatewayConfig:
        return self._config

    def set_config(self, config: GatewayConfig) -> None:
        self._config = config

    def start_reloader(
        self, kind: str, apply: Callable[[GatewayConfig], Awaitable[None]]
    ) -> None:
        """Watch the config files and NOTIFY channel, and swap with `apply`."""
        state = ReloadState(self._config.version, datetime.now(UTC))
        self.reloader = ConfigReloader(
            self.settings.config_dir,
            apply,
            state,
            db=self.db,
            process_kind=kind,
            current=self.config,
        )
        self.reloader.start(watch_files=self.settings.watch_config)

    def reload_soon(self, reason: str) -> None:
        """Start a reload from a signal handler, without waiting for it."""
        if self.reloader is not None:
            self._keep(
                asyncio.get_running_loop().create_task(self.reloader.reload(reason))
            )

    async def apply_config(self, config: GatewayConfig) -> None:
        """Swap a config in a process without HTTP routes, such as `mfo worker`."""
        await sync_config_subscriptions(self.db, config)
        await sync_delivery_settings(self.db, config)
        self.set_config(config)

    async def enqueue_work(self, work: Any) -> None:
        await self.queue.enqueue_work(work)

    async def start(self, run_worker: bool) -> None:
        """Open the database and queue, apply migrations and sync subscriptions."""
        url = self.settings.database_url
        if url is None:
            url = await asyncio.to_thread(
                start_embedded_postgres, self.settings.data_dir
            )
        self.database_url = url
        self.db = Database(url, max_size=20)
        await self.db.open()
        await self.db.migrate()
        self.queue = JobQueue(self.settings.queue_url or url, self.settings.queue_name)
        await self.queue.connect()
        self.batcher = RequestBatcher(self.db, self.queue)
        await sync_config_subscriptions(self.db, self._config)
        await sync_delivery_settings(self.db, self._config)
        if self.settings.database_url is None:
            self._keep(asyncio.create_task(self._watch_embedded()))
        if run_worker:
            self.start_worker()

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch_embedded(self) -> None:
        """Start the embedded PostgreSQL again if it stops under the gateway."""
        while True:
            await asyncio.sleep(EMBEDDED_CHECK_INTERVAL)
            if await self.db.ping():
                continue
            logger.warning(
                "the embedded PostgreSQL does not respond; starting it again"
            )
            try:
                await asyncio.to_thread(
                    revive_embedded_postgres, self.settings.data_dir
                )
            except Exception as exc:
                logger.error("could not start the embedded PostgreSQL again: %s", exc)

    async def fit_pool(self, concurrency: int) -> None:
        """Grow the database pool so that every attempt in flight has a connection.

        An attempt keeps its connection while it sends, and the sweep and the
        enqueues need a few more.
        """
        needed = concurrency + _SPARE_CONNECTIONS
        if needed > self.db.pool.max_size:
            await self.db.pool.resize(self.db.pool.min_size, needed)

    def start_worker(self, concurrency: int = WORKER_CONCURRENCY) -> None:
        self._worker_runtime = WorkerRuntime(
            self.db,
            self.queue,
            self.config,
            egress_policy(self.settings),
            sweep_interval=self.settings.sweep_interval,
            sweep_grace=self.settings.sweep_grace,
            concurrency=concurrency,
        )
        self.worker = create_worker(self._worker_runtime, concurrency)
        self.worker.SIGNALS = []  # the server owns SIGINT and SIGTERM
        self._worker_task = asyncio.create_task(self.worker.start())

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self.reloader is not None:
            await self.reloader.stop()
        if self._worker_runtime is not None:
            # Attempts in flight may finish; those that take longer are
            # cancelled and sent again later with the same webhook-id.
            await self._worker_runtime.drain(SHUTDOWN_GRACE)
        if self.worker is not None:
            await self.worker.stop()
        if self._worker_task is not None:
            self._worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker_task
        if self._worker_runtime is not None:
            await self._worker_runtime.close()
        if self.queue is not None:
            await self.queue.disconnect()
        if self.db is not None:
            await self.db.close()
        if self.settings.database_url is None:
            await asyncio.to_thread(stop_embedded_postgres, self.settings.data_dir)


def config_subscription_id(name: str) -> str:
    return f"sub_{name}"


async def sync_config_subscriptions(db: Database, config: GatewayConfig) -> None:
    """Store the subscriptions that subscriptions.yaml declares, keeping their ids."""
    async with db.transaction() as conn:
        for sub in config.subscriptions:
            await queries.upsert_config_subscription(
                conn,
                {
                    "id": config_subscription_id(sub.name),
                    "name": sub.name,
                    "url": sub.url,
                    "events": list(sub.events),
                    "secret": sub.secret or generate_secret(),
                    "secret_given": sub.secret is not None,
                    "filter": sub.filter,
                    "template": sub.template,
                    "headers": sub.headers,
                    "timeout": sub.timeout,
                    "retry": sub.retry.as_dict(),
                    "description": sub.description,
                },
            )
        await queries.retire_config_subscriptions(
            conn, [s.name for s in config.subscriptions]
        )


def warn_default_secrets(config: GatewayConfig) -> None:
    """Log a WARNING for each secret that fell back to its development default."""
    for route in config.routes:
        for variable in route.defaulted_variables:
            logger.warning(
                "route %s uses the development default of %s; set %s before exposing"
                " this gateway",
                route.qualified_name,
                variable,
                variable,
            )
    for sub in config.subscriptions:
        for variable in sub.defaulted_variables:
            logger.warning(
                "subscription %s uses the development default of %s", sub.name, variable
            )


@get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", include_in_schema=False)
async def readyz(state: State) -> Response[dict[str, Any]]:
    gateway: Gateway = state["mfo"]
    database = gateway.db is not None and await gateway.db.ping()
    queue = gateway.queue is not None and await gateway.queue.ping()
    ready = database and queue
    body = {
        "status": "ready" if ready else "not ready",
        "database": database,
        "queue": queue,
        "config_version": gateway.config().version,
    }
    return Response(body, status_code=200 if ready else 503)


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, HTTPException):
        detail = exc.detail
        if isinstance(exc.__cause__, SerializationException):
            # Litestar passes on the JSON decoder's words alone.
            detail = f"the request body is not valid JSON: {detail}"
        body: dict[str, Any] = {"status_code": exc.status_code, "detail": detail}
        if exc.extra:
            body.update(
                exc.extra if isinstance(exc.extra, dict) else {"extra": exc.extra}
            )
        return Response(body, status_code=exc.status_code, headers=exc.headers)
    if isinstance(exc, RecursionError):
        # The JSON decoder of API bodies recurses once per nesting level.
        logger.info(
            "rejected %s %s: nested too deeply", request.method, request.url.path
        )
        detail = "the request body is nested too deeply"
        return Response({"status_code": 400, "detail": detail}, status_code=400)
    if isinstance(exc, psycopg.DataError | OverflowError):
        # A value the database or the clock cannot hold, such as a NUL
        # character in an id or a duration of a billion days.
        logger.info("rejected %s %s: %s", request.method, request.url.path, exc)
        detail = f"invalid value in the request: {str(exc).splitlines()[0]}"
        return Response({"status_code": 400, "detail": detail}, status_code=400)
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        logger.error(
            "database unavailable on %s %s: %s", request.method, request.url.path, exc
        )
        return Response(
            {"status_code": 503, "detail": "the database is unavailable; retry later"},
            status_code=503,
            headers={"retry-after": "5"},
        )
    error_id = new_id("err")
    logger.error(
        "internal error %s on %s %s",
        error_id,
        request.method,
        request.url.path,
        exc_info=exc,
    )
    return Response(
        {"status_code": 500, "detail": "internal error", "error_id": error_id},
        status_code=500,
    )


class _BoundRuntime:
    """The gateway as seen by routes built for one config version.

    Requests handled by an app built for version A keep using version A even
    after version B is swapped in, so a request finishes on the config it
    started with.
    """

    def __init__(self, gateway: Gateway, config: GatewayConfig) -> None:
        self.gateway = gateway
        self._config = config

    @property
    def db(self) -> Database:
        return self.gateway.db

    @property
    def queue(self) -> JobQueue:
        return self.gateway.queue

    @property
    def batcher(self) -> RequestBatcher:
        return self.gateway.batcher

    def config(self) -> GatewayConfig:
        return self._config


def build_litestar(gateway: Gateway, config: GatewayConfig, token: str) -> Litestar:
    """Build the Litestar app that serves one config version."""
    api = Router(
        path="/",
        route_handlers=[
            SubscriptionController,
            DeliveryController,
            EventController,
            JobController,
            AdminController,
        ],
        guards=[bearer_guard(token)],
    )
    webhooks = build_route_handlers(_BoundRuntime(gateway, config), config.routes)
    app = Litestar(
        route_handlers=[
            healthz,
            readyz,
            metrics_endpoint,
            api,
            build_ui_router(token),
            *webhooks,
        ],
        state=State({"mfo": gateway}),
        exception_handlers={Exception: _internal_error},
        openapi_config=OpenAPIConfig(
            title="mfo", version=config.version, path="/schema"
        ),
        logging_config=None,
        debug=False,
    )
    _document_payloads(app, config)
    return app


def _document_payloads(app: Litestar, config: GatewayConfig) -> None:
    """Put each route's JSON Schema in the OpenAPI document as its request body."""
    paths = app.openapi_schema.paths or {}
    for route in config.routes:
        item = paths.get(route.path)
        operation = getattr(item, route.method.lower(), None) if item else None
        if operation is None:
            continue
        schema: Any = route.schema.schema if route.schema else {}
        operation.description = (
            f"Webhooks from provider {route.provider!r}, verified by"
            f" {route.verify.type}. Event types: "
            + ", ".join(" ".join(rule.type.source.split()) for rule in route.events)
        )
        operation.request_body = RequestBody(
            content={"application/json": OpenAPIMediaType(schema=schema)},
            required=True,
        )


class GatewayApp:
    """The ASGI application: shared resources, and the current Litestar app.

    Lifespan events start and stop the database, queue, worker and config
    watcher. Each HTTP request goes to the Litestar app current when it
    arrived; a reload builds a new one and swaps the reference.
    """

    def __init__(self, gateway: Gateway, token: str, run_worker: bool) -> None:
        self.gateway = gateway
        self.token = token
        self.run_worker = run_worker
        self.current = build_litestar(gateway, gateway.config(), token)

    async def swap(self, config: GatewayConfig) -> None:
        """Sync YAML subscriptions, then serve and work with `config`."""
        app = build_litestar(self.gateway, config, self.token)
        warn_default_secrets(config)
        await sync_config_subscriptions(self.gateway.db, config)
        await sync_delivery_settings(self.gateway.db, config)
        self.current = app
        self.gateway.set_config(config)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await observe_http(self.current, scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._start()
                except GatewayError as exc:
                    logger.error("startup failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                except Exception as exc:
                    logger.exception("startup failed: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gateway.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start(self) -> None:
        await self.gateway.start(self.run_worker)
        self.gateway.start_reloader("server" if self.run_worker else "api", self.swap)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.gateway.reload_soon, "SIGHUP")
        config = self.gateway.config()
        logger.info(
            "mfo ready: %d routes, %d pipelines, %d subscriptions from %s (config %s)",
            len(config.routes),
            len(config.pipelines),
            len(config.subscriptions),
            self.gateway.settings.config_dir,
            config.version,
        )


def create_app(
    settings: Settings, *, run_worker: bool = True, config: GatewayConfig | None = None
) -> GatewayApp:
    """Compile the config and build the application; raise ConfigError if invalid."""
    config = config or load_config(settings.config_dir)
    warn_default_secrets(config)
    gateway = Gateway(settings, config)
    token = ensure_api_token(settings.data_dir, settings.api_token)
    return GatewayApp(gateway, token, run_worker)
