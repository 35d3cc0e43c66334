"""Run the benchmark suite against each backend and print one JSON line per figure.

Usage: python bench/run.py [--backend embedded|postgres|redis ...]
       [--only throughput,latency,storm,fanout,storage] [--worker-process]
       [--out FILE]

Every figure is a ratio to a baseline measured in the same run, because
absolute numbers drift between runs on a shared machine:

- throughput: accepted webhooks per second (wrk, 32 connections, unique
  bodies) over the rate of a bare Litestar route parsing the same JSON;
- latency: send-to-delivery p50 and p99 at 10%, 50% and 80% of that rate
  (open loop) over the unloaded floor (webhooks sent one at a time);
- storm: the subscriber fails for `--storm-seconds` and then recovers. The
  figures are the drain time after recovery, and ingress p99 during the
  storm over ingress p99 at the same rate without it;
- fanout: deliveries per second to 1, 100 and 1,000 subscriptions over the
  rate of httpx POSTing straight to the same sink;
- storage: growth of database and queue for N paused deliveries of one 2 KB
  event over (payload once + 200 bytes per delivery).

The gateway is one `mfo serve` process with its worker in process, on the
shipped config, on 127.0.0.1; with `--worker-process` it is `mfo serve
--no-worker` and one `mfo worker` process. Everything started here is
stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    EVENT_TYPE,
    HEADERS,
    ROUTE,
    Backend,
    Sink,
    base_payload,
    call_many,
    create_backend,
    launch_gateway,
    ms,
    open_loop,
    percentile,
    run_wrk,
    sequential,
    start_server,
    start_sink,
    start_worker_process,
    stop_worker_process,
    subscribe_many,
)

from gateway.config.subscriptions import MAX_IN_FLIGHT_LIMIT
from gateway.delivery.egress import ClientShards, EgressPolicy
from tests.support import Gateway

# A schedule that keeps retrying through a 60 s outage: 1+2+4+8*12 s.
_SUBSCRIPTIONS = "/api/notifications/subscriptions"
STORM_RETRY = {"schedule": ["1s", "2s", "4s"] + ["8s"] * 12, "jitter": 0.2}


def emit(record: dict[str, Any], out: Path | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if out is not None:
        with out.open("a") as file:
            file.write(line + "\n")


def measure_bare_rate(seconds: int) -> dict[str, Any]:
    bare = start_server("bare_app.py", "/")
    try:
        run_wrk(bare.url, 2)
        return run_wrk(bare.url, seconds)
    finally:
        bare.stop()


def gateway_port(gateway: Gateway) -> int:
    return int(gateway.base_url.rsplit(":", 1)[1])


def latency_summary(latencies: list[float]) -> dict[str, float]:
    return {
        "e2e_p50_ms": ms(percentile(latencies, 0.5)),
        "e2e_p99_ms": ms(percentile(latencies, 0.99)),
    }


def run_load(
    gateway: Gateway, sink: Sink, rate: float, seconds: float, drain: float = 120
) -> dict[str, Any]:
    """Send an open-loop load and wait for its deliveries; return both sides."""
    sink.control(reset=True)
    load = open_loop(gateway_port(gateway), rate, seconds)
    stats = sink.wait_for(load.accepted, drain)
    return {
        "rate": rate,
        "seconds": seconds,
        **load.summary(),
        "delivered": stats["ok"],
        **latency_summary(stats["latencies"]),
    }


def throughput_and_latency(
    gateway: Gateway, sink: Sink, args: argparse.Namespace, out: Path | None
) -> dict[str, Any]:
    sink.control(reset=True)
    floor_load = sequential(gateway_port(gateway), args.floor_count)
    floor_stats = sink.wait_for(floor_load.accepted, 60)
    floor = {
        **floor_load.summary(),
        **latency_summary(floor_stats["latencies"][10:]),
    }
    emit({"figure": "latency_floor", **floor}, out)

    run_wrk(gateway.base_url, 2)
    sink.wait_for(0, 0)
    result = run_wrk(gateway.base_url, args.seconds)
    bare = measure_bare_rate(args.seconds)
    ratio = round(result["rate"] / bare["rate"], 3)
    emit({"figure": "throughput", "gateway": result, "bare": bare, "ratio": ratio}, out)
    # Let the worker finish the deliveries wrk's webhooks caused.
    backlog_deadline = time.monotonic() + 300
    while time.monotonic() < backlog_deadline:
        before = sink.control()["ok"]
        time.sleep(2)
        if sink.control()["ok"] == before:
            break

    levels: dict[str, Any] = {}
    for fraction in (0.1, 0.5, 0.8):
        rate = round(result["rate"] * fraction, 1)
        level = run_load(gateway, sink, rate, args.seconds)
        level["p50_over_floor"] = round(level["e2e_p50_ms"] / floor["e2e_p50_ms"], 2)
        levels[str(fraction)] = level
        emit({"figure": "latency", "load": fraction, **level}, out)
    return {"throughput": result, "floor": floor, "levels": levels}


def storm(
    gateway: Gateway,
    sink: Sink,
    rate: float,
    quiet_p99: float,
    args: argparse.Namespace,
    out: Path | None,
) -> None:
    sink.control(reset=True)
    recovery = time.time() + 0.5 + args.storm_seconds
    sink.control(fail_until=recovery)
    load = open_loop(gateway_port(gateway), rate, args.storm_seconds)
    stats = sink.wait_for(load.accepted, args.storm_seconds + 240)
    drained = stats["ok"] >= load.accepted
    summary = load.summary()
    emit(
        {
            "figure": "storm",
            "rate": rate,
            "storm_seconds": args.storm_seconds,
            **summary,
            "failed_attempts": stats["failed"],
            "delivered": stats["ok"],
            "drained": drained,
            "drain_seconds": round(stats["last_at"] - recovery, 2),
            "quiet_ingress_p99_ms": quiet_p99,
            "p99_ratio": round(summary["ingress_p99_ms"] / quiet_p99, 2),
        },
        out,
    )


async def _post_rate(
    url: str, concurrency: int, count: int, max_connections: int, shards: int = 1
) -> float:
    """POST to `url` through `shards` clients taken in turn; return POSTs per second."""
    pool = ClientShards(
        EgressPolicy(allow_private=True), shards, connections_per_shard=max_connections
    )
    body = json.dumps(base_payload()).encode()
    remaining = [min(count, 200)]

    async def post_until_done() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            await pool.next().post(url, content=body)

    try:
        # Warm up: open the connections before the clock starts.
        await asyncio.gather(*(post_until_done() for _ in range(concurrency)))
        remaining[0] = count
        started = time.perf_counter()
        await asyncio.gather(*(post_until_done() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)
    finally:
        await pool.aclose()


def httpx_rates(sink: Sink, count: int) -> dict[str, float]:
    """Measure httpx POSTs per second to the sink by concurrency and pool size.

    Keys read `concurrency/max_connections`, or `concurrency/shardsxmax_connections`
    for several clients taken in turn. The worker delivers 16 at once through
    4 clients of 16 connections each.
    """
    rates = {}
    cases = [(1, 64, 1), (4, 64, 1), (8, 64, 1), (16, 64, 1), (32, 64, 1)]
    cases += [(64, 64, 1), (16, 8, 1), (16, 16, 2), (16, 16, 4), (32, 16, 4)]
    for concurrency, pool, shards in cases:
        rate = asyncio.run(
            _post_rate(sink.url + "/raw", concurrency, count, pool, shards)
        )
        label = f"{shards}x{pool}" if shards > 1 else str(pool)
        rates[f"{concurrency}/{label}"] = round(rate, 1)
    return rates


def fanout(
    gateway: Gateway, sink: Sink, args: argparse.Namespace, out: Path | None
) -> None:
    rates = httpx_rates(sink, args.fanout_deliveries)
    emit({"figure": "httpx_pool", "posts_per_second": rates}, out)
    # The baseline is the best rate httpx reached at any concurrency.
    baseline = max(rates.values())
    for subscribers in (1, 100, 1000):
        urls = [f"{sink.url}/fan/{index}" for index in range(subscribers)]
        ids = subscribe_many(
            gateway,
            urls,
            [EVENT_TYPE],
            max_in_flight=MAX_IN_FLIGHT_LIMIT,
        )
        events = max(1, args.fanout_deliveries // subscribers)
        # One subscriber: deliver a held backlog, so that the figure is the
        # worker's rate and not the rate of sending webhooks one by one.
        backlog = subscribers == 1
        if backlog:
            call_many(gateway, "POST", [f"{_SUBSCRIPTIONS}/{ids[0]}/pause"])
        sink.control(reset=True)
        payload = base_payload()
        started = time.time()
        with httpx.Client(base_url=gateway.base_url, timeout=120) as client:
            for index in range(events):
                payload["email_id"] = f"fan-{subscribers}-{started}-{index}"
                response = client.post(
                    ROUTE, content=json.dumps(payload), headers=HEADERS
                )
                assert response.status_code == 202, response.text
        if backlog:
            started = time.time()
            call_many(gateway, "POST", [f"{_SUBSCRIPTIONS}/{ids[0]}/resume"])
        expected = events * subscribers
        stats = sink.wait_for(expected, 300)
        rate = stats["ok"] / (stats["last_at"] - started)
        emit(
            {
                "figure": "fanout",
                "subscribers": subscribers,
                "events": events,
                "from_backlog": backlog,
                "delivered": stats["ok"],
                "expected": expected,
                "deliveries_per_second": round(rate, 1),
                "raw_posts_per_second": baseline,
                "ratio": round(rate / baseline, 3),
            },
            out,
        )
        call_many(gateway, "DELETE", [f"{_SUBSCRIPTIONS}/{i}" for i in ids])


def storage_size(backend: Backend, data_dir: Path) -> dict[str, int]:
    import psycopg

    with psycopg.connect(backend.database_url(data_dir)) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'm') AND n.nspname = 'public'"
        ).fetchone()
        database = int(row[0]) if row else 0
    queue = 0
    if "MFO_QUEUE_URL" in backend.env:
        import redis

        client = redis.Redis.from_url(backend.env["MFO_QUEUE_URL"])
        for key in client.scan_iter(count=1000):
            queue += int(client.memory_usage(key) or 0)
        client.close()
    return {"database": database, "queue": queue}


def storage(
    gateway: Gateway,
    backend: Backend,
    data_dir: Path,
    args: argparse.Namespace,
    out: Path | None,
) -> None:
    count = args.storage_deliveries
    sink_url = "http://127.0.0.1:9/paused"
    ids = subscribe_many(gateway, [sink_url] * count, [EVENT_TYPE])
    call_many(gateway, "POST", [f"{_SUBSCRIPTIONS}/{i}/pause" for i in ids])
    payload = base_payload()
    payload["email_id"] = f"storage-{time.time()}"
    payload["padding"] = ""
    size = len(json.dumps(payload))
    payload["padding"] = "x" * max(0, 2048 - size)
    body = json.dumps(payload)
    time.sleep(2)
    before = storage_size(backend, data_dir)
    response = httpx.post(
        gateway.base_url + ROUTE, content=body, headers=HEADERS, timeout=300
    )
    assert response.status_code == 202, response.text
    time.sleep(2)
    after = storage_size(backend, data_dir)
    growth = sum(after.values()) - sum(before.values())
    allowance = len(body) + 200 * count
    emit(
        {
            "figure": "storage",
            "deliveries": count,
            "payload_bytes": len(body),
            "database_growth": after["database"] - before["database"],
            "queue_growth": after["queue"] - before["queue"],
            "allowance": allowance,
            "ratio": round(growth / allowance, 2),
        },
        out,
    )


def run_backend(name: str, args: argparse.Namespace, out: Path | None) -> None:
    only = set(args.only.split(","))
    backend = create_backend(name)
    sink = start_sink()
    worker = None
    with tempfile.TemporaryDirectory() as temp:
        data_dir = Path(temp)
        extra = ("--no-worker",) if args.worker_process else ()
        gateway = launch_gateway(backend, data_dir, extra)
        try:
            if args.worker_process:
                worker = start_worker_process(gateway)
                name += " (worker process)"
            emit({"figure": "backend", "backend": name}, out)
            main = (
                gateway.api(
                    "POST",
                    "/api/notifications/subscribe",
                    json={
                        "url": sink.url + "/hooks",
                        "events": [EVENT_TYPE],
                        "retry": STORM_RETRY,
                        "max_in_flight": MAX_IN_FLIGHT_LIMIT,
                        "disable_after": "never",
                    },
                )
                .raise_for_status()
                .json()
            )
            if only & {"throughput", "latency", "storm"}:
                measured = throughput_and_latency(gateway, sink, args, out)
                if "storm" in only:
                    half = measured["levels"]["0.5"]
                    storm(
                        gateway, sink, half["rate"], half["ingress_p99_ms"], args, out
                    )
            # Each scenario below brings its own subscriptions.
            gateway.unsubscribe(main)
            if "fanout" in only:
                fanout(gateway, sink, args, out)
            if "storage" in only:
                storage(gateway, backend, data_dir, args, out)
        finally:
            if worker is not None:
                stop_worker_process(worker)
            gateway.stop()
            sink.stop()
            backend.drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", action="append", choices=["embedded", "postgres", "redis"]
    )
    parser.add_argument("--only", default="throughput,latency,storm,fanout,storage")
    parser.add_argument("--seconds", type=int, default=10, help="length of each load")
    parser.add_argument("--storm-seconds", type=int, default=60)
    parser.add_argument("--floor-count", type=int, default=200)
    parser.add_argument("--fanout-deliveries", type=int, default=2000)
    parser.add_argument("--storage-deliveries", type=int, default=10_000)
    parser.add_argument("--out", type=Path, help="also append the JSON lines here")
    parser.add_argument(
        "--worker-process",
        action="store_true",
        help="run deliveries in a separate `mfo worker` process",
    )
    args = parser.parse_args()
    emit(
        {
            "figure": "machine",
            "python": platform.python_version(),
            "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
        args.out,
    )
    for name in args.backend or ["embedded", "redis"]:
        run_backend(name, args, args.out)


if __name__ == "__main__":
    main()
