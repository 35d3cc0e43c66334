"""Store events and fan them out to pipelines and subscriptions.

Everything an event causes is written in the transaction that stores it: one
pipeline run per matching pipeline and one delivery per matching
subscription. Only after the commit are jobs put on the queue, so a lost job
never loses work; the sweep finds the row and enqueues it again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from gateway.config.model import GatewayConfig, match_event_type
from gateway.config.templates import Expression, RenderError, compile_expression
from gateway.ids import new_id
from gateway.store import queries
from gateway.store.database import Connection, Database

logger = logging.getLogger(__name__)

DELIVER_JOB = "deliver"
RUN_PIPELINE_JOB = "run_pipeline"


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


def deliver_work(
    delivery_id: str, attempt: int, scheduled: float = 0.0, tag: str = ""
) -> Work:
    """Describe the job that makes attempt number `attempt + 1` of a delivery."""
    key = f"deliver:{delivery_id}:{attempt}{tag}"
    return Work(DELIVER_JOB, key, {"delivery_id": delivery_id}, scheduled)


def run_work(run_id: str, tag: str = "") -> Work:
    return Work(RUN_PIPELINE_JOB, f"run:{run_id}{tag}", {"run_id": run_id})


@lru_cache(maxsize=1024)
def _compiled_filter(source: str) -> Expression:
    return compile_expression(source)


def _subscription_matches(sub: dict[str, Any], event: dict[str, Any]) -> bool:
    if not any(match_event_type(pattern, event["type"]) for pattern in sub["events"]):
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
    conn: Connection, config: GatewayConfig, events: Sequence[dict[str, Any]]
) -> list[Work]:
    """Create the runs and deliveries that stored events cause."""
    work: list[Work] = []
    subscriptions = await queries.active_subscriptions(conn)
    for event in events:
        for pipeline in config.pipelines_for(event["type"]):
            if pipeline.when is not None and not _pipeline_wants(pipeline.when, event):
                continue
            run_id = new_id("run")
            await queries.insert_run(conn, run_id, pipeline.name, event["id"])
            work.append(run_work(run_id))
        for sub in subscriptions:
            if not _subscription_matches(sub, event):
                continue
            delivery_id = new_id("msg")
            created = await queries.insert_delivery(
                conn, delivery_id, event["id"], sub["id"], event["type"]
            )
            if created:
                work.append(deliver_work(delivery_id, 0))
    return work


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
        work = await fan_out(conn, config, rows)
    return IngestResult(request_row["id"], [row["id"] for row in rows], False, work)


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
