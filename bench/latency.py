"""Measure the time from sending a webhook to its delivery reaching a subscriber.

Usage: python bench/latency.py [--count N] [--backend embedded|postgres|redis ...]

For each backend it starts `mfo serve` on the shipped config, subscribes a
receiver on 127.0.0.1, sends Unipile webhooks one at a time (unloaded), and
records send-to-receive latency. The baseline, measured in the same run, is a
direct POST of the same body from the same client to the same receiver: the
one HTTP hop that any gateway adds at least twice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import SECRETS, _drop_database, backend_env
from tests.support import CORPUS, REPO, Subscriber, start_gateway


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.5) * 1000, 2),
        "p90_ms": round(percentile(values, 0.9) * 1000, 2),
        "p99_ms": round(percentile(values, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(values) * 1000, 2),
    }


def measure_baseline(subscriber: Subscriber, body: bytes, count: int) -> list[float]:
    samples = []
    with httpx.Client() as client:
        for _ in range(count):
            before = len(subscriber.received)
            started = time.time()
            client.post(subscriber.url, content=body)
            subscriber.wait_for(before + 1)
            samples.append(subscriber.received[-1].received_at - started)
    return samples


def measure_gateway(backend: str, count: int) -> dict[str, object]:
    env, database = backend_env(backend)
    env.update(SECRETS)
    subscriber = Subscriber().start()
    payload = json.loads((CORPUS / "unipile" / "mail_sent.json").read_bytes())
    with tempfile.TemporaryDirectory() as data_dir:
        gateway = start_gateway(REPO / "config", Path(data_dir), env)
        try:
            gateway.subscribe(subscriber, ["unipile.email.sent"])
            headers = {
                "content-type": "application/json",
                "unipile-auth": SECRETS["UNIPILE_WEBHOOK_SECRET"],
            }
            samples = []
            with httpx.Client(base_url=gateway.base_url) as client:
                for index in range(count + 10):
                    payload["email_id"] = f"bench-{uuid.uuid4()}"
                    body = json.dumps(payload).encode()
                    before = len(subscriber.received)
                    started = time.time()
                    response = client.post(
                        "/webhooks/unipile/notify", content=body, headers=headers
                    )
                    assert response.status_code == 202, response.text
                    subscriber.wait_for(before + 1)
                    if index >= 10:  # the first requests warm up pools and caches
                        samples.append(subscriber.received[-1].received_at - started)
            baseline = measure_baseline(subscriber, body, count)
        finally:
            gateway.stop()
            subscriber.stop()
            if database:
                _drop_database(database)
    gateway_summary, baseline_summary = summary(samples), summary(baseline)
    return {
        "backend": backend,
        "count": count,
        "webhook_to_delivery": gateway_summary,
        "baseline_direct_post": baseline_summary,
        "ratio_p50": round(gateway_summary["p50_ms"] / baseline_summary["p50_ms"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument(
        "--backend", action="append", choices=["embedded", "postgres", "redis"]
    )
    args = parser.parse_args()
    for backend in args.backend or ["embedded", "postgres", "redis"]:
        print(json.dumps(measure_gateway(backend, args.count)), flush=True)


if __name__ == "__main__":
    main()
