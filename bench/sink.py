"""Run a webhook receiver on 127.0.0.1 that counts deliveries and their latency.

Usage: python bench/sink.py PORT

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) to stay
cheap next to the gateway on a small machine. A POST to any path other than
`/control` is a delivery: it answers 200, or 500 while failing is switched on.
A body that contains `"bench_sent_at": <unix time>` adds one latency sample.
`GET /control` returns the counters as JSON; `POST /control` with a JSON
object sets `fail_until` (a Unix time) and, with `"reset": true`, clears the
counters.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from typing import Any

_SENT_AT = re.compile(rb'"bench_sent_at":\s*([0-9.]+)')


class Counters:
    """What the sink has received since its last reset."""

    def __init__(self) -> None:
        self.fail_until = 0.0
        self.reset()

    def reset(self) -> None:
        self.ok = 0
        self.failed = 0
        self.first_at = 0.0
        self.last_at = 0.0
        self.latencies: list[float] = []

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failed": self.failed,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "latencies": self.latencies,
        }


def _record(counters: Counters, body: bytes) -> int:
    now = time.time()
    if now < counters.fail_until:
        counters.failed += 1
        return 500
    counters.ok += 1
    counters.first_at = counters.first_at or now
    counters.last_at = now
    match = _SENT_AT.search(body)
    if match:
        counters.latencies.append(now - float(match.group(1)))
    return 200


def _control(counters: Counters, method: str, body: bytes) -> bytes:
    if method == "POST":
        command = json.loads(body or b"{}")
        if command.get("reset"):
            counters.reset()
        if "fail_until" in command:
            counters.fail_until = float(command["fail_until"])
    return json.dumps(counters.as_dict()).encode()


async def _serve_connection(
    counters: Counters, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, _, header_block = head.partition(b"\r\n")
            method, path, _ = request_line.decode("latin-1").split(" ", 2)
            length = 0
            for line in header_block.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            if path == "/control":
                status, answer = 200, _control(counters, method, body)
            else:
                status, answer = _record(counters, body), b"ok"
            writer.write(
                b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s"
                % (status, len(answer), answer)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    counters = Counters()
    server = await asyncio.start_server(
        lambda r, w: _serve_connection(counters, r, w), "127.0.0.1", port, backlog=1024
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
