"""Separate API and worker processes, and subscriptions declared in YAML."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SECRETS
from tests.delivery.receivers import Receiver, Reply
from tests.support import CORPUS, REPO, Gateway, Subscriber, start_gateway


def copy_shipped_config(root: Path, subscriptions: str) -> Path:
    shutil.copytree(REPO / "config", root / "config")
    shutil.copytree(REPO / "schemas", root / "schemas")
    (root / "config" / "subscriptions.yaml").write_text(subscriptions)
    return root / "config"


def start_worker(
    config_dir: Path, env: dict[str, str], *args: str
) -> subprocess.Popen[bytes]:
    """Start `mfo worker` on a config with the environment of a gateway."""
    command = [sys.executable, "-m", "cli.main", "worker", "--config-dir"]
    return subprocess.Popen(
        [*command, str(config_dir), *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_worker_process_delivers_yaml_subscription(tmp_path: Path) -> None:
    """`serve --no-worker` only stores; a separate `mfo worker` delivers."""
    subscriber = Subscriber().start()
    config_dir = copy_shipped_config(
        tmp_path,
        "subscriptions:\n  inbox:\n"
        f"    url: {subscriber.url}\n"
        "    events: [unipile.email.received, email.processed]\n"
        "    retry: {schedule: [200ms, 200ms], jitter: 0}\n",
    )
    gateway = start_gateway(
        config_dir, tmp_path / "data", SECRETS, args=("--no-worker",)
    )
    worker = None
    try:
        stored = gateway.api("GET", "/api/notifications/subscriptions/inbox").json()
        assert stored["source"] == "config"
        subscriber.secret = stored["secret"]
        body = (CORPUS / "unipile" / "mail_received.json").read_bytes()
        headers = {
            "content-type": "application/json",
            "unipile-auth": SECRETS["UNIPILE_WEBHOOK_SECRET"],
        }
        response = gateway.post("/webhooks/unipile/notify", body, headers)
        assert response.status_code == 202
        time.sleep(1.5)
        assert subscriber.received == []

        worker = start_worker(config_dir, gateway.env)
        received = subscriber.wait_for(2, timeout=60)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        gateway.stop()
        subscriber.stop()

    assert sorted(subscriber.types()) == ["email.processed", "unipile.email.received"]
    assert all(r.signature_valid for r in received)
    assert received[0].payload["data"] == json.loads(body) or received[1].payload[
        "data"
    ] == json.loads(body)


def test_serve_refuses_broken_config(tmp_path: Path) -> None:
    """A broken config stops `mfo serve` with located problems and exit 1."""
    config_dir = copy_shipped_config(tmp_path, "subscriptions:\n  x:\n    url: nope\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "serve",
            "--config-dir",
            str(config_dir),
            "--port",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "MFO_DATA_DIR": str(tmp_path / "data")},
    )
    assert result.returncode == 1
    assert "subscriptions.yaml:3:10:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("target", ["nope/route", "unipile/notify"])
def test_send_reports_failures(tmp_path: Path, target: str) -> None:
    """`mfo send` names an unknown route, and an unreachable server, in one line."""
    payload = tmp_path / "p.json"
    payload.write_text("{}")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cli.main",
            "send",
            target,
            str(payload),
            "--config-dir",
            str(REPO / "config"),
            "--url",
            "http://127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_pipeline_loop_stopped_at_run_time(tmp_path: Path) -> None:
    """A loop the config check can only warn about stops after a bounded depth."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "providers.yaml").write_text(
        "providers:\n  acme:\n    routes:\n      hook:\n        path: /webhooks/acme\n"
        "        verify: {type: none}\n        events:\n          - type: acme.start\n"
        "pipelines:\n  echo:\n    on: acme.*\n    steps:\n"
        '      - emit: {type: "acme.{{ event.type | length }}"}\n'
    )
    gateway = start_gateway(config_dir, tmp_path / "data")
    try:
        response = gateway.post(
            "/webhooks/acme", b"{}", {"content-type": "application/json"}
        )
        assert response.status_code == 202
        event_id = response.json()["event_id"]
        deadline = time.monotonic() + 30
        failed = None
        while time.monotonic() < deadline and failed is None:
            event = gateway.api("GET", f"/api/events/{event_id}").json()
            for _ in range(20):
                run = (
                    gateway.api("GET", f"/api/jobs/{event['runs'][0]['id']}").json()
                    if event["runs"]
                    else None
                )
                if run is None or run["status"] in ("queued", "running"):
                    break
                if run["status"] == "failed":
                    failed = run
                    break
                emitted = run["steps"][0]["output"]["event_id"]
                event = gateway.api("GET", f"/api/events/{emitted}").json()
            time.sleep(0.2)
    finally:
        gateway.stop()

    assert failed is not None
    assert "probably triggers itself" in failed["error"]


def _send_mail_sent(gateway: Gateway) -> str:
    """POST the Unipile mail_sent webhook and return its event id."""
    body = (CORPUS / "unipile" / "mail_sent.json").read_bytes()
    headers = {
        "content-type": "application/json",
        "unipile-auth": SECRETS["UNIPILE_WEBHOOK_SECRET"],
    }
    response = gateway.post("/webhooks/unipile/notify", body, headers)
    return str(response.json()["event_id"])


def test_worker_finishes_attempt_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM lets an attempt in flight finish instead of cutting it off."""
    subscriber = Subscriber(delays=[3.0]).start()
    config_dir = copy_shipped_config(
        tmp_path,
        "subscriptions:\n  slow:\n"
        f"    url: {subscriber.url}\n"
        "    events: [unipile.email.sent]\n",
    )
    gateway = start_gateway(
        config_dir, tmp_path / "data", SECRETS, args=("--no-worker",)
    )
    worker = start_worker(config_dir, gateway.env)
    try:
        event_id = _send_mail_sent(gateway)
        subscriber.wait_for(1, timeout=60)
        worker.terminate()
        exit_code = worker.wait(timeout=30)
        event = gateway.api("GET", f"/api/events/{event_id}").json()
    finally:
        if worker.poll() is None:
            worker.kill()
        gateway.stop()
        subscriber.stop()

    assert exit_code == 0
    assert event["deliveries"][0]["status"] == "succeeded"
    assert event["deliveries"][0]["attempts"] == 1


def _wait_until_settled(
    gateway: Gateway, event_id: str, timeout: float
) -> list[dict[str, Any]]:
    """Poll an event until none of its deliveries is pending; return them."""
    deadline = time.monotonic() + timeout
    while True:
        rows = gateway.api("GET", f"/api/events/{event_id}").json()["deliveries"]
        if time.monotonic() > deadline or all(r["status"] != "pending" for r in rows):
            return list(rows)
        time.sleep(0.2)


def test_stopped_worker_leaves_unstarted_attempts(tmp_path: Path) -> None:
    """SIGTERM mid-fan-out: started attempts finish, the rest go to the next worker.

    The 40 deliveries of one event share queue jobs, so the stop lands inside
    a job that still has deliveries to attempt.
    """
    count = 40
    subscriber = Subscriber(delays=[2.0] * count).start()
    subscriptions = "subscriptions:\n" + "".join(
        f"  slow{index}:\n    url: {subscriber.url}\n    events: [unipile.email.sent]\n"
        for index in range(count)
    )
    config_dir = copy_shipped_config(tmp_path, subscriptions)
    env = {**SECRETS, "MFO_SWEEP_INTERVAL": "1s", "MFO_SWEEP_GRACE": "2s"}
    gateway = start_gateway(config_dir, tmp_path / "data", env, args=("--no-worker",))
    first = start_worker(config_dir, gateway.env)
    second = None
    try:
        event_id = _send_mail_sent(gateway)
        subscriber.wait_for(1, timeout=60)
        first.terminate()
        first_exit = first.wait(timeout=40)
        sent_by_first = len(subscriber.received)
        left = gateway.api("GET", f"/api/events/{event_id}").json()["deliveries"]
        second = start_worker(config_dir, gateway.env)
        subscriber.wait_for(count, timeout=90)
        done = _wait_until_settled(gateway, event_id, timeout=30)
    finally:
        for worker in (first, second):
            if worker is not None and worker.poll() is None:
                worker.kill()
        gateway.stop()
        subscriber.stop()

    webhook_ids = [received.headers["webhook-id"] for received in subscriber.received]
    assert first_exit == 0
    assert sent_by_first < count
    assert sum(row["status"] == "pending" for row in left) == count - sent_by_first
    assert len(webhook_ids) == count
    assert len(set(webhook_ids)) == count
    assert all(row["status"] == "succeeded" for row in done)
    assert all(row["attempts"] == 1 for row in done)


def test_worker_concurrency_beyond_pool(tmp_path: Path) -> None:
    """`--concurrency 40` sends 40 attempts at once: the pool grows to match.

    Each attempt keeps a database connection while it sends, and the pool
    starts at 20 connections.
    """
    count = 40
    receiver = Receiver(default=Reply(delay=1.0)).start()
    subscriptions = "subscriptions:\n" + "".join(
        f"  slow{index}:\n    url: {receiver.url}\n    events: [unipile.email.sent]\n"
        for index in range(count)
    )
    config_dir = copy_shipped_config(tmp_path, subscriptions)
    gateway = start_gateway(
        config_dir, tmp_path / "data", SECRETS, args=("--no-worker",)
    )
    worker = start_worker(config_dir, gateway.env, "--concurrency", str(count))
    try:
        _send_mail_sent(gateway)
        receiver.wait_for(count, timeout=60)
    finally:
        worker.terminate()
        worker.wait(timeout=40)
        gateway.stop()
        receiver.stop()

    assert receiver.max_open_requests == count
