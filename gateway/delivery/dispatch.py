"""Make one attempt of a delivery and decide what happens next.

A job for a delivery may arrive late, early, twice, or after the delivery
has finished, so the row in PostgreSQL decides. An attempt is made only
under the row's lock, while the delivery is pending and due and its
subscription is active, so duplicate jobs never add attempts.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.errors import LockNotAvailable

from gateway import metrics
from gateway.config.model import GatewayConfig
from gateway.config.templates import RenderError
from gateway.delivery.egress import ClientShards
from gateway.delivery.policy import next_delay
from gateway.delivery.sender import AttemptOutcome, render_body, send_attempt
from gateway.events import (
    DELIVERY_FAILED,
    DELIVERY_RECOVERED,
    OPERATIONAL_EVENT_TYPES,
    SUBSCRIPTION_DISABLED,
    Work,
    deliver_work,
    emit_operational_event,
    new_tag,
)
from gateway.store import deliveries, queries
from gateway.store.database import Connection, Database

logger = logging.getLogger(__name__)

# A job that arrives more than this before its delivery is due is a stray
# duplicate; one arriving less early waits for the due time.
_EARLY_TOLERANCE = timedelta(seconds=1)
# Statements other than attempts hold a delivery row for milliseconds, so a
# row still locked after this long is being sent by another worker.
_LOCK_WAIT = 1.0
# A job waits in place for a send slot this close; a later slot is rescheduled.
_SLOT_SLEEP_LIMIT = 1.0
# When every in-flight slot of a subscription is taken, a delivery tries again
# after about a second per slot's worth of deliveries waiting, at most a
# minute, spread so that waiting jobs do not wake together.
_IN_FLIGHT_SPREAD = (0.5, 1.5)
_IN_FLIGHT_MAX_WAIT = 60.0


@dataclass(frozen=True)
class DeliveryRuntime:
    """The database, guarded HTTP clients and config that an attempt uses."""

    db: Database
    clients: ClientShards
    config: Callable[[], GatewayConfig]


async def deliver(runtime: DeliveryRuntime, delivery_id: str) -> tuple[str, list[Work]]:
    """Attempt a due delivery; return what happened and the jobs to enqueue.

    Most jobs find their row unlocked, due and unpaced, and make the attempt
    under the first lock they take. A row that is locked, paced, or due in
    a moment takes the patient path, which waits for its turn first.
    """
    async with runtime.db.connection() as conn:
        try:
            async with conn.transaction():
                row = await deliveries.lock_delivery(conn, delivery_id, 0)
                if row is None:
                    return "missing", []
                waiting = _reason_to_wait(row)
                if waiting is not None:
                    return waiting, []
                if not _must_wait(row):
                    return await _attempt_locked(conn, runtime, row)
        except LockNotAvailable:
            pass
        return await _deliver_patiently(conn, runtime, delivery_id)


async def _deliver_patiently(
    conn: Connection, runtime: DeliveryRuntime, delivery_id: str
) -> tuple[str, list[Work]]:
    """Wait for the due time and the send slot without a lock, then attempt."""
    row = await deliveries.peek_delivery(conn, delivery_id)
    if row is None:
        return "missing", []
    waiting = _reason_to_wait(row)
    if waiting is not None:
        return waiting, []
    await _sleep_until_due(row)
    if row["rate_limit"]:
        paced = await _wait_for_send_slot(conn, row)
        if paced is not None:
            return paced
    try:
        async with conn.transaction():
            return await _deliver_locked(conn, runtime, delivery_id)
    except LockNotAvailable:
        return "busy", []


def _must_wait(row: dict[str, Any]) -> bool:
    """Tell whether a delivery is paced or not quite due, so it cannot go now."""
    due = row["next_attempt_at"]
    return bool(row["rate_limit"]) or (due is not None and due > datetime.now(UTC))


def _reason_to_wait(row: dict[str, Any]) -> str | None:
    """Say why no attempt is due now, or return None when one is."""
    if row["status"] != "pending":
        return str(row["status"])
    if row["subscription_deleted_at"] is not None:
        return None
    if row["subscription_status"] != "active":
        return "held"
    due = row["next_attempt_at"]
    if due is not None and due > datetime.now(UTC) + _EARLY_TOLERANCE:
        return "scheduled"
    return None


async def _sleep_until_due(row: dict[str, Any]) -> None:
    """Wait out the last second before the due time, never sending early.

    The queue schedules jobs in whole seconds, so a job may start up to a
    second before the attempt it carries is due.
    """
    due = row["next_attempt_at"]
    if due is not None:
        wait = (due - datetime.now(UTC)).total_seconds()
        if wait > 0:
            await asyncio.sleep(wait)


async def _wait_for_send_slot(
    conn: Connection, row: dict[str, Any]
) -> tuple[str, list[Work]] | None:
    """Keep a rate-limited subscription's sends spaced; None means send now.

    A slot reserved earlier and not yet stale is used; otherwise a new one is
    reserved. A slot within a second is waited for here, and a later one
    moves the delivery there.
    """
    interval = 1.0 / float(row["rate_limit"])
    now = datetime.now(UTC)
    slot = row["slot_at"]
    if slot is None or slot < now - timedelta(seconds=interval):
        slot = await deliveries.reserve_send_slot(
            conn, row["subscription_id"], interval
        )
    wait = (slot - datetime.now(UTC)).total_seconds()
    if wait <= _SLOT_SLEEP_LIMIT:
        if wait > 0:
            await asyncio.sleep(wait)
        return None
    job = deliver_work(row["id"], row["attempts"], slot.timestamp(), new_tag("paced"))
    moved = await deliveries.postpone_delivery(
        conn, row["id"], row["attempts"], slot, job.key, slot
    )
    return ("paced", [job]) if moved else ("busy", [])


async def _deliver_locked(
    conn: Connection, runtime: DeliveryRuntime, delivery_id: str
) -> tuple[str, list[Work]]:
    row = await deliveries.lock_delivery(conn, delivery_id, _LOCK_WAIT)
    if row is None:
        return "missing", []
    waiting = _reason_to_wait(row)
    if waiting is not None:
        return waiting, []
    return await _attempt_locked(conn, runtime, row)


async def _attempt_locked(
    conn: Connection, runtime: DeliveryRuntime, row: dict[str, Any]
) -> tuple[str, list[Work]]:
    """Attempt a delivery whose row this transaction has locked and found due."""
    if row["subscription_deleted_at"] is not None:
        await _finish(conn, row, "failed", None, "subscription was deleted")
        return "failed", []
    if not row["in_flight_slot"]:
        limit = row["max_in_flight"]
        return "throttled", await _wait_for_in_flight_slot(conn, row, limit)
    return await _attempt(conn, runtime, row)


async def _wait_for_in_flight_slot(
    conn: Connection, row: dict[str, Any], limit: int
) -> list[Work]:
    """Move a delivery whose subscription is at its in-flight limit a little later.

    The wait grows with the backlog, so a long queue behind a slow receiver
    wakes about `limit` jobs a second instead of all of them.
    """
    waiting = await deliveries.count_due(conn, row["subscription_id"], cap=1000)
    wait = min(max(1.0, waiting / limit), _IN_FLIGHT_MAX_WAIT)
    due = datetime.now(UTC) + timedelta(
        seconds=wait * random.uniform(*_IN_FLIGHT_SPREAD)
    )
    job = deliver_work(row["id"], row["attempts"], due.timestamp(), new_tag("busy"))
    await deliveries.postpone_delivery(
        conn, row["id"], row["attempts"], due, job.key, None
    )
    return [job]


async def _attempt(
    conn: Connection, runtime: DeliveryRuntime, row: dict[str, Any]
) -> tuple[str, list[Work]]:
    number = row["attempts"] + 1
    outcome = await _send(runtime, row)
    _log_attempt(row, number, outcome)
    metrics.observe_attempt(row, outcome)
    if outcome.succeeded:
        return await _succeed(conn, runtime, row, number, outcome)
    if outcome.gone:
        reason = f"the subscriber answered 410 Gone to delivery {row['id']}"
        work = await _disable(conn, runtime, row, number, reason)
        work += await _dead_letter(conn, runtime, row, number, outcome)
        return "failed", work
    return await _retry_or_dead_letter(conn, runtime, row, number, outcome)


async def _send(runtime: DeliveryRuntime, row: dict[str, Any]) -> AttemptOutcome:
    try:
        body = render_body(
            row["event_id"],
            row["event_type"],
            row["event_created_at"],
            row["event_data"],
            row["template"],
        )
    except RenderError as exc:
        # A template can be fixed by a reload, so this counts as a failed attempt.
        return AttemptOutcome(
            started_at=datetime.now(UTC), duration_ms=0.0, error=f"template: {exc}"
        )
    return await send_attempt(
        runtime.clients.next(),
        url=row["url"],
        body=body,
        message_id=row["id"],
        secrets=_signing_secrets(row),
        extra_headers=row["headers"] or {},
        timeout=row["timeout"],
        connect_timeout=row["connect_timeout"],
    )


def _signing_secrets(row: dict[str, Any]) -> list[str]:
    """Return the current secret, and the previous one while its grace period lasts."""
    secrets = [row["secret"]]
    expires = row["previous_secret_expires_at"]
    if row["previous_secret"] and expires and expires > datetime.now(UTC):
        secrets.append(row["previous_secret"])
    return secrets


async def _succeed(
    conn: Connection,
    runtime: DeliveryRuntime,
    row: dict[str, Any],
    number: int,
    outcome: AttemptOutcome,
) -> tuple[str, list[Work]]:
    await _finish(conn, row, "succeeded", outcome, None, number)
    if row["failing_since"] is not None:
        await queries.clear_subscription_failing(conn, row["subscription_id"])
    if row["dead_lettered_at"] is None or row["event_type"] in OPERATIONAL_EVENT_TYPES:
        return "succeeded", []
    logger.info("delivery %s recovered after a dead letter", row["id"])
    work = await emit_operational_event(
        conn,
        runtime.config(),
        DELIVERY_RECOVERED,
        _delivery_data(row, number, outcome),
        f"{DELIVERY_RECOVERED}:{row['id']}:{number}",
    )
    return "succeeded", work


async def _retry_or_dead_letter(
    conn: Connection,
    runtime: DeliveryRuntime,
    row: dict[str, Any],
    number: int,
    outcome: AttemptOutcome,
) -> tuple[str, list[Work]]:
    work = await _track_failure(conn, runtime, row, number)
    delay = next_delay(row["retry"], row["event_type"], number, outcome.retry_after)
    if delay is None:
        work += await _dead_letter(conn, runtime, row, number, outcome)
        return "failed", work
    due = datetime.now(UTC) + timedelta(seconds=delay)
    job = deliver_work(row["id"], number, scheduled=due.timestamp())
    await deliveries.update_delivery(
        conn,
        row["id"],
        status="pending",
        attempts=number,
        next_attempt_at=due,
        last_status=outcome.status_code,
        last_error=outcome.error,
        job_key=job.key,
        attempt=_attempt_row(row["id"], number, outcome),
    )
    logger.warning(
        "delivery %s attempt %d failed (%s); retry in %.1fs",
        row["id"],
        number,
        outcome.error,
        delay,
    )
    return "pending", [job, *work]


async def _track_failure(
    conn: Connection, runtime: DeliveryRuntime, row: dict[str, Any], number: int
) -> list[Work]:
    """Note that the subscription is failing, and disable it past its window."""
    since = row["failing_since"]
    if since is None:
        await queries.mark_subscription_failing(conn, row["subscription_id"])
        return []
    window = row["disable_after"]
    failing_for = (datetime.now(UTC) - since).total_seconds()
    if window is None or failing_for <= window:
        return []
    reason = (
        f"every attempt failed for {failing_for:.0f}s since"
        f" {since.astimezone(UTC).isoformat()}, past the limit of {window:g}s"
    )
    return await _disable(conn, runtime, row, number, reason)


async def _disable(
    conn: Connection,
    runtime: DeliveryRuntime,
    row: dict[str, Any],
    number: int,
    reason: str,
) -> list[Work]:
    changed = await queries.change_subscription_status(
        conn, row["subscription_id"], "disabled", reason, ("active", "paused")
    )
    if changed is None:
        return []
    logger.error("subscription %s disabled: %s", row["subscription_id"], reason)
    data = {
        "subscription_id": row["subscription_id"],
        "subscription_name": row["subscription_name"],
        "url": row["url"],
        "reason": reason,
        "delivery_id": row["id"],
    }
    key = f"{SUBSCRIPTION_DISABLED}:{row['subscription_id']}:{row['id']}:{number}"
    return await emit_operational_event(
        conn, runtime.config(), SUBSCRIPTION_DISABLED, data, key
    )


async def _dead_letter(
    conn: Connection,
    runtime: DeliveryRuntime,
    row: dict[str, Any],
    number: int,
    outcome: AttemptOutcome,
) -> list[Work]:
    await _finish(conn, row, "failed", outcome, outcome.error, number, True)
    metrics.observe_dead_letter(row)
    logger.error(
        "delivery %s of event %s to subscription %s is a dead letter after %d"
        " attempts: %s",
        row["id"],
        row["event_id"],
        row["subscription_id"],
        number,
        outcome.error,
    )
    if row["event_type"] in OPERATIONAL_EVENT_TYPES:
        # Reporting a failed report could loop, so it stops at the log line.
        return []
    return await emit_operational_event(
        conn,
        runtime.config(),
        DELIVERY_FAILED,
        _delivery_data(row, number, outcome),
        f"{DELIVERY_FAILED}:{row['id']}:{number}",
    )


def _delivery_data(
    row: dict[str, Any], number: int, outcome: AttemptOutcome
) -> dict[str, Any]:
    return {
        "delivery_id": row["id"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "subscription_id": row["subscription_id"],
        "subscription_name": row["subscription_name"],
        "url": row["url"],
        "attempts": number,
        "last_status": outcome.status_code,
        "last_error": outcome.error,
    }


async def _finish(
    conn: Connection,
    row: dict[str, Any],
    status: str,
    outcome: AttemptOutcome | None,
    error: str | None,
    attempts: int | None = None,
    dead_letter: bool = False,
) -> None:
    """Finish a delivery, recording the attempt `attempts` when `outcome` is one."""
    attempt = None
    if outcome is not None and attempts is not None:
        attempt = _attempt_row(row["id"], attempts, outcome)
    await deliveries.update_delivery(
        conn,
        row["id"],
        status=status,
        attempts=row["attempts"] if attempts is None else attempts,
        next_attempt_at=None,
        last_status=outcome.status_code if outcome else None,
        last_error=error,
        dead_letter=dead_letter,
        attempt=attempt,
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
