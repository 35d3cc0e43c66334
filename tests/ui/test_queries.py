"""The dashboard's queries on 100,000 events: indexed plans and fast pages."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from gateway.store import dashboard
from gateway.store.dashboard import Cursor, DeliveryFilter, EventFilter, RunFilter
from gateway.store.database import Database
from tests.conftest import LOCAL_POSTGRES, _unavailable

pytestmark = pytest.mark.server

EVENTS = 100_000
BIG_TABLES = {"mfo_events", "mfo_deliveries", "mfo_requests", "mfo_pipeline_runs"}
# Far above what an indexed page takes here (a few ms) and far below a scan
# of 100,000 rows under load, so the limit catches a plan gone wrong.
MAX_MILLISECONDS = 250.0

FILL = f"""
INSERT INTO mfo_subscriptions (id, name, source, url, events, secret, timeout, retry)
SELECT 'sub_' || i, 'sub' || i, 'api', 'http://127.0.0.1:9/hooks', '{{*}}',
       'whsec_MfoTestSecretMfoTestSecret', 5, '{{}}'
FROM generate_series(1, 3) AS i;

INSERT INTO mfo_requests (id, provider, route, received_at, method, path, headers, body)
SELECT 'req_' || lpad(i::text, 26, '0'), 'provider' || (i % 5), 'notify',
       now() - i * interval '20 seconds', 'POST', '/webhooks/x', '{{}}', '\\x7b7d'
FROM generate_series(1, {EVENTS}) AS i;

INSERT INTO mfo_events (id, type, data, created_at, request_id, provider, route)
SELECT 'evt_' || lpad(i::text, 26, '0'), 'type' || (i % 20) || '.changed',
       jsonb_build_object('n', i), now() - i * interval '20 seconds',
       'req_' || lpad(i::text, 26, '0'), 'provider' || (i % 5), 'notify'
FROM generate_series(1, {EVENTS}) AS i;

INSERT INTO mfo_deliveries (id, event_id, subscription_id, event_type, status,
    attempts, created_at, updated_at, finished_at, last_status, last_error,
    next_attempt_at)
SELECT 'msg_' || lpad(i::text, 26, '0'), 'evt_' || lpad(i::text, 26, '0'),
       'sub_' || (i % 3 + 1), 'type' || (i % 20) || '.changed',
       CASE WHEN i % 100 = 0 THEN 'failed' WHEN i % 100 = 1 THEN 'pending'
            ELSE 'succeeded' END,
       1, now() - i * interval '20 seconds', now() - i * interval '20 seconds',
       CASE WHEN i % 100 = 1 THEN NULL ELSE now() - i * interval '20 seconds' END,
       CASE WHEN i % 100 = 0 THEN 500 ELSE 200 END,
       CASE WHEN i % 100 = 0 THEN 'HTTP 500' END,
       CASE WHEN i % 100 = 1 THEN now() END
FROM generate_series(1, {EVENTS}) AS i;

INSERT INTO mfo_pipeline_runs (id, pipeline, event_id, status, created_at)
SELECT 'run_' || lpad(i::text, 26, '0'), 'pipeline' || (i % 3),
       'evt_' || lpad(i::text, 26, '0'),
       CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'succeeded' END,
       now() - i * interval '20 seconds'
FROM generate_series(1, {EVENTS}, 5) AS i;

ANALYZE;
"""


@pytest.fixture(scope="module")
def filled() -> Iterator[psycopg.Connection[Any]]:
    """A fresh database with the gateway's schema and 100,000 events."""
    name = f"mfo_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(f"{LOCAL_POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        _unavailable(f"local PostgreSQL at {LOCAL_POSTGRES} is not reachable: {exc}")
    url = f"{LOCAL_POSTGRES}/{name}"
    try:
        asyncio.run(_migrate(url))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(FILL)  # type: ignore[arg-type]
            yield conn
    finally:
        with psycopg.connect(f"{LOCAL_POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _migrate(url: str) -> None:
    db = Database(url, min_size=1, max_size=1)
    await db.open()
    try:
        await db.migrate()
    finally:
        await db.close()


def explain(
    conn: psycopg.Connection[Any], sql: str, params: list[Any]
) -> dict[str, Any]:
    row = conn.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + sql,  # type: ignore[arg-type]
        params,
    ).fetchone()
    assert row is not None
    plan: dict[str, Any] = (row[0] if isinstance(row[0], list) else json.loads(row[0]))[
        0
    ]
    return plan


def scanned_tables(node: dict[str, Any]) -> set[str]:
    """Return the big tables that a plan reads with a sequential scan."""
    found = set()
    if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") in BIG_TABLES:
        found.add(node["Relation Name"])
    for child in node.get("Plans", []):
        found |= scanned_tables(child)
    return found


def middle_cursor() -> Cursor:
    moment = datetime.now(UTC) - timedelta(days=5)
    return Cursor(moment, "evt_" + "9" * 26)


NOW = datetime.now(UTC)
EVENT_CASES = {
    "all": EventFilter(),
    "provider": EventFilter(provider="provider3"),
    "type": EventFilter(type="type7.changed"),
    "type prefix": EventFilter(type="type1*"),
    "failed": EventFilter(status="failed"),
    "pending": EventFilter(status="pending"),
    "succeeded": EventFilter(status="succeeded"),
    "since": EventFilter(since=NOW - timedelta(hours=2)),
    "old window": EventFilter(
        since=NOW - timedelta(days=20), until=NOW - timedelta(days=19)
    ),
    "provider and type": EventFilter(provider="provider2", type="type2.changed"),
}
DELIVERY_CASES = {
    "all": DeliveryFilter(),
    "failed": DeliveryFilter(status="failed"),
    "subscription": DeliveryFilter(subscription="sub2"),
    "event type": DeliveryFilter(event_type="type3.changed"),
    "event type prefix": DeliveryFilter(event_type="type1*"),
    "event": DeliveryFilter(event_id="evt_" + "0" * 21 + "12345"),
    "failed since": DeliveryFilter(status="failed", since=NOW - timedelta(days=1)),
}
RUN_CASES = {
    "all": RunFilter(),
    "pipeline": RunFilter(pipeline="pipeline1"),
    "failed": RunFilter(status="failed"),
}


def check_plan(conn: psycopg.Connection[Any], sql: str, params: list[Any]) -> None:
    plan = explain(conn, sql, params)
    assert scanned_tables(plan["Plan"]) == set()
    assert plan["Execution Time"] < MAX_MILLISECONDS


@pytest.mark.parametrize("case", sorted(EVENT_CASES))
@pytest.mark.parametrize("paged", [False, True])
def test_events_page_uses_indexes(
    filled: psycopg.Connection[Any], case: str, paged: bool
) -> None:
    """Each events filter, on the first page and a later one, reads indexes only."""
    cursor = middle_cursor() if paged else None
    check_plan(filled, *dashboard.events_query(EVENT_CASES[case], cursor, 50))


@pytest.mark.parametrize("case", sorted(DELIVERY_CASES))
@pytest.mark.parametrize("paged", [False, True])
def test_deliveries_page_uses_indexes(
    filled: psycopg.Connection[Any], case: str, paged: bool
) -> None:
    """Each deliveries filter, on the first page and a later one, reads indexes only."""
    cursor = middle_cursor() if paged else None
    check_plan(filled, *dashboard.deliveries_query(DELIVERY_CASES[case], cursor, 50))


@pytest.mark.parametrize("case", sorted(RUN_CASES))
def test_runs_page_uses_indexes(filled: psycopg.Connection[Any], case: str) -> None:
    """Each pipeline runs filter reads indexes only."""
    check_plan(filled, *dashboard.runs_query(RUN_CASES[case], None, 50))


def test_counters_use_indexes(filled: psycopg.Connection[Any]) -> None:
    """The last hour's counters read indexes only."""
    check_plan(filled, dashboard.COUNTERS_SQL, [])


def test_subscription_health_uses_indexes(filled: psycopg.Connection[Any]) -> None:
    """Subscription health reads each subscription's last day through its index."""
    check_plan(
        filled, dashboard.SUBSCRIPTION_HEALTH_SQL, [dashboard.HEALTH_WINDOW_HOURS]
    )


def test_bulk_retry_count_uses_indexes(filled: psycopg.Connection[Any]) -> None:
    """Counting the failed deliveries a bulk retry would send stops at the cap."""
    sql, params = dashboard.deliveries_query(
        DeliveryFilter(status="failed"), None, 10_000
    )
    check_plan(filled, f"SELECT count(*) FROM ({sql}) AS matched", params)


def test_pages_follow_each_other(filled: psycopg.Connection[Any]) -> None:
    """Keyset pages of events neither repeat nor skip a row."""
    seen: list[str] = []
    cursor = None
    for _ in range(4):
        sql, params = dashboard.events_query(
            EventFilter(provider="provider1"), cursor, 50
        )
        rows = filled.execute(sql, params).fetchall()  # type: ignore[arg-type]
        assert len(rows) == 50
        seen += [row[0] for row in rows]
        cursor = Cursor(rows[-1][4], rows[-1][0])
    assert len(set(seen)) == 200
    expected = [f"evt_{i:026d}" for i in range(1, EVENTS + 1) if i % 5 == 1][:200]
    assert seen == expected
