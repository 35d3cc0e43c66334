"""Print the JSON lines of `bench/run.py --out FILE` as Markdown tables.

Usage: python bench/report.py FILE [FILE ...]

Each file is one run; the tables put each figure next to its goal, one row
per file and backend, in the order given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def read_runs(paths: list[Path]) -> list[tuple[str, str, dict[str, Any]]]:
    """Return (file, backend, figures by name) for each backend of each file."""
    runs: list[tuple[str, str, dict[str, Any]]] = []
    for path in paths:
        figures: dict[str, Any] = {}
        for line in path.read_text().splitlines():
            record = json.loads(line)
            name = record["figure"]
            if name == "backend":
                figures = {}
                runs.append((path.stem, record["backend"], figures))
            elif name in ("latency", "fanout"):
                key = record.get("load", record.get("subscribers"))
                figures.setdefault(name, {})[key] = record
            else:
                figures[name] = record
    return runs


def main() -> None:
    runs = read_runs([Path(name) for name in sys.argv[1:]])
    print("| run | backend | accepted/s | bare/s | ratio (goal >= 0.6) |")
    print("|---|---|---|---|---|")
    for run, backend, fig in runs:
        if "throughput" in fig:
            t = fig["throughput"]
            print(
                f"| {run} | {backend} | {t['gateway']['rate']} | {t['bare']['rate']}"
                f" | {t['ratio']} |"
            )
    print()
    print(
        "| run | backend | load | rate/s | e2e p50 ms | e2e p99 ms | floor p50 ms"
        " | p50/floor (goal <= 3 at 50%) | ingress p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for run, backend, fig in runs:
        floor = fig.get("latency_floor")
        for load, level in sorted(fig.get("latency", {}).items()):
            print(
                f"| {run} | {backend} | {int(load * 100)}% | {level['rate']}"
                f" | {level['e2e_p50_ms']} | {level['e2e_p99_ms']}"
                f" | {floor['e2e_p50_ms'] if floor else '-'}"
                f" | {level['p50_over_floor']} | {level['ingress_p99_ms']} |"
            )
    print()
    print(
        "| run | backend | rate/s | storm s | drain s | ingress p99 ms (storm)"
        " | ingress p99 ms (quiet) | ratio (goal <= 2) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for run, backend, fig in runs:
        if "storm" in fig:
            s = fig["storm"]
            print(
                f"| {run} | {backend} | {s['rate']} | {s['storm_seconds']}"
                f" | {s['drain_seconds']} | {s['ingress_p99_ms']}"
                f" | {s['quiet_ingress_p99_ms']} | {s['p99_ratio']} |"
            )
    print()
    print(
        "| run | backend | subscribers | deliveries/s | raw httpx POST/s"
        " | ratio (goal >= 0.7) |"
    )
    print("|---|---|---|---|---|---|")
    for run, backend, fig in runs:
        for subscribers, f in sorted(fig.get("fanout", {}).items()):
            print(
                f"| {run} | {backend} | {subscribers} | {f['deliveries_per_second']}"
                f" | {f['raw_posts_per_second']} | {f['ratio']} |"
            )
    print()
    print("| run | backend | httpx POST/s by concurrency/max_connections |")
    print("|---|---|---|")
    for run, backend, fig in runs:
        if "httpx_pool" in fig:
            rates = fig["httpx_pool"]["posts_per_second"]
            cells = ", ".join(f"{key}: {value}" for key, value in rates.items())
            print(f"| {run} | {backend} | {cells} |")
    print()
    print(
        "| run | backend | deliveries | database growth B | queue growth B"
        " | allowance B | ratio (goal <= 1.5) |"
    )
    print("|---|---|---|---|---|---|---|")
    for run, backend, fig in runs:
        if "storage" in fig:
            s = fig["storage"]
            print(
                f"| {run} | {backend} | {s['deliveries']} | {s['database_growth']}"
                f" | {s['queue_growth']} | {s['allowance']} | {s['ratio']} |"
            )


if __name__ == "__main__":
    main()
