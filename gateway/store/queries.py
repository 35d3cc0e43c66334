"""SQL for every table; each function takes an open connection."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from gateway.store.database import Connection

# requests and events


async def insert_request(conn: Connection, row: dict[str, Any]) -> bool:
    """Insert a received request; return False when its idempotency key exists."""
    cursor = await conn.execute(
        "INSERT INTO mfo_requests (id, provider, route, method, path, headers, body,"
        " remote_addr, idempotency_key)"
        " VALUES (%(id)s, %(provider)s, %(route)s, %(method)s, %(path)s, %(headers)s,"
        " %(body)s, %(remote_addr)s, %(idempotency_key)s)"
        " ON CONFLICT (provider, idempotency_key) WHERE idempotency_key IS NOT NULL"
        " DO NOTHING RETURNING id",
        {**row, "headers": Jsonb(row["headers"])},
    )
    return await cursor.fetchone() is not None


async def find_duplicate(
    conn: Connection, provider: str, idempotency_key: str
) -> tuple[str, list[str]] | None:
    """Return the request id and event ids stored under an idempotency key."""
    cursor = await conn.execute(
        "SELECT r.id, coalesce(array_agg(e.id ORDER BY e.id)"
        " FILTER (WHERE e.id IS NOT NULL), '{}') AS event_ids"
        " FROM mfo_requests r LEFT JOIN mfo_events e ON e.request_id = r.id"
        " WHERE r.provider = %s AND r.idempotency_key = %s GROUP BY r.id",
        (provider, idempotency_key),
    )
    row = await cursor.fetchone()
    return (row["id"], list(row["event_ids"])) if row else None


async def insert_event(conn: Connection, row: dict[str, Any]) -> bool:
    """Insert an event; return False when its source key was already used."""
    cursor = await conn.execute(
        "INSERT INTO mfo_events (id, type, data, request_id, provider, route, run_id,"
        " source_key) VALUES (%(id)s, %(type)s, %(data)s, %(request_id)s,"
        " %(provider)s, %(route)s, %(run_id)s, %(source_key)s)"
        " ON CONFLICT (source_key) DO NOTHING RETURNING id",
        {
            "request_id": None,
            "provider": None,
            "route": None,
            "run_id": None,
            "source_key": None,
            **row,
            "data": Jsonb(row["data"]),
        },
    )
    return await cursor.fetchone() is not None


async def event_by_source_key(
    conn: Connection, source_key: str
) -> dict[str, Any] | None:
    cursor = await conn.execute(
        "SELECT * FROM mfo_events WHERE source_key = %s", (source_key,)
    )
    return await cursor.fetchone()


async def get_event(conn: Connection, event_id: str) -> dict[str, Any] | None:
    cursor = await conn.execute(
        "SELECT e.*, r.received_at, r.idempotency_key FROM mfo_events e"
        " LEFT JOIN mfo_requests r ON r.id = e.request_id WHERE e.id = %s",
        (event_id,),
    )
    return await cursor.fetchone()


# pipeline runs


async def insert_run(
    conn: Connection, run_id: str, pipeline: str, event_id: str, job_key: str
) -> bool:
    """Insert a queued run; return False if the event already has a run of it."""
    cursor = await conn.execute(
        "INSERT INTO mfo_pipeline_runs (id, pipeline, event_id, job_key)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (event_id, pipeline) DO NOTHING"
        " RETURNING id",
        (run_id, pipeline, event_id, job_key),
    )
    return await cursor.fetchone() is not None


async def get_run(conn: Connection, run_id: str) -> dict[str, Any] | None:
    cursor = await conn.execute(
        "SELECT * FROM mfo_pipeline_runs WHERE id = %s", (run_id,)
    )
    return await cursor.fetchone()


async def start_run(conn: Connection, run_id: str) -> dict[str, Any] | None:
    """Mark a queued or interrupted run as running; None if it has finished."""
    cursor = await conn.execute(
        "UPDATE mfo_pipeline_runs SET status = 'running', started_at = now(),"
        " attempts = attempts + 1, steps = '[]', error = NULL"
        " WHERE id = %s AND status IN ('queued', 'running') RETURNING *",
        (run_id,),
    )
    return await cursor.fetchone()


async def save_run_steps(conn: Connection, run_id: str, steps: list[Any]) -> None:
    await conn.execute(
        "UPDATE mfo_pipeline_runs SET steps = %s WHERE id = %s", (Jsonb(steps), run_id)
    )


async def finish_run(
    conn: Connection, run_id: str, status: str, steps: list[Any], error: str | None
) -> None:
    await conn.execute(
        "UPDATE mfo_pipeline_runs SET status = %s, steps = %s, error = %s,"
        " finished_at = now() WHERE id = %s",
        (status, Jsonb(steps), error, run_id),
    )


async def unfinished_runs(
    conn: Connection, created_before: datetime, after: str | None, limit: int
) -> list[dict[str, Any]]:
    """Lock queued or running runs created before a time, skipping locked ones.

    Rows come in id order, which is creation order, after the id `after`.
    """
    cursor = await conn.execute(
        "SELECT id, status, job_key, started_at FROM mfo_pipeline_runs"
        " WHERE status IN ('queued', 'running') AND created_at < %s AND id > %s"
        " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
        (created_before, after or "", limit),
    )
    return await cursor.fetchall()


async def set_run_job_keys(conn: Connection, keys: Sequence[tuple[str, str]]) -> None:
    """Store the job key enqueued for each run id."""
    if not keys:
        return
    await conn.execute(
        "UPDATE mfo_pipeline_runs r SET job_key = k.key"
        " FROM unnest(%s::text[], %s::text[]) AS k(id, key) WHERE r.id = k.id",
        ([run_id for run_id, _ in keys], [key for _, key in keys]),
    )


# subscriptions

# Every column but previous_secret, which only signing reads.
_SUBSCRIPTION_COLUMNS = (
    "id, name, source, url, events, secret, filter, template, headers, timeout,"
    " connect_timeout, retry, max_in_flight, rate_limit, disable_after, description,"
    " status, status_reason, failing_since, previous_secret_expires_at, created_at,"
    " updated_at"
)
# How long the secret that a changed subscriptions.yaml replaces stays valid.
CONFIG_SECRET_GRACE_SECONDS = 24 * 3600


async def upsert_config_subscription(conn: Connection, row: dict[str, Any]) -> None:
    """Create or update a subscription declared in YAML, keeping a generated secret."""
    await conn.execute(
        "INSERT INTO mfo_subscriptions (id, name, source, url, events, secret, filter,"
        " template, headers, timeout, retry, description)"
        " VALUES (%(id)s, %(name)s, 'config', %(url)s, %(events)s, %(secret)s,"
        " %(filter)s, %(template)s, %(headers)s, %(timeout)s, %(retry)s,"
        " %(description)s)"
        " ON CONFLICT (name) DO UPDATE SET url = EXCLUDED.url,"
        " events = EXCLUDED.events,"
        " secret = CASE WHEN %(secret_given)s THEN EXCLUDED.secret"
        "   ELSE mfo_subscriptions.secret END,"
        " previous_secret = CASE WHEN %(secret_given)s"
        "   AND EXCLUDED.secret <> mfo_subscriptions.secret"
        "   THEN mfo_subscriptions.secret ELSE mfo_subscriptions.previous_secret END,"
        " previous_secret_expires_at = CASE WHEN %(secret_given)s"
        "   AND EXCLUDED.secret <> mfo_subscriptions.secret"
        "   THEN now() + make_interval(secs => %(grace)s)"
        "   ELSE mfo_subscriptions.previous_secret_expires_at END,"
        " filter = EXCLUDED.filter, template = EXCLUDED.template,"
        " headers = EXCLUDED.headers, timeout = EXCLUDED.timeout,"
        " retry = EXCLUDED.retry, description = EXCLUDED.description,"
        " deleted_at = NULL, updated_at = now()",
        {
            **row,
            "template": Jsonb(row["template"]) if row["template"] is not None else None,
            "headers": Jsonb(row["headers"]),
            "retry": Jsonb(row["retry"]),
            "grace": CONFIG_SECRET_GRACE_SECONDS,
        },
    )


async def set_delivery_settings(
    conn: Connection, name: str, settings: dict[str, Any]
) -> None:
    """Store the limits and connect timeout of a subscription declared in YAML."""
    await conn.execute(
        "UPDATE mfo_subscriptions SET connect_timeout = %(connect_timeout)s,"
        " max_in_flight = %(max_in_flight)s, rate_limit = %(rate_limit)s,"
        " disable_after = %(disable_after)s, updated_at = now()"
        " WHERE name = %(name)s AND source = 'config' AND ("
        "   connect_timeout, max_in_flight, rate_limit, disable_after"
        " ) IS DISTINCT FROM ("
        "   %(connect_timeout)s::double precision, %(max_in_flight)s::integer,"
        "   %(rate_limit)s::double precision, %(disable_after)s::double precision)",
        {**settings, "name": name},
    )


async def retire_config_subscriptions(conn: Connection, keep: Sequence[str]) -> None:
    """Mark YAML subscriptions that the config no longer declares as deleted."""
    cursor = await conn.execute(
        "UPDATE mfo_subscriptions SET deleted_at = now(), updated_at = now()"
        " WHERE source = 'config' AND deleted_at IS NULL AND NOT (name = ANY(%s))"
        " RETURNING id",
        (list(keep),),
    )
    await _fail_pending_deliveries(conn, [row["id"] for row in await cursor.fetchall()])


async def _fail_pending_deliveries(conn: Connection, sub_ids: Sequence[str]) -> None:
    """Fail the pending deliveries of deleted subscriptions, which nothing will send.

    A delivery whose attempt is in flight is locked and skipped; its attempt
    finishes it, or fails it on the next try.
    """
    if not sub_ids:
        return
    await conn.execute(
        "UPDATE mfo_deliveries SET status = 'failed', next_attempt_at = NULL,"
        " last_error = 'subscription was deleted', finished_at = now(),"
        " updated_at = now(), slot_at = NULL"
        " WHERE id IN (SELECT id FROM mfo_deliveries"
        "   WHERE subscription_id = ANY(%s) AND status = 'pending'"
        "   FOR UPDATE SKIP LOCKED)",
        (list(sub_ids),),
    )


async def insert_subscription(conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
    cursor = await conn.execute(
        "INSERT INTO mfo_subscriptions (id, source, url, events, secret, filter,"
        " template, headers, timeout, connect_timeout, retry, max_in_flight,"
        " rate_limit, disable_after, description)"
        " VALUES (%(id)s, 'api', %(url)s, %(events)s, %(secret)s, %(filter)s,"
        " %(template)s, %(headers)s, %(timeout)s, %(connect_timeout)s, %(retry)s,"
        " %(max_in_flight)s, %(rate_limit)s, %(disable_after)s, %(description)s)"
        f" RETURNING {_SUBSCRIPTION_COLUMNS}",
        {
            **row,
            "template": Jsonb(row["template"]) if row["template"] is not None else None,
            "headers": Jsonb(row["headers"]),
            "retry": Jsonb(row["retry"]),
        },
    )
    result = await cursor.fetchone()
    assert result is not None
    return result


async def receiving_subscriptions(conn: Connection) -> list[dict[str, Any]]:
    """Return the subscriptions that get deliveries: active ones, and paused ones."""
    cursor = await conn.execute(
        "SELECT id, status, events, filter FROM mfo_subscriptions"
        " WHERE status IN ('active', 'paused') AND deleted_at IS NULL"
    )
    return await cursor.fetchall()


async def list_subscriptions(conn: Connection) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM mfo_subscriptions"
        " WHERE deleted_at IS NULL ORDER BY created_at, id"
    )
    return await cursor.fetchall()


async def get_subscription(conn: Connection, sub_id: str) -> dict[str, Any] | None:
    cursor = await conn.execute(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM mfo_subscriptions"
        " WHERE (id = %s OR name = %s) AND deleted_at IS NULL",
        (sub_id, sub_id),
    )
    return await cursor.fetchone()


async def delete_subscription(conn: Connection, sub_id: str) -> bool:
    """Mark a subscription deleted and fail its pending deliveries."""
    cursor = await conn.execute(
        "UPDATE mfo_subscriptions SET deleted_at = now(), updated_at = now()"
        " WHERE id = %s AND deleted_at IS NULL RETURNING id",
        (sub_id,),
    )
    deleted = await cursor.fetchone() is not None
    if deleted:
        await _fail_pending_deliveries(conn, [sub_id])
    return deleted


async def change_subscription_status(
    conn: Connection,
    sub_id: str,
    status: str,
    reason: str | None,
    before: Sequence[str],
) -> dict[str, Any] | None:
    """Set a subscription's status if it is now one of `before`; return the new row.

    Any status but `disabled` also clears `failing_since`.
    """
    cursor = await conn.execute(
        "UPDATE mfo_subscriptions SET status = %s, status_reason = %s,"
        " failing_since = CASE WHEN %s = 'disabled' THEN failing_since END,"
        " updated_at = now() WHERE id = %s AND deleted_at IS NULL"
        f" AND status = ANY(%s) RETURNING {_SUBSCRIPTION_COLUMNS}",
        (status, reason, status, sub_id, list(before)),
    )
    return await cursor.fetchone()


async def mark_subscription_failing(conn: Connection, sub_id: str) -> None:
    """Remember when a run of failed attempts began, unless it is already known."""
    await conn.execute(
        "UPDATE mfo_subscriptions SET failing_since = now()"
        " WHERE id = %s AND failing_since IS NULL",
        (sub_id,),
    )


async def clear_subscription_failing(conn: Connection, sub_id: str) -> None:
    await conn.execute(
        "UPDATE mfo_subscriptions SET failing_since = NULL"
        " WHERE id = %s AND failing_since IS NOT NULL",
        (sub_id,),
    )


async def rotate_secret(
    conn: Connection, sub_id: str, secret: str, grace_seconds: float
) -> dict[str, Any] | None:
    """Replace a subscription's secret; the old one also signs until the grace ends."""
    cursor = await conn.execute(
        "UPDATE mfo_subscriptions SET previous_secret = secret, secret = %(secret)s,"
        " previous_secret_expires_at = now() + make_interval(secs => %(grace)s),"
        " updated_at = now() WHERE id = %(id)s AND deleted_at IS NULL"
        f" RETURNING {_SUBSCRIPTION_COLUMNS}",
        {"secret": secret, "grace": grace_seconds, "id": sub_id},
    )
    return await cursor.fetchone()


async def runs_for_event(conn: Connection, event_id: str) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        "SELECT id, pipeline, status, error, created_at, finished_at"
        " FROM mfo_pipeline_runs WHERE event_id = %s ORDER BY id",
        (event_id,),
    )
    return await cursor.fetchall()
