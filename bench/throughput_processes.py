"""Measure delivery throughput with one and with two `mfo worker` processes.

Usage: python bench/throughput_processes.py [--count N] [--workers 1 2]
       [--queue redis|postgres]

For each worker count, on a fresh database of the local PostgreSQL server
(and Redis db 9 for the queue), it starts one `mfo serve --no-worker` and
that many `mfo worker` processes, subscribes a receiver on 127.0.0.1 and
pauses the subscription. It then sends N webhooks, which are stored with
their deliveries held, resumes the subscription and times how long the
workers take until the receiver has all N. So the figure is deliveries per
second from a backlog, without the ingress work. The subscription has no
`max_in_flight` limit, which would otherwise set the pace (8 by default).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import LOCAL_POSTGRES, LOCAL_REDIS, SECRETS, _drop_database
from tests.support import REPO, Gateway, Subscriber, free_port, start_gateway

REDIS_DB = 9
HEADERS = {
    "content-type": "application/json",
    "unipile-auth": SECRETS["UNIPILE_WEBHOOK_SECRET"],
}


def create_database() -> str:
    import psycopg

    name = f"mfo_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{LOCAL_POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def flush_redis() -> str:
    import redis

    url = f"{LOCAL_REDIS}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


def start_workers(
    gateway: Gateway, count: int, root: Path
) -> list[subprocess.Popen[bytes]]:
    workers = []
    for index in range(count):
        port = free_port()
        log = (root / f"worker{index}.log").open("wb")
        command = [
            sys.executable,
            "-m",
            "cli.main",
            "worker",
            "--config-dir",
            str(REPO / "config"),
            "--metrics-port",
            str(port),
        ]
        workers.append(
            subprocess.Popen(command, env=gateway.env, cwd=REPO, stdout=log, stderr=log)
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
    return workers


def send_backlog(gateway: Gateway, count: int) -> None:
    def send(index: int) -> None:
        body = json.dumps(
            {
                "email_id": f"bench-{index}-{uuid.uuid4().hex[:8]}",
                "account_id": "acc",
                "event": "mail_sent",
                "subject": f"message {index}",
            }
        ).encode()
        response = gateway.post("/webhooks/unipile/notify", body, HEADERS)
        assert response.status_code == 202, response.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(send, range(count)))


def measure(worker_count: int, count: int, queue: str) -> dict[str, object]:
    database = create_database()
    env = {**SECRETS, "MFO_DATABASE_URL": f"{LOCAL_POSTGRES}/{database}"}
    if queue == "redis":
        env["MFO_QUEUE_URL"] = flush_redis()
    subscriber = Subscriber().start()
    workers: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        gateway = start_gateway(REPO / "config", root / "api", env, ("--no-worker",))
        try:
            # Without a limit on attempts in flight, so the workers set the pace.
            subscription = gateway.subscribe(
                subscriber, ["unipile.email.sent"], max_in_flight=None
            )
            sub_path = f"/api/notifications/subscriptions/{subscription['id']}"
            assert gateway.api("POST", sub_path + "/pause").status_code == 200
            send_backlog(gateway, count)
            workers = start_workers(gateway, worker_count, root)
            time.sleep(1)
            started = time.perf_counter()
            resumed = gateway.api("POST", sub_path + "/resume")
            assert resumed.status_code == 200, resumed.text
            subscriber.wait_for(count, timeout=600)
            elapsed = time.perf_counter() - started
        finally:
            for worker in workers:
                worker.terminate()
            for worker in workers:
                worker.wait(timeout=30)
            gateway.stop()
            subscriber.stop()
            _drop_database(database)
            if queue == "redis":
                flush_redis()
    return {
        "workers": worker_count,
        "deliveries": count,
        "seconds": round(elapsed, 2),
        "per_second": round(count / elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--queue", choices=["redis", "postgres"], default="redis")
    args = parser.parse_args()
    print(
        f"# {platform.processor() or platform.machine()}, {platform.system()}"
        f" {platform.release()}, Python {platform.python_version()}, queue {args.queue}"
    )
    for worker_count in args.workers:
        print(json.dumps(measure(worker_count, args.count, args.queue)), flush=True)


if __name__ == "__main__":
    main()
