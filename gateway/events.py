"""Store events and fan them out to pipelines and subscriptions.

Everything an event causes is written in the transaction that stores it: one
pipeline run per matching pipeline and one delivery per matching
subscription. Jobs are put on the queue only after the commit. A lost job
therefore never loses work, because the sweep finds the row and enqueues it
again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from gateway.config.model import GatewayConfig, match_event_type
from gateway.config.templates import Expression, RenderError, compile_expression
from gateway.ids import new_id
from gateway.store import deliveries, queries
from gateway.store.database import Connection, Database

logger = logging.getLogger(__name__)

DELIVER_JOB = "deliver"
DELIVER_MANY_JOB = "deliver_many"
# First attempts of deliveries created together share one queue job of at
# most this many, which saves the queue's per-job work on each of the others.
DELIVERIES_PER_JOB = 32
RUN_PIPELINE_JOB = "run_pipeline"
DELIVERY_FAILED = "delivery.failed"
DELIVERY_RECOVERED = "delivery.recovered"
SUBSCRIPTION_DISABLED = "subscription.disabled"
# Events the gateway emits about its own deliveries. A bare `*` pattern does
# not match them; a subscription names them, or a pattern such as `delivery.*`.
OPERATIONAL_EVENT_TYPES = (DELIVERY_FAILED, DELIVERY_RECOVERED, SUBSCRIPTION_DISABLED)


@dataclass(frozen=True)
class Work:
    """A job to enqueue once the rows it refers to are committed."""

    function: str
    key: str
    kwargs: dict[str, Any]
    scheduled: float = 0.0


class WorkQueue(Protocol):
    async def enqueue_work(self, work: Sequence[Work]) -> None: ...


@dataclass
class NewEvent:
    type: str
    data: Any


@dataclass
class IngestResult:
    request_id: str
    event_ids: list[str]
    duplicate: bool
    work: list[Work] = field(default_factory=list)


def new_tag(reason: str) -> str:
    """Return a job key suffix that no other job has, such as `:sweep-1a2b3c4d`."""
    return f":{reason}-{secrets.token_hex(4)}"


def deliver_work(
    delivery_id: str, attempt: int, scheduled: float = 0.0, tag: str = ""
) -> Work:
    """Describe the job that makes attempt number `attempt + 1` of a delivery.

    `scheduled` is a Unix time, 0 for now. The key has the format that
    `gateway.store.deliveries` builds in SQL.
    """
    key = f"deliver:{delivery_id}:{attempt}{tag}"
    return Work(DELIVER_JOB, key, {"delivery_id": delivery_id}, scheduled)


class JobGrouper:
    """Hand out job keys that deliveries created together share, a few dozen each.

    Deliveries with the same key are sent by one job: `merge_deliveries`
    turns their works into it before the enqueue.
    """

    def __init__(self, size: int = DELIVERIES_PER_JOB) -> None:
        self.size = size
        self._key = ""
        self._used = size

    def key(self) -> str:
        if self._used >= self.size:
            self._key = "deliver:batch" + new_tag("new")
            self._used = 0
        self._used += 1
        return self._key


def merge_deliveries(work: Sequence[Work]) -> list[Work]:
    """Turn delivery works that share a key into one `deliver_many` work."""
    groups: dict[str, list[str]] = {}
    for item in work:
        if item.function == DELIVER_JOB:
            groups.setdefault(item.key, []).append(item.kwargs["delivery_id"])
    merged: list[Work] = []
    for item in work:
        if item.function != DELIVER_JOB:
            merged.append(item)
            continue
        # The first work of a key carries its whole group, so later ones are skipped.
        ids = groups.pop(item.key, None)
        if ids is None:
            continue
        if len(ids) == 1:
            merged.append(item)
        else:
            many = {"delivery_ids": ids}
            merged.append(Work(DELIVER_MANY_JOB, item.key, many, item.scheduled))
    return merged


def run_work(run_id: str, tag: str = "") -> Work:
    return Work(RUN_PIPELINE_JOB, f"run:{run_id}{tag}", {"run_id": run_id})


@lru_cache(maxsize=1024)
def _compiled_filter(source: str) -> Expression:
    return compile_expression(source)


def _pattern_matches(pattern: str, event_type: str) -> bool:
    if pattern == "*" and event_type in OPERATIONAL_EVENT_TYPES:
        return False
    return match_event_type(pattern, event_type)


def _subscription_matches(sub: dict[str, Any], event: dict[str, Any]) -> bool:
    if not any(_pattern_matches(pattern, event["type"]) for pattern in sub["events"]):
        return False
    if not sub["filter"]:
        return True
    try:
        return _compiled_filter(sub["filter"]).test({"event": event})
    except (RenderError, ValueError) as exc:
        logger.warning(
            "subscription %s: filter failed on event %s: %s",
            sub["id"],
            event["id"],
            exc,
        )
        return False


async def fan_out(
    conn: Connection,
    config: GatewayConfig,
    events: Sequence[dict[str, Any]],
    subscriptions: Sequence[dict[str, Any]] | None = None,
    grouper: JobGrouper | None = None,
) -> list[Work]:
    """Create the runs and deliveries that stored events cause.

    Paused subscriptions get deliveries too; those wait until they resume.
    `subscriptions` are the receiving subscriptions read in this transaction,
    or None to read them here. The deliveries' first attempts share jobs
    with keys from `grouper`, a new one when None.
    """
    work: list[Work] = []
    grouper = grouper or JobGrouper()
    if subscriptions is None:
        subscriptions = await queries.receiving_subscriptions(conn)
    for event in events:
        for pipeline in config.pipelines_for(event["type"]):
            if pipeline.when is not None and not _pipeline_wants(pipeline.when, event):
                continue
            run = run_work(new_id("run"))
            run_id = run.kwargs["run_id"]
            if await queries.insert_run(
                conn, run_id, pipeline.name, event["id"], run.key
            ):
                work.append(run)
        matching = [sub for sub in subscriptions if _subscription_matches(sub, event)]
        work += await _create_deliveries(conn, event, matching, grouper)
    return work


async def _create_deliveries(
    conn: Connection,
    event: dict[str, Any],
    subscriptions: Sequence[dict[str, Any]],
    grouper: JobGrouper,
) -> list[Work]:
    jobs = {}
    rows = []
    for sub in subscriptions:
        delivery_id = new_id("msg")
        job = Work(DELIVER_JOB, grouper.key(), {"delivery_id": delivery_id})
        jobs[delivery_id] = job
        rows.append((delivery_id, sub["id"], job.key))
    created = await deliveries.insert_deliveries(conn, event["id"], event["type"], rows)
    # A paused subscription's deliveries get their jobs when it resumes, so
    # no job waits in the queue for them meanwhile.
    active = {sub["id"] for sub in subscriptions if sub.get("status") != "paused"}
    return [
        job
        for (delivery_id, sub_id, _), job in zip(rows, jobs.values(), strict=True)
        if delivery_id in created and sub_id in active
    ]


async def _create_delivery(
    conn: Connection, event: dict[str, Any], sub_id: str, replay: int
) -> list[Work]:
    job = deliver_work(new_id("msg"), 0)
    delivery_id = job.kwargs["delivery_id"]
    created = await deliveries.insert_delivery(
        conn, delivery_id, event["id"], sub_id, event["type"], job.key, replay
    )
    return [job] if created else []


async def replay_event(
    conn: Connection, event_id: str, missing_only: bool
) -> tuple[list[str], list[Work]] | None:
    """Deliver a stored event again to every subscription that matches it now.

    Each new delivery has a new id, so receivers do not drop it as a
    duplicate. `missing_only` skips subscriptions that already have a
    delivery of the event. Return the new delivery ids and their jobs, or
    None when the event does not exist.
    """
    event = await queries.get_event(conn, event_id)
    if event is None:
        return None
    replay = await deliveries.next_replay(conn, event_id)
    skip = await deliveries.delivered_subscriptions(conn, event_id)
    work: list[Work] = []
    for sub in await queries.receiving_subscriptions(conn):
        if missing_only and sub["id"] in skip:
            continue
        if _subscription_matches(sub, event):
            work += await _create_delivery(conn, event, sub["id"], replay)
    return [job.kwargs["delivery_id"] for job in work], work


def _pipeline_wants(when: Expression, event: dict[str, Any]) -> bool:
    try:
        return when.test({"event": event})
    except RenderError as exc:
        logger.warning("pipeline condition failed on event %s: %s", event["id"], exc)
        return False


async def store_request(
    db: Database,
    config: GatewayConfig,
    request_row: dict[str, Any],
    events: Sequence[NewEvent],
) -> IngestResult:
    """Store a request and its events in one transaction, or find its duplicate."""
    async with db.transaction() as conn:
        return await _store_request_in(conn, config, request_row, events, None)


async def _store_request_in(
    conn: Connection,
    config: GatewayConfig,
    request_row: dict[str, Any],
    events: Sequence[NewEvent],
    subscriptions: Sequence[dict[str, Any]] | None,
    grouper: JobGrouper | None = None,
) -> IngestResult:
    inserted = await queries.insert_request(conn, request_row)
    if not inserted:
        duplicate = await queries.find_duplicate(
            conn, request_row["provider"], request_row["idempotency_key"]
        )
        assert duplicate is not None
        request_id, event_ids = duplicate
        return IngestResult(request_id, event_ids, duplicate=True)
    rows = []
    for new_event in events:
        row = {
            "id": new_id("evt"),
            "type": new_event.type,
            "data": new_event.data,
            "request_id": request_row["id"],
            "provider": request_row["provider"],
            "route": request_row["route"],
        }
        await queries.insert_event(conn, row)
        rows.append(row)
    work = await fan_out(conn, config, rows, subscriptions, grouper)
    return IngestResult(request_row["id"], [row["id"] for row in rows], False, work)


_PendingRequest = tuple[
    GatewayConfig, dict[str, Any], Sequence[NewEvent], "asyncio.Future[IngestResult]"
]


class RequestBatcher:
    """Store requests that arrive together in one transaction, one commit for many.

    Up to `max_in_flight` transactions run at once, so that PostgreSQL works
    on one while this process prepares the next. A request waits only when
    all of them are busy, so an idle gateway stores each request at once.
    Under load the requests that arrive meanwhile share the next transaction,
    which saves a commit (a WAL flush), a pool checkout and the read of the
    receiving subscriptions per request.
    The jobs of a committed batch are enqueued together by a background task,
    after the requests have their results. A job lost there, as when the
    process stops first, is enqueued again by the sweep.
    """

    def __init__(
        self,
        db: Database,
        queue: WorkQueue,
        max_batch: int = 64,
        max_in_flight: int = 4,
    ) -> None:
        self.db = db
        self.queue = queue
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._pending: list[_PendingRequest] = []
        self._flushers: set[asyncio.Task[None]] = set()
        # Counted apart from the tasks, because a finished task leaves the
        # set only in a later turn of the event loop.
        self._flushing = 0
        self._enqueuers: set[asyncio.Task[None]] = set()

    async def store(
        self,
        config: GatewayConfig,
        request_row: dict[str, Any],
        events: Sequence[NewEvent],
    ) -> IngestResult:
        """Store a request and its events, or find its duplicate, as `store_request`."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[IngestResult] = loop.create_future()
        self._pending.append((config, request_row, events, future))
        if self._flushing < self.max_in_flight:
            self._flushing += 1
            flusher = asyncio.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                await self._store_batch(batch)
        finally:
            self._flushing -= 1

    async def _store_batch(self, batch: list[_PendingRequest]) -> None:
        try:
            async with self.db.transaction() as conn:
                subscriptions = await queries.receiving_subscriptions(conn)
                grouper = JobGrouper()
                results = [
                    await _store_request_in(
                        conn, config, row, events, subscriptions, grouper
                    )
                    for config, row, events, _ in batch
                ]
        except Exception as exc:
            if len(batch) > 1:
                # One request's failure must not fail the others: store each alone.
                for item in batch:
                    await self._store_batch([item])
                return
            _settle(batch[0][3], exception=exc)
            return
        work: list[Work] = []
        for (_, _, _, future), result in zip(batch, results, strict=True):
            _settle(future, result=result)
            work += result.work
        if work:
            task = asyncio.create_task(self.queue.enqueue_work(work))
            self._enqueuers.add(task)
            task.add_done_callback(self._enqueuers.discard)


def _settle(
    future: asyncio.Future[IngestResult],
    result: IngestResult | None = None,
    exception: BaseException | None = None,
) -> None:
    """Resolve a waiting request, unless its handler was cancelled meanwhile."""
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        assert result is not None
        future.set_result(result)


async def emit_event(
    conn: Connection,
    config: GatewayConfig,
    event_type: str,
    data: Any,
    run_id: str,
    source_key: str,
) -> tuple[str, list[Work]]:
    """Store an event emitted by a pipeline step, once per source key."""
    row = {
        "id": new_id("evt"),
        "type": event_type,
        "data": data,
        "run_id": run_id,
        "source_key": source_key,
    }
    if not await queries.insert_event(conn, row):
        existing = await queries.event_by_source_key(conn, source_key)
        assert existing is not None
        return existing["id"], []
    return row["id"], await fan_out(conn, config, [row])


async def emit_operational_event(
    conn: Connection,
    config: GatewayConfig,
    event_type: str,
    data: dict[str, Any],
    source_key: str,
) -> list[Work]:
    """Store an event about the gateway's own deliveries, once per source key."""
    row = {
        "id": new_id("evt"),
        "type": event_type,
        "data": data,
        "source_key": source_key,
    }
    if not await queries.insert_event(conn, row):
        return []
    logger.info("emitted %s event %s", event_type, row["id"])
    return await fan_out(conn, config, [row])
