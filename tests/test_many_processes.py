"""Two API processes and two worker processes on one PostgreSQL and one Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import LOCAL_POSTGRES, LOCAL_REDIS, SECRETS, _unavailable
from tests.support import REPO, Gateway, Subscriber, free_port, start_gateway

pytestmark = [pytest.mark.server, pytest.mark.redis]

# The shared Redis is used only through this database index, and only it is flushed.
REDIS_DB = 9
WEBHOOKS = 200
UNIPILE_HEADERS = {
    "content-type": "application/json",
    "unipile-auth": SECRETS["UNIPILE_WEBHOOK_SECRET"],
}


@dataclass
class Deployment:
    apis: list[Gateway]
    workers: list[subprocess.Popen[bytes]]
    worker_metrics: list[str]
    database_url: str


def flush_redis_db() -> str:
    import redis

    url = f"{LOCAL_REDIS}/{REDIS_DB}"
    try:
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
    except redis.RedisError as exc:
        _unavailable(f"local Redis at {LOCAL_REDIS} is not reachable: {exc}")
    return url


def start_worker(
    env: dict[str, str], metrics_port: int, log: Path
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "cli.main",
        "worker",
        "--config-dir",
        str(REPO / "config"),
        "--metrics-port",
        str(metrics_port),
    ]
    with log.open("wb") as output:
        return subprocess.Popen(
            command, env=env, cwd=REPO, stdout=output, stderr=output
        )


def wait_for_metrics(url: str, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert worker.poll() is None, f"worker exited with {worker.returncode}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"worker metrics at {url} did not answer within 60s")


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    name = f"mfo_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(f"{LOCAL_POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        _unavailable(f"local PostgreSQL at {LOCAL_POSTGRES} is not reachable: {exc}")
    env = {
        **SECRETS,
        "MFO_DATABASE_URL": f"{LOCAL_POSTGRES}/{name}",
        "MFO_QUEUE_URL": flush_redis_db(),
        "MFO_QUEUE_NAME": f"mfo-{name}",
    }
    apis: list[Gateway] = []
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(2):
            apis.append(
                start_gateway(
                    REPO / "config", tmp_path / f"api{index}", env, ("--no-worker",)
                )
            )
        ports = [free_port(), free_port()]
        for index, port in enumerate(ports):
            log = tmp_path / f"worker{index}.log"
            workers.append(start_worker(apis[0].env, port, log))
        urls = [f"http://127.0.0.1:{port}/metrics" for port in ports]
        for url, worker in zip(urls, workers, strict=True):
            wait_for_metrics(url, worker)
        yield Deployment(apis, workers, urls, env["MFO_DATABASE_URL"])
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        for api in apis:
            api.stop()
        with psycopg.connect(f"{LOCAL_POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        flush_redis_db()


def mail_sent(index: int) -> bytes:
    return json.dumps(
        {
            "email_id": f"many-{index}-{uuid.uuid4().hex[:8]}",
            "account_id": "acc",
            "event": "mail_sent",
            "subject": f"message {index}",
        }
    ).encode()


def delivered_counts(url: str) -> float:
    for line in httpx.get(url, timeout=10).text.splitlines():
        if line.startswith('mfo_deliveries_total{outcome="succeeded"}'):
            return float(line.split()[-1])
    return 0.0


def test_many_processes_deliver_each_once(deployment: Deployment) -> None:
    """Webhooks sent to either API process are each delivered exactly once."""
    subscriber = Subscriber().start()
    try:
        deployment.apis[0].subscribe(subscriber, ["unipile.email.sent"])

        def send(index: int) -> str:
            api = deployment.apis[index % 2]
            response = api.post(
                "/webhooks/unipile/notify", mail_sent(index), UNIPILE_HEADERS
            )
            assert response.status_code == 202, response.text
            return str(response.json()["event_id"])

        with ThreadPoolExecutor(max_workers=8) as pool:
            event_ids = list(pool.map(send, range(WEBHOOKS)))
        subscriber.wait_for(WEBHOOKS, timeout=90)
        # Late duplicates would arrive within this pause.
        time.sleep(2)
    finally:
        subscriber.stop()

    webhook_ids = Counter(r.headers["webhook-id"] for r in subscriber.received)
    assert len(subscriber.received) == WEBHOOKS
    assert max(webhook_ids.values()) == 1
    assert all(r.signature_valid for r in subscriber.received)
    delivered_events = {r.payload["data"]["email_id"] for r in subscriber.received}
    assert len(delivered_events) == WEBHOOKS

    with psycopg.connect(deployment.database_url) as conn:
        rows = conn.execute(
            "SELECT d.event_id, d.status, count(a.id) AS attempts"
            " FROM mfo_deliveries d LEFT JOIN mfo_attempts a ON a.delivery_id = d.id"
            " GROUP BY d.id"
        ).fetchall()
    assert sorted(row[0] for row in rows) == sorted(event_ids)
    assert {row[1] for row in rows} == {"succeeded"}
    assert {row[2] for row in rows} == {1}

    per_worker = [delivered_counts(url) for url in deployment.worker_metrics]
    assert sum(per_worker) == WEBHOOKS
