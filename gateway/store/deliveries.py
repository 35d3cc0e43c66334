"""SQL for deliveries, their attempts, and the per-subscription send limits.

A worker holds a delivery's row lock for the whole attempt, so a locked row
means an attempt is in flight. `job_key` names the queue job last enqueued
for a row; a key is built as `deliver:{id}:{attempts}{tag}`, the same in SQL
here and in `gateway.events.deliver_work`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from gateway.store.database import Connection

# Two-key advisory locks in this key space mark in-flight attempts; saq uses
# key space 0, and one-key locks (the migration lock) never overlap these.
_IN_FLIGHT_LOCKS = 0x6D666F02

_SENDING_COLUMNS = (
    "d.id, d.status, d.attempts, d.next_attempt_at, d.event_id, d.event_type,"
    " d.subscription_id, d.dead_lettered_at, d.slot_at,"
    " e.data AS event_data, e.created_at AS event_created_at,"
    " s.name AS subscription_name, s.url, s.secret, s.previous_secret,"
    " s.previous_secret_expires_at, s.template, s.headers, s.timeout,"
    " s.connect_timeout, s.retry, s.max_in_flight, s.rate_limit, s.disable_after,"
    " s.failing_since, s.status AS subscription_status,"
    " s.deleted_at AS subscription_deleted_at"
)
# Taken with the row lock: one of the subscription's `max_in_flight` slots,
# each a transaction-scoped advisory lock, so PostgreSQL frees it when the
# attempt commits, rolls back, or its worker dies. True without a limit.
_IN_FLIGHT_SLOT = (
    ", s.max_in_flight IS NULL OR s.max_in_flight < 1 OR EXISTS ("
    " SELECT 1 FROM generate_series(0, s.max_in_flight - 1) AS slot"
    f" WHERE pg_try_advisory_xact_lock({_IN_FLIGHT_LOCKS}, hashtext(s.id || ':' || slot))"
    " ) AS in_flight_slot"
)
_SENDING_FROM = (
    " FROM mfo_deliveries d JOIN mfo_events e ON e.id = d.event_id"
    " JOIN mfo_subscriptions s ON s.id = d.subscription_id WHERE d.id = %s"
)


async def insert_delivery(
    conn: Connection,
    delivery_id: str,
    event_id: str,
    sub_id: str,
    event_type: str,
    job_key: str,
    replay: int = 0,
) -> bool:
    """Insert a delivery due now; return False when this replay of it exists."""
    cursor = await conn.execute(
        "INSERT INTO mfo_deliveries (id, event_id, subscription_id, event_type,"
        " next_attempt_at, job_key, replay) VALUES (%s, %s, %s, %s, now(), %s, %s)"
        " ON CONFLICT (event_id, subscription_id, replay) DO NOTHING RETURNING id",
        (delivery_id, event_id, sub_id, event_type, job_key, replay),
    )
    return await cursor.fetchone() is not None


async def insert_deliveries(
    conn: Connection,
    event_id: str,
    event_type: str,
    rows: Sequence[tuple[str, str, str]],
    replay: int = 0,
) -> set[str]:
    """Insert deliveries of one event due now, one statement for all of them.

    `rows` are (delivery id, subscription id, job key). Return the ids
    inserted, leaving out those whose replay of the event exists already.
    """
    if not rows:
        return set()
    cursor = await conn.execute(
        "INSERT INTO mfo_deliveries (id, event_id, subscription_id, event_type,"
        " next_attempt_at, job_key, replay)"
        " SELECT d.id, %s, d.subscription_id, %s, now(), d.job_key, %s"
        " FROM unnest(%s::text[], %s::text[], %s::text[])"
        " AS d(id, subscription_id, job_key)"
        " ON CONFLICT (event_id, subscription_id, replay) DO NOTHING RETURNING id",
        (
            event_id,
            event_type,
            replay,
            [row[0] for row in rows],
            [row[1] for row in rows],
            [row[2] for row in rows],
        ),
    )
    return {row["id"] for row in await cursor.fetchall()}


async def peek_delivery(conn: Connection, delivery_id: str) -> dict[str, Any] | None:
    """Read a delivery with its event and subscription, without locking it."""
    cursor = await conn.execute(
        f"SELECT {_SENDING_COLUMNS}{_SENDING_FROM}", (delivery_id,)
    )
    return await cursor.fetchone()


async def lock_delivery(
    conn: Connection, delivery_id: str, wait_seconds: float
) -> dict[str, Any] | None:
    """Lock a delivery for an attempt, as `peek_delivery` reads it.

    Waits at most `wait_seconds` (0: not at all) for a lock someone else
    holds, then raises `psycopg.errors.LockNotAvailable`. Later statements
    of the transaction wait for locks without a limit again. The row's
    `in_flight_slot` tells whether this transaction also took one of the
    subscription's in-flight slots.
    """
    columns = _SENDING_COLUMNS + _IN_FLIGHT_SLOT
    if wait_seconds <= 0:
        cursor = await conn.execute(
            f"SELECT {columns}{_SENDING_FROM} FOR UPDATE OF d NOWAIT",
            (delivery_id,),
        )
        return await cursor.fetchone()
    await conn.execute(
        "SELECT set_config('lock_timeout', %s, true)", (f"{int(wait_seconds * 1000)}",)
    )
    cursor = await conn.execute(
        f"SELECT {columns}{_SENDING_FROM} FOR UPDATE OF d", (delivery_id,)
    )
    row = await cursor.fetchone()
    await conn.execute("SELECT set_config('lock_timeout', '0', true)")
    return row


_RECORD_ATTEMPT = (
    "WITH attempt AS (INSERT INTO mfo_attempts (delivery_id, number, started_at,"
    " duration_ms, status_code, response_headers, response_body, error)"
    " VALUES (%(id)s, %(number)s, %(started_at)s, %(duration_ms)s,"
    " %(status_code)s, %(response_headers)s, %(response_body)s, %(error)s)"
    " ON CONFLICT (delivery_id, number) DO NOTHING) "
)


async def update_delivery(
    conn: Connection,
    delivery_id: str,
    *,
    status: str,
    attempts: int,
    next_attempt_at: datetime | None,
    last_status: int | None,
    last_error: str | None,
    job_key: str | None = None,
    dead_letter: bool = False,
    attempt: dict[str, Any] | None = None,
) -> None:
    """Store the outcome of an attempt; a finished delivery gets `finished_at`.

    `job_key` None keeps the stored key; `dead_letter` stamps `dead_lettered_at`.
    The reserved send slot is always released. `attempt`, a row of
    `mfo_attempts` without its delivery id, is inserted by the same statement.
    """
    params: dict[str, Any] = {
        "status": status,
        "attempts": attempts,
        "next": next_attempt_at,
        "last_status": last_status,
        "last_error": last_error,
        "job_key": job_key,
        "dead_letter": dead_letter,
        "id": delivery_id,
    }
    if attempt is not None:
        params.update(attempt, response_headers=Jsonb(attempt["response_headers"]))
        params.pop("delivery_id", None)
    await conn.execute(
        (_RECORD_ATTEMPT if attempt is not None else "")
        + "UPDATE mfo_deliveries SET status = %(status)s, attempts = %(attempts)s,"
        " next_attempt_at = %(next)s, last_status = %(last_status)s,"
        " last_error = %(last_error)s, updated_at = now(), slot_at = NULL,"
        " job_key = coalesce(%(job_key)s, job_key),"
        " dead_lettered_at = CASE WHEN %(dead_letter)s THEN now()"
        "   ELSE dead_lettered_at END,"
        " finished_at = CASE WHEN %(status)s IN ('succeeded', 'failed') THEN now() END"
        " WHERE id = %(id)s",
        params,
    )


async def postpone_delivery(
    conn: Connection,
    delivery_id: str,
    attempts: int,
    due: datetime,
    job_key: str,
    slot_at: datetime | None,
) -> bool:
    """Move a pending delivery's next attempt to `due` without counting an attempt.

    Return False when the delivery is no longer pending at `attempts`
    attempts, because someone else moved it on.
    """
    cursor = await conn.execute(
        "UPDATE mfo_deliveries SET next_attempt_at = %s, job_key = %s, slot_at = %s,"
        " updated_at = now() WHERE id = %s AND status = 'pending' AND attempts = %s"
        " RETURNING id",
        (due, job_key, slot_at, delivery_id, attempts),
    )
    return await cursor.fetchone() is not None


# A pending delivery of a paused or disabled subscription waits for a resume.
_HELD = (
    "(d.status = 'pending' AND s.status <> 'active' AND s.deleted_at IS NULL) AS held"
)


async def get_delivery(conn: Connection, delivery_id: str) -> dict[str, Any] | None:
    cursor = await conn.execute(
        "SELECT d.*, s.name AS subscription_name, s.url, "
        + _HELD
        + " FROM mfo_deliveries d"
        " JOIN mfo_subscriptions s ON s.id = d.subscription_id WHERE d.id = %s",
        (delivery_id,),
    )
    return await cursor.fetchone()


async def list_attempts(conn: Connection, delivery_id: str) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        "SELECT number, started_at, duration_ms, status_code, response_headers,"
        " response_body, error FROM mfo_attempts WHERE delivery_id = %s"
        " ORDER BY number",
        (delivery_id,),
    )
    return await cursor.fetchall()


def _delivery_filters(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if filters.get("ids"):
        clauses.append("d.id = ANY(%s)")
        params.append(list(filters["ids"]))
    if filters.get("status"):
        clauses.append("d.status = %s")
        params.append(filters["status"])
    if filters.get("not_pending"):
        clauses.append("d.status <> 'pending'")
    if filters.get("live_subscription"):
        clauses.append("s.deleted_at IS NULL")
    if filters.get("subscription"):
        clauses.append("(d.subscription_id = %s OR s.name = %s)")
        params += [filters["subscription"], filters["subscription"]]
    if filters.get("event_type"):
        pattern = filters["event_type"].replace("%", r"\%").replace("_", r"\_")
        clauses.append("d.event_type LIKE %s")
        params.append(pattern.replace("*", "%"))
    if filters.get("event_id"):
        clauses.append("d.event_id = %s")
        params.append(filters["event_id"])
    if filters.get("since"):
        clauses.append("d.created_at >= %s")
        params.append(filters["since"])
    if filters.get("until"):
        clauses.append("d.created_at < %s")
        params.append(filters["until"])
    if filters.get("after"):
        clauses.append("d.id > %s")
        params.append(filters["after"])
    where = " WHERE " + " AND ".join(clauses) if clauses else ""
    return where, params


async def list_deliveries(
    conn: Connection, filters: dict[str, Any], limit: int
) -> list[dict[str, Any]]:
    where, params = _delivery_filters(filters)
    cursor = await conn.execute(
        "SELECT d.id, d.event_id, d.subscription_id, s.name AS subscription_name,"
        " d.event_type, d.status, d.attempts, d.last_status, d.last_error,"
        " d.next_attempt_at, d.replay, d.dead_lettered_at, d.created_at,"
        " d.updated_at, d.finished_at, "
        + _HELD
        + " FROM mfo_deliveries d JOIN mfo_subscriptions s ON s.id = d.subscription_id"
        f"{where} ORDER BY d.id LIMIT %s",
        (*params, limit),
    )
    return await cursor.fetchall()


async def count_deliveries(conn: Connection, filters: dict[str, Any]) -> int:
    where, params = _delivery_filters(filters)
    cursor = await conn.execute(
        "SELECT count(*) AS n FROM mfo_deliveries d"
        f" JOIN mfo_subscriptions s ON s.id = d.subscription_id{where}",
        params,
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row["n"])


async def requeue_deliveries(
    conn: Connection, ids: Sequence[str], tag: str
) -> list[dict[str, Any]]:
    """Put finished deliveries back to pending, due now; return their ids and keys.

    Deliveries of deleted subscriptions are left as they are, because no
    attempt could be made for them.
    """
    cursor = await conn.execute(
        "UPDATE mfo_deliveries d SET status = 'pending', next_attempt_at = now(),"
        " finished_at = NULL, updated_at = now(), slot_at = NULL,"
        " job_key = 'deliver:' || d.id || ':' || d.attempts || %s"
        " FROM mfo_subscriptions s WHERE s.id = d.subscription_id"
        " AND s.deleted_at IS NULL AND d.id = ANY(%s) AND d.status <> 'pending'"
        " RETURNING d.id, d.attempts, d.job_key",
        (tag, list(ids)),
    )
    return await cursor.fetchall()


async def claim_pending(
    conn: Connection,
    sub_id: str,
    after: str | None,
    limit: int,
    tag: str,
    per_job: int = 1,
) -> list[dict[str, Any]]:
    """Give the next `limit` pending deliveries of a subscription new job keys.

    Return each one's id, attempts, due time and key, so the caller can
    enqueue them, such as when a paused subscription resumes. Deliveries due
    now share a key `per_job` at a time; one due later has a key of its own.
    """
    cursor = await conn.execute(
        "UPDATE mfo_deliveries d SET job_key = CASE"
        "   WHEN d.next_attempt_at <= now() THEN"
        "     'deliver:batch' || %(tag)s || ':' || (batch.n - 1) / %(per_job)s"
        "   ELSE 'deliver:' || d.id || ':' || d.attempts || %(tag)s END,"
        " slot_at = NULL FROM ("
        "   SELECT id, row_number() OVER (ORDER BY id) AS n FROM mfo_deliveries"
        "   WHERE subscription_id = %(sub)s AND status = 'pending'"
        "   AND id > %(after)s ORDER BY id LIMIT %(limit)s"
        " ) AS batch WHERE d.id = batch.id"
        " RETURNING d.id, d.attempts, d.next_attempt_at, d.job_key",
        {
            "tag": tag,
            "sub": sub_id,
            "after": after or "",
            "limit": limit,
            "per_job": per_job,
        },
    )
    rows = await cursor.fetchall()
    return sorted(rows, key=lambda row: row["id"])


async def due_deliveries(
    conn: Connection,
    due_before: datetime,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Lock pending deliveries due before a time, skipping those being sent.

    Deliveries of paused or disabled subscriptions are held, so they are
    left out. Those of deleted subscriptions are included, so that an
    attempt marks them failed. Rows come in (next_attempt_at, id) order,
    after the `after` position.
    """
    position = "AND (d.next_attempt_at, d.id) > (%(at)s, %(id)s)" if after else ""
    cursor = await conn.execute(
        "SELECT d.id, d.attempts, d.job_key, d.next_attempt_at"
        " FROM mfo_deliveries d JOIN mfo_subscriptions s ON s.id = d.subscription_id"
        " WHERE d.status = 'pending' AND d.next_attempt_at < %(before)s"
        " AND (s.status = 'active' OR s.deleted_at IS NOT NULL)"
        f" {position} ORDER BY d.next_attempt_at, d.id LIMIT %(limit)s"
        " FOR UPDATE OF d SKIP LOCKED",
        {
            "before": due_before,
            "at": after[0] if after else None,
            "id": after[1] if after else None,
            "limit": limit,
        },
    )
    return await cursor.fetchall()


async def set_job_keys(conn: Connection, keys: Sequence[tuple[str, str]]) -> None:
    """Store the job key enqueued for each delivery id."""
    if not keys:
        return
    await conn.execute(
        "UPDATE mfo_deliveries d SET job_key = k.key"
        " FROM unnest(%s::text[], %s::text[]) AS k(id, key) WHERE d.id = k.id",
        ([delivery_id for delivery_id, _ in keys], [key for _, key in keys]),
    )


async def deliveries_for_event(conn: Connection, event_id: str) -> list[dict[str, Any]]:
    return await list_deliveries(conn, {"event_id": event_id}, 1000)


async def next_replay(conn: Connection, event_id: str) -> int:
    """Return the replay number the next replay of an event gets."""
    cursor = await conn.execute(
        "SELECT coalesce(max(replay), 0) + 1 AS replay FROM mfo_deliveries"
        " WHERE event_id = %s",
        (event_id,),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row["replay"])


async def delivered_subscriptions(conn: Connection, event_id: str) -> set[str]:
    """Return the ids of subscriptions that already have a delivery of an event."""
    cursor = await conn.execute(
        "SELECT DISTINCT subscription_id FROM mfo_deliveries WHERE event_id = %s",
        (event_id,),
    )
    return {row["subscription_id"] for row in await cursor.fetchall()}


# per-subscription send limits


async def reserve_send_slot(
    conn: Connection, sub_id: str, interval_seconds: float
) -> datetime:
    """Reserve the subscription's next free send time and return it.

    Sends are spaced `interval_seconds` apart: the slot is the later of now
    and the previous slot plus the interval. Run it outside a transaction,
    so the pacing row is locked only for this statement.
    """
    cursor = await conn.execute(
        "INSERT INTO mfo_subscription_pacing AS p (subscription_id, next_send_at)"
        " VALUES (%(sub)s, now() + make_interval(secs => %(interval)s))"
        " ON CONFLICT (subscription_id) DO UPDATE SET next_send_at ="
        "   greatest(p.next_send_at, now()) + make_interval(secs => %(interval)s)"
        " RETURNING next_send_at - make_interval(secs => %(interval)s) AS slot",
        {"sub": sub_id, "interval": interval_seconds},
    )
    row = await cursor.fetchone()
    assert row is not None
    slot: datetime = row["slot"]
    return slot


async def count_due(conn: Connection, sub_id: str, cap: int) -> int:
    """Count a subscription's pending deliveries due within a minute, up to `cap`."""
    cursor = await conn.execute(
        "SELECT count(*) AS n FROM (SELECT 1 FROM mfo_deliveries"
        " WHERE subscription_id = %s AND status = 'pending'"
        " AND next_attempt_at < now() + interval '1 minute' LIMIT %s) AS due",
        (sub_id, cap),
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row["n"])
