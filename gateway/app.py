"""Build the Litestar application: provider routes, the API and the worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.openapi import OpenAPIConfig
from litestar.router import Router
from saq import Worker

from gateway.api.auth import bearer_guard, ensure_api_token
from gateway.api.deliveries import DeliveryController
from gateway.api.records import EventController, JobController
from gateway.api.subscriptions import SubscriptionController
from gateway.config.loader import load_config
from gateway.config.model import GatewayConfig
from gateway.delivery.signing import generate_secret
from gateway.ids import new_id
from gateway.ingress.routes import build_route_handlers
from gateway.jobs import JobQueue, WorkerRuntime, create_worker
from gateway.settings import Settings
from gateway.store import queries
from gateway.store.database import Database
from gateway.store.embedded import start_embedded_postgres

logger = logging.getLogger(__name__)


class Gateway:
    """The running parts one process shares: config, database, queue, worker."""

    def __init__(self, settings: Settings, config: GatewayConfig) -> None:
        self.settings = settings
        self._config = config
        self.database_url: str | None = None
        self.db: Database = None  # type: ignore[assignment]
        self.queue: JobQueue = None  # type: ignore[assignment]
        self.worker: Worker | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._worker_runtime: WorkerRuntime | None = None

    def config(self) -> GatewayConfig:
        return self._config

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
        self.queue = JobQueue(self.settings.queue_url or url)
        await self.queue.connect()
        await sync_config_subscriptions(self.db, self._config)
        if run_worker:
            self.start_worker()

    def start_worker(self) -> None:
        self._worker_runtime = WorkerRuntime(
            self.db, self.queue, self.config, self.settings.allow_private_networks
        )
        self.worker = create_worker(self._worker_runtime)
        self.worker.SIGNALS = []  # the server owns SIGINT and SIGTERM
        self._worker_task = asyncio.create_task(self.worker.start())

    async def stop(self) -> None:
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
        for variable in route.verify.defaulted_variables:
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
        body: dict[str, Any] = {"status_code": exc.status_code, "detail": exc.detail}
        if exc.extra:
            body.update(
                exc.extra if isinstance(exc.extra, dict) else {"extra": exc.extra}
            )
        return Response(body, status_code=exc.status_code, headers=exc.headers)
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


def create_app(
    settings: Settings, *, run_worker: bool = True, config: GatewayConfig | None = None
) -> Litestar:
    """Compile the config and build the application; raise ConfigError if invalid."""
    config = config or load_config(settings.config_dir)
    warn_default_secrets(config)
    gateway = Gateway(settings, config)
    token = ensure_api_token(settings.data_dir, settings.api_token)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await gateway.start(run_worker)
        logger.info(
            "mfo ready: %d routes, %d pipelines, %d subscriptions from %s (config %s)",
            len(config.routes),
            len(config.pipelines),
            len(config.subscriptions),
            settings.config_dir,
            config.version,
        )
        try:
            yield
        finally:
            await gateway.stop()

    api = Router(
        path="/",
        route_handlers=[
            SubscriptionController,
            DeliveryController,
            EventController,
            JobController,
        ],
        guards=[bearer_guard(token)],
    )
    webhooks = build_route_handlers(gateway, config.routes)
    return Litestar(
        route_handlers=[healthz, readyz, api, *webhooks],
        lifespan=[lifespan],
        state=State({"mfo": gateway}),
        exception_handlers={Exception: _internal_error},
        openapi_config=OpenAPIConfig(title="mfo", version="0.1.0", path="/schema"),
        logging_config=None,
        debug=False,
    )
