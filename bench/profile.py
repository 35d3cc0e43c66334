"""Profile `mfo serve` under wrk load with py-spy and list the hottest frames.

Usage: python bench/profile.py [--backend embedded|postgres|redis]
       [--seconds N] [--top N] [--subscribers N] [--out FILE]

It starts the gateway with `--subscribers` subscriptions on the sink, drives
the Unipile route with wrk (32 connections, unique bodies) and samples the
gateway process with `py-spy record`, which the `bench` extra installs.
Sampling another process needs ptrace permission. It prints the share of
samples in which each function is on the stack, inclusive, and the raw
collapsed stacks go to `--out`.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    EVENT_TYPE,
    create_backend,
    launch_gateway,
    run_wrk,
    start_sink,
    subscribe_many,
)

from gateway.config.subscriptions import MAX_IN_FLIGHT_LIMIT


def summarize(collapsed: Path, top: int) -> list[tuple[str, float]]:
    """Return the functions on the most sampled stacks, with their share."""
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        for frame in set(stack.split(";")):
            inclusive[frame] += count
    return [(frame, count / total) for frame, count in inclusive.most_common(top)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="embedded")
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--subscribers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("profile-collapsed.txt"))
    parser.add_argument(
        "--no-worker",
        action="store_true",
        help="profile ingress alone: deliveries stay pending",
    )
    args = parser.parse_args()

    backend = create_backend(args.backend)
    sink = start_sink()
    with tempfile.TemporaryDirectory() as temp:
        extra = ("--no-worker",) if args.no_worker else ()
        gateway = launch_gateway(backend, Path(temp), extra)
        try:
            urls = [f"{sink.url}/hooks/{i}" for i in range(args.subscribers)]
            subscribe_many(
                gateway, urls, [EVENT_TYPE], max_in_flight=MAX_IN_FLIGHT_LIMIT
            )
            run_wrk(gateway.base_url, 2)
            spy = [
                shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--pid",
                str(gateway.process.pid),
                "--duration",
                str(args.seconds - 2),
                "--format",
                "raw",
                "--output",
                str(args.out),
                "--nonblocking",
            ]
            sampler = threading.Thread(
                target=subprocess.run,
                args=(spy,),
                kwargs={"capture_output": True, "timeout": args.seconds + 60},
            )
            sampler.start()
            print(run_wrk(gateway.base_url, args.seconds), flush=True)
            sampler.join()
        finally:
            gateway.stop()
            sink.stop()
            backend.drop()
    for frame, share in summarize(args.out, args.top):
        print(f"{share:6.1%}  {frame}")


if __name__ == "__main__":
    main()
