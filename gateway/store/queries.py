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
    conn: Connection, run_id: str, pipeline: str, event_id: str
) -> None:
    await conn.execute(
        "INSERT INTO mfo_pipeline_runs (id, pipeline, event_id) VALUES (%s, %s, %s)"
        " ON CONFLICT (event_id, pipeline) DO NOTHING",
        (run_id, pipeline, event_id),
    )


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


async def stalled_runs(
    conn: Connection, queued_before: datetime, started_before: datetime
) -> list[str]:
    """Return runs still queued, or running so long that their worker must have died."""
    cursor = await conn.execute(
        "SELECT id FROM mfo_pipeline_runs WHERE (status = 'queued' AND created_at < %s)"
        " OR (status = 'running' AND started_at < %s) ORDER BY created_at LIMIT 1000",
        (queued_before, started_before),
    )
    return [row["id"] for row in await cursor.fetchall()]


# subscriptions

_SUBSCRIPTION_COLUMNS = (
    "id, name, source, url, events, secret, filter, template, headers, timeout,"
    " retry, description, status, status_reason, created_at, updated_at"
)


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
        " filter = EXCLUDED.filter, template = EXCLUDED.template,"
        " headers = EXCLUDED.headers, timeout = EXCLUDED.timeout,"
        " retry = EXCLUDED.retry, description = EXCLUDED.description,"
        " deleted_at = NULL, updated_at = now()",
        {
            **row,
            "template": Jsonb(row["template"]) if row["template"] is not None else None,
            "headers": Jsonb(row["headers"]),
            "retry": Jsonb(row["retry"]),
        },
    )


async def retire_config_subscriptions(conn: Connection, keep: Sequence[str]) -> None:
    """Mark YAML subscriptions that the config no longer declares as deleted."""
    await conn.execute(
        "UPDATE mfo_subscriptions SET deleted_at = now(), updated_at = now()"
        " WHERE source = 'config' AND deleted_at IS NULL AND NOT (name = ANY(%s))",
        (list(keep),),
    )


async def insert_subscription(conn: Connection, row: dict[str, Any]) -> dict[str, Any]:
    cursor = await conn.execute(
        "INSERT INTO mfo_subscriptions (id, source, url, events, secret, filter,"
        " template, headers, timeout, retry, description)"
        " VALUES (%(id)s, 'api', %(url)s, %(events)s, %(secret)s, %(filter)s,"
        " %(template)s, %(headers)s, %(timeout)s, %(retry)s, %(description)s)"
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


async def active_subscriptions(conn: Connection) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        "SELECT id, events, filter FROM mfo_subscriptions"
        " WHERE status = 'active' AND deleted_at IS NULL"
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
    cursor = await conn.execute(
        "UPDATE mfo_subscriptions SET deleted_at = now(), updated_at = now()"
        " WHERE id = %s AND deleted_at IS NULL RETURNING id",
        (sub_id,),
    )
    return await cursor.fetchone() is not None


async def set_subscription_status(
    conn: Connection, sub_id: str, status: str, reason: str | None
) -> None:
    await conn.execute(
        "UPDATE mfo_subscriptions SET status = %s, status_reason = %s,"
        " updated_at = now() WHERE id = %s",
        (status, reason, sub_id),
    )


# deliveries and attempts


async def insert_delivery(
    conn: Connection, delivery_id: str, event_id: str, sub_id: str, event_type: str
) -> bool:
    cursor = await conn.execute(
        "INSERT INTO mfo_deliveries (id, event_id, subscription_id, event_type,"
        " next_attempt_at) VALUES (%s, %s, %s, %s, now())"
        " ON CONFLICT (event_id, subscription_id) DO NOTHING RETURNING id",
        (delivery_id, event_id, sub_id, event_type),
    )
    return await cursor.fetchone() is not None


async def delivery_for_sending(
    conn: Connection, delivery_id: str
) -> dict[str, Any] | None:
    """Lock a pending delivery with its event and subscription, or return None."""
    cursor = await conn.execute(
        "SELECT d.id, d.status, d.attempts, d.next_attempt_at, d.event_id, d.event_type,"
        " d.subscription_id, e.data AS event_data, e.created_at AS event_created_at,"
        " s.url, s.secret, s.template, s.headers, s.timeout, s.retry,"
        " s.status AS subscription_status, s.deleted_at AS subscription_deleted_at"
        " FROM mfo_deliveries d JOIN mfo_events e ON e.id = d.event_id"
        " JOIN mfo_subscriptions s ON s.id = d.subscription_id"
        " WHERE d.id = %s FOR UPDATE OF d SKIP LOCKED",
        (delivery_id,),
    )
    return await cursor.fetchone()


async def record_attempt(conn: Connection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO mfo_attempts (delivery_id, number, started_at, duration_ms,"
        " status_code, response_headers, response_body, error)"
        " VALUES (%(delivery_id)s, %(number)s, %(started_at)s, %(duration_ms)s,"
        " %(status_code)s, %(response_headers)s, %(response_body)s, %(error)s)"
        " ON CONFLICT (delivery_id, number) DO NOTHING",
        {**row, "response_headers": Jsonb(row["response_headers"])},
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
) -> None:
    await conn.execute(
        "UPDATE mfo_deliveries SET status = %s, attempts = %s, next_attempt_at = %s,"
        " last_status = %s, last_error = %s, updated_at = now(),"
        " finished_at = CASE WHEN %s IN ('succeeded', 'failed') THEN now() END"
        " WHERE id = %s",
        (
            status,
            attempts,
            next_attempt_at,
            last_status,
            last_error,
            status,
            delivery_id,
        ),
    )


async def get_delivery(conn: Connection, delivery_id: str) -> dict[str, Any] | None:
    cursor = await conn.execute(
        "SELECT d.*, s.name AS subscription_name, s.url FROM mfo_deliveries d"
        " JOIN mfo_subscriptions s ON s.id = d.subscription_id WHERE d.id = %s",
        (delivery_id,),
    )
    return await cursor.fetchone()


async def list_attempts(conn: Connection, delivery_id: str) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        "SELECT number, started_at, duration_ms, status_code, response_headers,"
        " response_body, error FROM mfo_attempts WHERE delivery_id = %s ORDER BY number",
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
        " d.next_attempt_at, d.created_at, d.updated_at, d.finished_at"
        " FROM mfo_deliveries d JOIN mfo_subscriptions s ON s.id = d.subscription_id"
        f"{where} ORDER BY d.id LIMIT %s",
        (*params, limit),
    )
    return await cursor.fetchall()


async def requeue_deliveries(conn: Connection, ids: Sequence[str]) -> list[str]:
    """Put finished deliveries back to pending; return the ids changed."""
    cursor = await conn.execute(
        "UPDATE mfo_deliveries SET status = 'pending', next_attempt_at = now(),"
        " finished_at = NULL, updated_at = now()"
        " WHERE id = ANY(%s) AND status <> 'pending' RETURNING id",
        (list(ids),),
    )
    return [row["id"] for row in await cursor.fetchall()]


async def due_deliveries(
    conn: Connection, due_before: datetime
) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        "SELECT id, attempts FROM mfo_deliveries WHERE status = 'pending'"
        " AND next_attempt_at < %s ORDER BY next_attempt_at LIMIT 5000",
        (due_before,),
    )
    return await cursor.fetchall()


async def deliveries_for_event(conn: Connection, event_id: str) -> list[dict[str, Any]]:
    return await list_deliveries(conn, {"event_id": event_id}, 1000)


async def runs_for_event(conn: Connection, event_id: str) -> list[dict[str, Any]]:
    cursor = await conn.execute(
        "SELECT id, pipeline, status, error, created_at, finished_at"
        " FROM mfo_pipeline_runs WHERE event_id = %s ORDER BY id",
        (event_id,),
    )
    return await cursor.fetchall()
