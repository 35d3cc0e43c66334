"""Make one attempt of a delivery and decide what happens next."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from gateway.delivery.sender import AttemptOutcome, render_body, send_attempt
from gateway.events import Work, deliver_work
from gateway.store import queries
from gateway.store.database import Connection, Database

logger = logging.getLogger(__name__)

# A job that arrives this much before its delivery is due is a stray duplicate.
_EARLY_TOLERANCE = timedelta(seconds=1)


@dataclass(frozen=True)
class DeliveryRuntime:
    db: Database
    http: httpx.AsyncClient
    allow_private: bool


def next_delay(
    retry: dict[str, Any], attempts_made: int, retry_after: float | None
) -> float | None:
    """Return seconds until the next attempt, or None when the schedule is spent."""
    schedule = list(retry.get("schedule", []))
    if attempts_made > len(schedule):
        return None
    if retry_after is not None:
        return retry_after
    delay = float(schedule[attempts_made - 1])
    jitter = float(retry.get("jitter", 0.0))
    return max(0.0, delay * random.uniform(1 - jitter, 1 + jitter))


async def deliver(runtime: DeliveryRuntime, delivery_id: str) -> tuple[str, list[Work]]:
    """Attempt a due delivery; return its status and any retry to enqueue."""
    async with runtime.db.transaction() as conn:
        row = await queries.delivery_for_sending(conn, delivery_id)
        if row is None:
            return "busy", []
        if row["status"] != "pending":
            return row["status"], []
        if row["subscription_deleted_at"] is not None:
            await _finish(conn, row, "failed", None, "subscription was deleted")
            return "failed", []
        if row["subscription_status"] != "active":
            return "held", []
        due = row["next_attempt_at"]
        if due is not None and due > datetime.now(UTC) + _EARLY_TOLERANCE:
            return "scheduled", []
        return await _attempt(conn, runtime, row)


async def _attempt(
    conn: Connection, runtime: DeliveryRuntime, row: dict[str, Any]
) -> tuple[str, list[Work]]:
    body = render_body(
        row["event_id"],
        row["event_type"],
        row["event_created_at"],
        row["event_data"],
        row["template"],
    )
    outcome = await send_attempt(
        runtime.http,
        url=row["url"],
        body=body,
        message_id=row["id"],
        secrets=[row["secret"]],
        extra_headers=row["headers"] or {},
        timeout=row["timeout"],
        allow_private=runtime.allow_private,
    )
    number = row["attempts"] + 1
    await queries.record_attempt(conn, _attempt_row(row["id"], number, outcome))
    _log_attempt(row, number, outcome)

    if outcome.succeeded:
        await _finish(conn, row, "succeeded", outcome, None, number)
        return "succeeded", []
    if outcome.gone:
        reason = f"subscriber answered 410 Gone to delivery {row['id']}"
        await queries.set_subscription_status(
            conn, row["subscription_id"], "disabled", reason
        )
        await _finish(conn, row, "failed", outcome, outcome.error, number)
        logger.error("subscription %s disabled: %s", row["subscription_id"], reason)
        return "failed", []
    delay = next_delay(row["retry"], number, outcome.retry_after)
    if delay is None:
        await _finish(conn, row, "failed", outcome, outcome.error, number)
        logger.error(
            "delivery %s to subscription %s failed after %d attempts: %s",
            row["id"],
            row["subscription_id"],
            number,
            outcome.error,
        )
        return "failed", []
    due = datetime.now(UTC) + timedelta(seconds=delay)
    await queries.update_delivery(
        conn,
        row["id"],
        status="pending",
        attempts=number,
        next_attempt_at=due,
        last_status=outcome.status_code,
        last_error=outcome.error,
    )
    logger.warning(
        "delivery %s attempt %d failed (%s); retry in %.1fs",
        row["id"],
        number,
        outcome.error,
        delay,
    )
    return "pending", [deliver_work(row["id"], number, scheduled=due.timestamp())]


async def _finish(
    conn: Connection,
    row: dict[str, Any],
    status: str,
    outcome: AttemptOutcome | None,
    error: str | None,
    attempts: int | None = None,
) -> None:
    await queries.update_delivery(
        conn,
        row["id"],
        status=status,
        attempts=row["attempts"] if attempts is None else attempts,
        next_attempt_at=None,
        last_status=outcome.status_code if outcome else None,
        last_error=error,
    )


def _attempt_row(
    delivery_id: str, number: int, outcome: AttemptOutcome
) -> dict[str, Any]:
    return {
        "delivery_id": delivery_id,
        "number": number,
        "started_at": outcome.started_at,
        "duration_ms": outcome.duration_ms,
        "status_code": outcome.status_code,
        "response_headers": outcome.response_headers,
        "response_body": outcome.response_body,
        "error": outcome.error,
    }


def _log_attempt(row: dict[str, Any], number: int, outcome: AttemptOutcome) -> None:
    logger.info(
        "delivery %s attempt %d subscription=%s event=%s status=%s duration_ms=%.1f%s",
        row["id"],
        number,
        row["subscription_id"],
        row["event_id"],
        outcome.status_code if outcome.status_code is not None else "-",
        outcome.duration_ms,
        f" error={outcome.error}" if outcome.error else "",
    )
