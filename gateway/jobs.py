"""The saq queue, the worker functions it runs, and the sweep that refills it.

The queue lives in the gateway's PostgreSQL database by default, or in Redis
when `MFO_QUEUE_URL` names one. It only holds work: PostgreSQL rows say what
is due, and the sweep enqueues any due delivery or run whose job was lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from saq import Queue, Worker

from gateway.config.model import GatewayConfig
from gateway.delivery.dispatch import DeliveryRuntime, deliver
from gateway.events import DELIVER_JOB, RUN_PIPELINE_JOB, Work, deliver_work, run_work
from gateway.pipelines.runner import run_pipeline
from gateway.pipelines.steps import StepRuntime
from gateway.store import queries
from gateway.store.database import Database

logger = logging.getLogger(__name__)

QUEUE_NAME = "mfo"
SWEEP_INTERVAL = 15.0
# A job not picked up this long after its row became due is presumed lost.
_SWEEP_GRACE = timedelta(seconds=30)
_RUN_STALL = timedelta(minutes=10)
_JOB_TIMEOUT = 600


class JobQueue:
    """Enqueue gateway work on a saq queue."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.saq = Queue.from_url(url, name=QUEUE_NAME)

    async def connect(self) -> None:
        await self.saq.connect()

    async def disconnect(self) -> None:
        await self.saq.disconnect()

    async def enqueue_work(self, work: Sequence[Work]) -> None:
        for item in work:
            await self.saq.enqueue(
                item.function,
                key=item.key,
                scheduled=int(item.scheduled),
                timeout=_JOB_TIMEOUT,
                retries=1,
                **item.kwargs,
            )

    async def ping(self) -> bool:
        try:
            await asyncio.wait_for(self.saq.count("queued"), timeout=2)
        except Exception:
            return False
        return True


class WorkerRuntime:
    """What the worker functions share: the database, the queue and an HTTP client."""

    def __init__(
        self,
        db: Database,
        queue: JobQueue,
        config: Callable[[], GatewayConfig],
        allow_private: bool,
    ) -> None:
        self.db = db
        self.queue = queue
        self.config = config
        self.allow_private = allow_private
        self.http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
            follow_redirects=False,
        )

    async def close(self) -> None:
        await self.http.aclose()


async def _deliver_job(ctx: dict[str, Any], *, delivery_id: str) -> str:
    runtime: WorkerRuntime = ctx["mfo"]
    delivery_runtime = DeliveryRuntime(runtime.db, runtime.http, runtime.allow_private)
    status, retries = await deliver(delivery_runtime, delivery_id)
    await runtime.queue.enqueue_work(retries)
    return status


async def _run_pipeline_job(ctx: dict[str, Any], *, run_id: str) -> str:
    runtime: WorkerRuntime = ctx["mfo"]
    work: list[Work] = []
    step_runtime = StepRuntime(
        db=runtime.db,
        config=runtime.config(),
        http=runtime.http,
        allow_private=runtime.allow_private,
        run_id=run_id,
        work=work,
    )
    status = await run_pipeline(step_runtime)
    await runtime.queue.enqueue_work(work)
    return status


_deliver_job.__qualname__ = _deliver_job.__name__ = DELIVER_JOB
_run_pipeline_job.__qualname__ = _run_pipeline_job.__name__ = RUN_PIPELINE_JOB


async def sweep_once(runtime: WorkerRuntime) -> int:
    """Enqueue every due delivery and stalled run whose job seems lost."""
    now = datetime.now(UTC)
    bucket = f":sweep{int(time.time() // SWEEP_INTERVAL)}"
    async with runtime.db.connection() as conn:
        deliveries = await queries.due_deliveries(conn, now - _SWEEP_GRACE)
        runs = await queries.stalled_runs(conn, now - _SWEEP_GRACE, now - _RUN_STALL)
    work = [deliver_work(row["id"], row["attempts"], tag=bucket) for row in deliveries]
    work += [run_work(run_id, tag=bucket) for run_id in runs]
    if work:
        logger.info(
            "sweep re-enqueued %d deliveries and %d runs", len(deliveries), len(runs)
        )
        await runtime.queue.enqueue_work(work)
    return len(work)


async def _sweep_forever(runtime: WorkerRuntime) -> None:
    while True:
        try:
            await sweep_once(runtime)
        except Exception:
            logger.exception("sweep failed; trying again in %.0fs", SWEEP_INTERVAL)
        await asyncio.sleep(SWEEP_INTERVAL)


def create_worker(runtime: WorkerRuntime, concurrency: int = 16) -> Worker:
    """Build a saq worker that runs deliveries, pipeline runs and the sweep."""
    sweeper: dict[str, asyncio.Task[None]] = {}

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["mfo"] = runtime
        sweeper["task"] = asyncio.create_task(_sweep_forever(runtime))

    async def shutdown(ctx: dict[str, Any]) -> None:
        task = sweeper.pop("task", None)
        if task is not None:
            task.cancel()

    worker = Worker(
        runtime.queue.saq,
        functions=[_deliver_job, _run_pipeline_job],
        concurrency=concurrency,
        startup=startup,
        shutdown=shutdown,
    )
    return worker
