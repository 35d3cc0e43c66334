"""Config reloads under live traffic, by file change, SIGHUP and `mfo reload`."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

from tests.conftest import SECRETS
from tests.support import CORPUS, REPO, Gateway, Subscriber, start_gateway

UNIPILE_HEADERS = {
    "content-type": "application/json",
    "unipile-auth": SECRETS["UNIPILE_WEBHOOK_SECRET"],
}
PROBE_ROUTE = """
  probe:
    routes:
      hit:
        path: /webhooks/probe/{n}
        verify: {{type: none}}
        events:
          - type: probe.hit
"""


def copy_config(root: Path) -> Path:
    shutil.copytree(REPO / "config", root / "config")
    shutil.copytree(REPO / "schemas", root / "schemas")
    return root / "config"


def write_probe(config_dir: Path, original: str, n: int) -> None:
    """Add a probe provider whose path names the config generation."""
    text = original.replace("providers:\n", "providers:" + PROBE_ROUTE.format(n=n), 1)
    (config_dir / "providers.yaml").write_text(text)


def write_broken(config_dir: Path, original: str) -> None:
    (config_dir / "providers.yaml").write_text(original.replace("routes:", "routez:", 1))


def admin_config(gateway: Gateway) -> dict[str, object]:
    response = gateway.api("GET", "/admin/config")
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


class Traffic:
    """Send Unipile webhooks without pause and keep every answer."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.statuses: list[int] = []
        self.event_ids: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.payload = json.loads((CORPUS / "unipile" / "mail_sent.json").read_bytes())

    def _run(self) -> None:
        with httpx.Client(base_url=self.gateway.base_url, timeout=30) as client:
            deadline = time.monotonic() + 120
            while not self.stopping.is_set() and time.monotonic() < deadline:
                self.payload["email_id"] = f"reload-{uuid.uuid4()}"
                body = json.dumps(self.payload).encode()
                try:
                    response = client.post(
                        "/webhooks/unipile/notify", content=body, headers=UNIPILE_HEADERS
                    )
                except httpx.HTTPError:
                    self.statuses.append(-1)
                    continue
                self.statuses.append(response.status_code)
                if response.status_code == 202:
                    self.event_ids.append(response.json()["event_id"])

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)


def wait_serving(gateway: Gateway, n: int, edited_at: float) -> float:
    """Wait until the probe route of generation `n` answers; return the delay."""
    deadline = edited_at + 10
    while time.monotonic() < deadline:
        response = httpx.post(f"{gateway.base_url}/webhooks/probe/{n}", json={}, timeout=5)
        if response.status_code == 202:
            return time.monotonic() - edited_at
        time.sleep(0.02)
    raise AssertionError(f"config generation {n} was not serving within 10 s")


def wait_reload_error(gateway: Gateway, failures_before: int) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = admin_config(gateway)
        if int(status["failed_reloads"]) > failures_before:  # type: ignore[call-overload]
            return status
        time.sleep(0.05)
    raise AssertionError("the broken config was not reported")


def test_reloads_under_live_traffic(tmp_path: Path) -> None:
    """20 reloads, valid and broken in turn, lose and fail no webhook."""
    subscriber = Subscriber().start()
    config_dir = copy_config(tmp_path)
    original = (config_dir / "providers.yaml").read_text()
    gateway = start_gateway(config_dir, tmp_path / "data", SECRETS)
    delays = []
    try:
        gateway.subscribe(subscriber, ["unipile.email.sent"])
        with Traffic(gateway) as traffic:
            for n in range(10):
                write_probe(config_dir, original, n)
                delays.append(wait_serving(gateway, n, time.monotonic()))
                failures = int(admin_config(gateway)["failed_reloads"])  # type: ignore[call-overload]
                write_broken(config_dir, original)
                status = wait_reload_error(gateway, failures)
                assert "unknown key 'routez'" in json.dumps(status["last_reload_error"])
                probe = httpx.post(f"{gateway.base_url}/webhooks/probe/{n}", json={})
                assert probe.status_code == 202
        accepted = len(traffic.event_ids)
        subscriber.wait_for(accepted, timeout=60)
    finally:
        gateway.stop()
        subscriber.stop()

    assert accepted > 20
    assert set(traffic.statuses) == {202}
    assert len(subscriber.received) == accepted
    delivered = {r.payload["data"]["email_id"] for r in subscriber.received}
    assert len(delivered) == accepted
    print(f"reload edit-to-serving seconds: {sorted(delays)}")
    assert max(delays) < 2.0, delays


def test_sighup_and_cli_reload_reach_worker(tmp_path: Path) -> None:
    """With watching off, SIGHUP and `mfo reload` reload; the worker follows."""
    config_dir = copy_config(tmp_path)
    original = (config_dir / "providers.yaml").read_text()
    env = {**SECRETS, "MFO_WATCH_CONFIG": "0"}
    gateway = start_gateway(config_dir, tmp_path / "data", env, args=("--no-worker",))
    worker = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "worker", "--config-dir", str(config_dir)],
        env=gateway.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        first_version = admin_config(gateway)["version"]
        write_probe(config_dir, original, 1)
        time.sleep(1.0)
        assert admin_config(gateway)["version"] == first_version

        gateway.process.send_signal(signal.SIGHUP)
        wait_serving(gateway, 1, time.monotonic())

        write_probe(config_dir, original, 2)
        result = subprocess.run(
            [sys.executable, "-m", "cli.main", "reload", "--url", gateway.base_url],
            capture_output=True, text=True, cwd=REPO, env=gateway.env, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "config reloaded" in result.stdout
        version = admin_config(gateway)["version"]

        deadline = time.monotonic() + 15
        kinds: dict[str, object] = {}
        while time.monotonic() < deadline:
            processes = admin_config(gateway)["processes"]
            kinds = {p["kind"]: p["config_version"] for p in processes}  # type: ignore[attr-defined]
            if kinds.get("worker") == version:
                break
            time.sleep(0.2)
        write_broken(config_dir, original)
        rejected = subprocess.run(
            [sys.executable, "-m", "cli.main", "reload", "--url", gateway.base_url],
            capture_output=True, text=True, cwd=REPO, env=gateway.env, timeout=60,
        )
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        gateway.stop()

    assert version != first_version
    assert kinds == {"api": version, "worker": version}
    assert rejected.returncode == 1
    assert "providers.yaml:" in rejected.stderr
    assert "unknown key 'routez'" in rejected.stderr
    assert f"still running version {version}" in rejected.stderr
