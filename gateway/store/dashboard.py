"""SQL behind the dashboard: filtered listings, detail pages and live counters.

Listings are newest first and paged by keyset: a page ends at a `Cursor`,
the (created_at, id) of its last row, and the next page starts below it.
Each query builder returns its SQL and parameters, so tests can EXPLAIN
exactly what a page runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.store.database import Connection

Query = tuple[str, list[Any]]

# Delivery states an event can be filtered by, from its deliveries.
EVENT_STATUSES = ("failed", "pending", "succeeded", "none")
DELIVERY_STATUSES = ("pending", "succeeded", "failed")
RUN_STATUSES = ("queued", "running", "succeeded", "failed")
# The window of the success rate and counts on the subscriptions page.
HEALTH_WINDOW_HOURS = 24


@dataclass(frozen=True)
class Cursor:
    """The position after which the next page starts: a row's time and id."""

    created_at: datetime
    id: str

    def encode(self) -> str:
        return f"{self.created_at.isoformat()}|{self.id}"

    @classmethod
    def decode(cls, value: str) -> Cursor:
        """Parse `encode`'s output; raise ValueError for anything else."""
        moment, separator, row_id = value.partition("|")
        if not separator or not row_id or len(row_id) > 64:
            raise ValueError(f"invalid page cursor {value[:80]!r}")
        created_at = datetime.fromisoformat(moment)
        if created_at.tzinfo is None:
            raise ValueError(f"page cursor {value[:80]!r} has no time zone")
        return cls(created_at, row_id)


@dataclass(frozen=True)
class EventFilter:
    provider: str | None = None
    type: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class DeliveryFilter:
    status: str | None = None
    subscription: str | None = None
    event_type: str | None = None
    event_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class RunFilter:
    pipeline: str | None = None
    status: str | None = None
    event_id: str | None = None


def like_pattern(pattern: str) -> str:
    """Turn an event type pattern with `*` wildcards into a LIKE pattern."""
    escaped = pattern.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
    return escaped.replace("*", "%")


def _type_clause(column: str, pattern: str, params: list[Any]) -> str:
    if "*" in pattern:
        params.append(like_pattern(pattern))
        return f"{column} LIKE %s"
    params.append(pattern)
    return f"{column} = %s"


def _page_clause(alias: str, cursor: Cursor | None, params: list[Any]) -> list[str]:
    if cursor is None:
        return []
    params += [cursor.created_at, cursor.id]
    return [f"({alias}.created_at, {alias}.id) < (%s, %s)"]


def _time_clauses(
    alias: str, since: datetime | None, until: datetime | None, params: list[Any]
) -> list[str]:
    clauses = []
    if since is not None:
        clauses.append(f"{alias}.created_at >= %s")
        params.append(since)
    if until is not None:
        clauses.append(f"{alias}.created_at < %s")
        params.append(until)
    return clauses


def _where(clauses: list[str]) -> str:
    return " WHERE " + " AND ".join(clauses) if clauses else ""


# events

_EVENT_STATUS_CLAUSES = {
    "failed": "EXISTS (SELECT 1 FROM mfo_deliveries f"
    " WHERE f.event_id = e.id AND f.status = 'failed')",
    "pending": "EXISTS (SELECT 1 FROM mfo_deliveries f"
    " WHERE f.event_id = e.id AND f.status = 'pending')",
    "succeeded": "EXISTS (SELECT 1 FROM mfo_deliveries f WHERE f.event_id = e.id)"
    " AND NOT EXISTS (SELECT 1 FROM mfo_deliveries f"
    " WHERE f.event_id = e.id AND f.status <> 'succeeded')",
    "none": "NOT EXISTS (SELECT 1 FROM mfo_deliveries f WHERE f.event_id = e.id)",
}


def events_query(filters: EventFilter, cursor: Cursor | None, limit: int) -> Query:
    """Build the query of one page of events, with counts of their deliveries."""
    params: list[Any] = []
    clauses = []
    if filters.provider:
        clauses.append("e.provider = %s")
        params.append(filters.provider)
    if filters.type:
        clauses.append(_type_clause("e.type", filters.type, params))
    if filters.status:
        clauses.append(_EVENT_STATUS_CLAUSES[filters.status])
    clauses += _time_clauses("e", filters.since, filters.until, params)
    clauses += _page_clause("e", cursor, params)
    sql = (
        "SELECT e.id, e.type, e.provider, e.route, e.created_at, e.request_id,"
        " e.run_id, c.succeeded, c.failed, c.pending"
        " FROM mfo_events e CROSS JOIN LATERAL ("
        "   SELECT count(*) FILTER (WHERE d.status = 'succeeded') AS succeeded,"
        "   count(*) FILTER (WHERE d.status = 'failed') AS failed,"
        "   count(*) FILTER (WHERE d.status = 'pending') AS pending"
        "   FROM mfo_deliveries d WHERE d.event_id = e.id) c"
        f"{_where(clauses)} ORDER BY e.created_at DESC, e.id DESC LIMIT %s"
    )
    return sql, [*params, limit]


async def list_events(
    conn: Connection, filters: EventFilter, cursor: Cursor | None, limit: int
) -> list[dict[str, Any]]:
    sql, params = events_query(filters, cursor, limit)
    result = await conn.execute(sql, params)
    return await result.fetchall()


async def get_event(conn: Connection, event_id: str) -> dict[str, Any] | None:
    """Read an event with the request it came in on, without the raw body."""
    result = await conn.execute(
        "SELECT e.id, e.type, e.data, e.created_at, e.provider, e.route, e.run_id,"
        " e.request_id, r.received_at, r.method, r.path, r.remote_addr,"
        " r.idempotency_key, octet_length(r.body) AS body_bytes"
        " FROM mfo_events e LEFT JOIN mfo_requests r ON r.id = e.request_id"
        " WHERE e.id = %s",
        (event_id,),
    )
    return await result.fetchone()


async def list_providers(conn: Connection) -> list[str]:
    """Return the providers that have stored events, by a skip scan of the index."""
    result = await conn.execute(
        "WITH RECURSIVE p AS ("
        " (SELECT provider FROM mfo_events WHERE provider IS NOT NULL"
        "  ORDER BY provider LIMIT 1)"
        " UNION ALL SELECT (SELECT provider FROM mfo_events"
        "  WHERE provider > p.provider ORDER BY provider LIMIT 1)"
        " FROM p WHERE p.provider IS NOT NULL)"
        " SELECT provider FROM p WHERE provider IS NOT NULL LIMIT 200"
    )
    return [row["provider"] for row in await result.fetchall()]


# deliveries


def deliveries_query(
    filters: DeliveryFilter, cursor: Cursor | None, limit: int
) -> Query:
    """Build the query of one page of deliveries with their subscription's name."""
    params: list[Any] = []
    clauses = []
    if filters.status:
        clauses.append("d.status = %s")
        params.append(filters.status)
    if filters.subscription:
        clauses.append(
            "d.subscription_id = (SELECT id FROM mfo_subscriptions"
            " WHERE id = %s OR name = %s ORDER BY id LIMIT 1)"
        )
        params += [filters.subscription, filters.subscription]
    if filters.event_type:
        clauses.append(_type_clause("d.event_type", filters.event_type, params))
    if filters.event_id:
        clauses.append("d.event_id = %s")
        params.append(filters.event_id)
    clauses += _time_clauses("d", filters.since, filters.until, params)
    clauses += _page_clause("d", cursor, params)
    sql = (
        "SELECT d.id, d.event_id, d.event_type, d.subscription_id,"
        " s.name AS subscription_name, s.url, d.status, d.attempts, d.last_status,"
        " d.last_error, d.next_attempt_at, d.created_at, d.finished_at, d.replay"
        " FROM mfo_deliveries d JOIN mfo_subscriptions s ON s.id = d.subscription_id"
        f"{_where(clauses)} ORDER BY d.created_at DESC, d.id DESC LIMIT %s"
    )
    return sql, [*params, limit]


async def list_deliveries(
    conn: Connection, filters: DeliveryFilter, cursor: Cursor | None, limit: int
) -> list[dict[str, Any]]:
    sql, params = deliveries_query(filters, cursor, limit)
    result = await conn.execute(sql, params)
    return await result.fetchall()


# subscriptions

SUBSCRIPTION_HEALTH_SQL = (
    "SELECT s.id, s.name, s.source, s.url, s.events, s.description, s.status,"
    " s.status_reason,"
    " s.failing_since, s.previous_secret_expires_at, s.created_at,"
    " h.succeeded, h.failed, h.pending, le.last_error, le.last_error_at"
    " FROM mfo_subscriptions s"
    " CROSS JOIN LATERAL ("
    "   SELECT count(*) FILTER (WHERE d.status = 'succeeded') AS succeeded,"
    "   count(*) FILTER (WHERE d.status = 'failed') AS failed,"
    "   count(*) FILTER (WHERE d.status = 'pending') AS pending"
    "   FROM mfo_deliveries d WHERE d.subscription_id = s.id"
    "   AND d.created_at > now() - make_interval(hours => %s)) h"
    " LEFT JOIN LATERAL ("
    "   SELECT d.last_error, d.updated_at AS last_error_at FROM mfo_deliveries d"
    "   WHERE d.subscription_id = s.id AND d.last_error IS NOT NULL"
    "   ORDER BY d.updated_at DESC LIMIT 1) le ON true"
    " WHERE s.deleted_at IS NULL ORDER BY s.created_at, s.id LIMIT 500"
)


async def subscription_health(conn: Connection) -> list[dict[str, Any]]:
    """Return each subscription with its last day's delivery counts and last error."""
    result = await conn.execute(SUBSCRIPTION_HEALTH_SQL, (HEALTH_WINDOW_HOURS,))
    rows = await result.fetchall()
    for row in rows:
        finished = row["succeeded"] + row["failed"]
        row["success_rate"] = row["succeeded"] / finished if finished else None
    return rows


# pipeline runs


def runs_query(filters: RunFilter, cursor: Cursor | None, limit: int) -> Query:
    """Build the query of one page of pipeline runs."""
    params: list[Any] = []
    clauses = []
    if filters.pipeline:
        clauses.append("r.pipeline = %s")
        params.append(filters.pipeline)
    if filters.status:
        clauses.append("r.status = %s")
        params.append(filters.status)
    if filters.event_id:
        clauses.append("r.event_id = %s")
        params.append(filters.event_id)
    clauses += _page_clause("r", cursor, params)
    sql = (
        "SELECT r.id, r.pipeline, r.event_id, r.status, r.error, r.attempts,"
        " jsonb_array_length(r.steps) AS step_count, r.created_at, r.started_at,"
        " r.finished_at FROM mfo_pipeline_runs r"
        f"{_where(clauses)} ORDER BY r.created_at DESC, r.id DESC LIMIT %s"
    )
    return sql, [*params, limit]


async def list_runs(
    conn: Connection, filters: RunFilter, cursor: Cursor | None, limit: int
) -> list[dict[str, Any]]:
    sql, params = runs_query(filters, cursor, limit)
    result = await conn.execute(sql, params)
    return await result.fetchall()


# live counters

COUNTERS_SQL = (
    "SELECT"
    " (SELECT count(*) FROM mfo_requests"
    "  WHERE received_at > now() - interval '1 hour') AS received,"
    " (SELECT count(*) FROM mfo_events"
    "  WHERE created_at > now() - interval '1 hour') AS events,"
    " (SELECT count(*) FROM mfo_deliveries WHERE finished_at IS NOT NULL"
    "  AND finished_at > now() - interval '1 hour' AND status = 'succeeded')"
    "  AS delivered,"
    " (SELECT count(*) FROM mfo_deliveries WHERE finished_at IS NOT NULL"
    "  AND finished_at > now() - interval '1 hour' AND status = 'failed') AS failed,"
    " (SELECT count(*) FROM mfo_deliveries WHERE status = 'pending') AS pending"
)


async def hour_counters(conn: Connection) -> dict[str, int]:
    """Count the last hour's received requests, events, deliveries and failures.

    `pending` is every delivery still waiting for an attempt, of any age.
    """
    result = await conn.execute(COUNTERS_SQL)
    row = await result.fetchone()
    assert row is not None
    return {key: int(value) for key, value in row.items()}


async def count_deliveries(conn: Connection, filters: DeliveryFilter, cap: int) -> int:
    """Count the deliveries a filter matches, stopping at `cap`."""
    sql, params = deliveries_query(filters, None, cap)
    result = await conn.execute(f"SELECT count(*) AS n FROM ({sql}) AS matched", params)
    row = await result.fetchone()
    assert row is not None
    return int(row["n"])
