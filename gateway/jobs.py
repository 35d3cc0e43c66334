"""The saq queue, the worker functions it runs, and the sweep that refills it.

The queue lives in the gateway's PostgreSQL database by default, or in Redis
when `MFO_QUEUE_URL` names one. The queue contains work, not facts:
PostgreSQL rows record what is due and the key of the job last enqueued for
it. The sweep enqueues a new job for every due delivery and unfinished run
whose job is gone, as after a flushed Redis, a failed enqueue or a worker
killed mid-job.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from saq import Queue, Worker
from saq.job import Job, Status

from gateway.config.model import GatewayConfig
from gateway.delivery.dispatch import DeliveryRuntime, deliver
from gateway.delivery.egress import ClientShards, EgressPolicy, create_http_client
from gateway.delivery.policy import sync_delivery_settings
from gateway.events import (
    DELIVER_JOB,
    DELIVER_MANY_JOB,
    RUN_PIPELINE_JOB,
    Work,
    deliver_work,
    merge_deliveries,
    new_tag,
    run_work,
)
from gateway.pipelines.runner import run_pipeline
from gateway.pipelines.steps import StepRuntime
from gateway.store import deliveries, queries
from gateway.store.database import Database

logger = logging.getLogger(__name__)

QUEUE_NAME = "mfo"
SHUTDOWN_GRACE = 20
_JOB_TIMEOUT = 600
# A running pipeline whose job started this long ago is presumed dead.
_RUN_STALL = timedelta(minutes=10)
_SWEEP_BATCH = 500
# One sweep re-enqueues at most this many batches; the next sweep goes on.
_SWEEP_MAX_BATCHES = 20
_WAITING = (Status.NEW, Status.QUEUED)
# Jobs of one batch enqueued at once: enough to overlap round trips to the
# queue, few enough to leave saq's connection pool to the worker.
_ENQUEUE_CONCURRENCY = 8
# Attempts in flight at once in one worker process, whichever jobs carry
# them. Each keeps a database connection while it sends, so the gateway
# grows its pool to match (`Gateway.fit_pool`).
WORKER_CONCURRENCY = 16


class JobQueue:
    """Enqueue gateway work on a saq queue."""

    def __init__(self, url: str, name: str = QUEUE_NAME) -> None:
        self.url = url
        self.saq = Queue.from_url(url, name=name)

    async def connect(self) -> None:
        await self.saq.connect()

    async def disconnect(self) -> None:
        await self.saq.disconnect()

    async def enqueue_work(self, work: Sequence[Work]) -> None:
        """Enqueue jobs; a job that cannot be enqueued is left to the sweep.

        Every job's row is already committed, so a failure here delays the
        work but does not lose it, and the caller's request still succeeds.
        Deliveries that share a key become one job.
        """
        work = merge_deliveries(work)
        failures: list[tuple[str, Exception]] = []
        slots = asyncio.Semaphore(_ENQUEUE_CONCURRENCY)

        async def enqueue(item: Work) -> None:
            async with slots:
                try:
                    await self.saq.enqueue(
                        item.function,
                        key=item.key,
                        scheduled=int(item.scheduled),
                        timeout=_JOB_TIMEOUT,
                        retries=1,
                        **item.kwargs,
                    )
                except Exception as exc:
                    failures.append((item.key, exc))

        if len(work) == 1:
            await enqueue(work[0])
        else:
            await asyncio.gather(*(enqueue(item) for item in work))
        if failures:
            key, error = failures[0]
            logger.warning(
                "could not enqueue %d jobs (first %s): %s; the sweep enqueues them"
                " again",
                len(failures),
                key,
                error,
            )

    async def jobs(self, keys: Sequence[str | None]) -> list[Job | None]:
        """Return the queue's job for each key, None where it has none."""
        # Deliveries sent by one shared job have the same key, so each key is
        # looked up once.
        known = list(dict.fromkeys(key for key in keys if key))
        if not known:
            return [None] * len(keys)
        found = dict(zip(known, await self.saq.jobs(known), strict=True))
        return [found.get(key) if key else None for key in keys]

    async def ping(self) -> bool:
        try:
            await asyncio.wait_for(self.saq.count("queued"), timeout=2)
        except Exception:
            return False
        return True


class WorkerRuntime:
    """The resources the worker functions share: database, queue and HTTP client.

    Every outgoing request goes through the egress guard of `policy`, and at
    most `concurrency` attempts are in flight at once. The sweep runs every
    `sweep_interval` seconds. It treats the job of a row due
    `sweep_grace` seconds ago as lost unless the queue still has it waiting.
    """

    def __init__(
        self,
        db: Database,
        queue: JobQueue,
        config: Callable[[], GatewayConfig],
        policy: EgressPolicy,
        sweep_interval: float = 15.0,
        sweep_grace: float = 30.0,
        concurrency: int = WORKER_CONCURRENCY,
    ) -> None:
        self.db = db
        self.queue = queue
        self.config = config
        self.policy = policy
        self.sweep_interval = sweep_interval
        self.sweep_grace = timedelta(seconds=sweep_grace)
        self.http = create_http_client(policy)
        # Four shards of at least 16 connections, enough for every attempt.
        self.delivery_clients = ClientShards(
            policy, connections_per_shard=max(16, math.ceil(concurrency / 4))
        )
        self.delivery = DeliveryRuntime(db, self.delivery_clients, config)
        self.synced_version: str | None = None
        self.draining = False
        self.in_flight = 0
        self.send_slots = asyncio.Semaphore(concurrency)

    async def deliver(self, delivery_id: str) -> tuple[str, list[Work]]:
        """Make one attempt of a delivery once a send slot is free.

        Once the worker drains, an attempt not yet started is left due for
        the sweep of the next worker.
        """
        async with self.send_slots:
            if self.draining:
                return "left for the next worker", []
            return await deliver(self.delivery, delivery_id)

    async def drain(self, timeout: float) -> None:
        """Take no new jobs and wait up to `timeout` s for those in flight.

        A job that arrives while draining returns without working; its row
        stays due, and the sweep of the next worker enqueues it again.
        """
        self.draining = True
        deadline = asyncio.get_running_loop().time() + timeout
        while self.in_flight and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.http.aclose()
        await self.delivery_clients.aclose()


async def _deliver_job(ctx: dict[str, Any], *, delivery_id: str) -> str:
    runtime: WorkerRuntime = ctx["mfo"]
    if runtime.draining:
        return "left for the next worker"
    runtime.in_flight += 1
    try:
        status, work = await runtime.deliver(delivery_id)
    finally:
        runtime.in_flight -= 1
    await runtime.queue.enqueue_work(work)
    return status


async def _deliver_many_job(ctx: dict[str, Any], *, delivery_ids: list[str]) -> str:
    """Attempt several deliveries, as many at once as the send slots allow.

    A delivery whose attempt raises stays due, so the sweep enqueues it
    again; the others go on.
    """
    runtime: WorkerRuntime = ctx["mfo"]
    if runtime.draining:
        return "left for the next worker"
    runtime.in_flight += 1
    try:
        results = await asyncio.gather(
            *(runtime.deliver(delivery_id) for delivery_id in delivery_ids),
            return_exceptions=True,
        )
    finally:
        runtime.in_flight -= 1
    work: list[Work] = []
    statuses: dict[str, int] = {}
    for delivery_id, result in zip(delivery_ids, results, strict=True):
        if isinstance(result, BaseException):
            logger.error(
                "delivery %s failed in its job; the sweep retries it",
                delivery_id,
                exc_info=result,
            )
            status = "error"
        else:
            status, more = result
            work += more
        statuses[status] = statuses.get(status, 0) + 1
    await runtime.queue.enqueue_work(work)
    return ", ".join(f"{status}: {count}" for status, count in sorted(statuses.items()))


async def _run_pipeline_job(ctx: dict[str, Any], *, run_id: str) -> str:
    runtime: WorkerRuntime = ctx["mfo"]
    if runtime.draining:
        return "left for the next worker"
    work: list[Work] = []
    step_runtime = StepRuntime(
        db=runtime.db,
        config=runtime.config(),
        http=runtime.http,
        allow_private=runtime.policy.allow_private,
        run_id=run_id,
        work=work,
    )
    status = await run_pipeline(step_runtime)
    await runtime.queue.enqueue_work(work)
    return status


_deliver_job.__qualname__ = _deliver_job.__name__ = DELIVER_JOB
_deliver_many_job.__qualname__ = _deliver_many_job.__name__ = DELIVER_MANY_JOB
_run_pipeline_job.__qualname__ = _run_pipeline_job.__name__ = RUN_PIPELINE_JOB


def _job_alive(job: Job | None, stall: timedelta) -> bool:
    """Tell whether a job will still run, or is running and started within `stall`."""
    if job is None:
        return False
    if job.status in _WAITING:
        return True
    if job.status != Status.ACTIVE or not job.started:
        return False
    started = datetime.fromtimestamp(job.started / 1000, UTC)
    return datetime.now(UTC) - started < stall


async def sweep_once(runtime: WorkerRuntime) -> int:
    """Enqueue every due delivery and unfinished run whose job is gone.

    Rows being sent are locked and skipped. Each re-enqueued row gets a job
    key no other job has, stored before the enqueue, so a crash between the
    two leaves a key the next sweep finds missing. Return the jobs enqueued.
    """
    await _sync_delivery_settings(runtime)
    count = await _sweep_deliveries(runtime)
    count += await _sweep_runs(runtime)
    if count:
        logger.info("sweep re-enqueued %d lost jobs", count)
    return count


async def _sync_delivery_settings(runtime: WorkerRuntime) -> None:
    """Store YAML delivery settings again when a reload changed the config."""
    config = runtime.config()
    if config.version != runtime.synced_version:
        await sync_delivery_settings(runtime.db, config)
        runtime.synced_version = config.version


async def _sweep_deliveries(runtime: WorkerRuntime) -> int:
    count = 0
    after: tuple[datetime, str] | None = None
    due_before = datetime.now(UTC) - runtime.sweep_grace
    for _ in range(_SWEEP_MAX_BATCHES):
        async with runtime.db.transaction() as conn:
            rows = await deliveries.due_deliveries(
                conn, due_before, after, _SWEEP_BATCH
            )
            if not rows:
                break
            after = (rows[-1]["next_attempt_at"], rows[-1]["id"])
            jobs = await runtime.queue.jobs([row["job_key"] for row in rows])
            tag = new_tag("sweep")
            work = [
                deliver_work(row["id"], row["attempts"], tag=tag)
                for row, job in zip(rows, jobs, strict=True)
                if not _job_alive(job, runtime.sweep_grace)
            ]
            keys = [(item.kwargs["delivery_id"], item.key) for item in work]
            await deliveries.set_job_keys(conn, keys)
        await runtime.queue.enqueue_work(work)
        count += len(work)
        if len(rows) < _SWEEP_BATCH:
            break
    return count


async def _sweep_runs(runtime: WorkerRuntime) -> int:
    count = 0
    after: str | None = None
    created_before = datetime.now(UTC) - runtime.sweep_grace
    for _ in range(_SWEEP_MAX_BATCHES):
        async with runtime.db.transaction() as conn:
            rows = await queries.unfinished_runs(
                conn, created_before, after, _SWEEP_BATCH
            )
            if not rows:
                break
            after = rows[-1]["id"]
            jobs = await runtime.queue.jobs([row["job_key"] for row in rows])
            tag = new_tag("sweep")
            work = [
                run_work(row["id"], tag=tag)
                for row, job in zip(rows, jobs, strict=True)
                if not _job_alive(job, _RUN_STALL)
            ]
            keys = [(item.kwargs["run_id"], item.key) for item in work]
            await queries.set_run_job_keys(conn, keys)
        await runtime.queue.enqueue_work(work)
        count += len(work)
        if len(rows) < _SWEEP_BATCH:
            break
    return count


async def _sweep_forever(runtime: WorkerRuntime) -> None:
    while True:
        try:
            await sweep_once(runtime)
        except Exception:
            logger.exception(
                "sweep failed; trying again in %.0fs", runtime.sweep_interval
            )
        await asyncio.sleep(runtime.sweep_interval)


def create_worker(
    runtime: WorkerRuntime, concurrency: int = WORKER_CONCURRENCY
) -> Worker:
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
        functions=[_deliver_job, _deliver_many_job, _run_pipeline_job],
        concurrency=concurrency,
        startup=startup,
        shutdown=shutdown,
    )
    return worker
