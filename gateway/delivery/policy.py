"""Retry timing per event type, and the delivery settings of YAML subscriptions."""

from __future__ import annotations

import random
from typing import Any

from gateway.config.model import GatewayConfig, match_event_type
from gateway.store import queries
from gateway.store.database import Database


def retry_for_event_type(
    retry: dict[str, Any], event_type: str
) -> tuple[list[float], float]:
    """Return the schedule and jitter that apply to one event type.

    `retry` is a stored policy: `{schedule, jitter, by_event_type}`. An exact
    event type in `by_event_type` wins, then the longest matching pattern,
    then the policy's own schedule.
    """
    best: tuple[int, dict[str, Any]] | None = None
    for pattern, override in (retry.get("by_event_type") or {}).items():
        if not match_event_type(pattern, event_type):
            continue
        rank = 1_000_000 if pattern == event_type else len(pattern.replace("*", ""))
        if best is None or rank > best[0]:
            best = (rank, override)
    chosen = best[1] if best else retry
    schedule = [float(delay) for delay in chosen.get("schedule", [])]
    return schedule, float(chosen.get("jitter", 0.0))


def next_delay(
    retry: dict[str, Any],
    event_type: str,
    attempts_made: int,
    retry_after: float | None,
) -> float | None:
    """Return seconds until the next attempt, or None when the schedule is spent.

    A receiver's Retry-After replaces the scheduled delay but never adds an
    attempt to the schedule.
    """
    schedule, jitter = retry_for_event_type(retry, event_type)
    if attempts_made > len(schedule):
        return None
    if retry_after is not None:
        return retry_after
    delay = schedule[attempts_made - 1]
    return max(0.0, delay * random.uniform(1 - jitter, 1 + jitter))


async def sync_delivery_settings(db: Database, config: GatewayConfig) -> None:
    """Store the limits and connect timeout of each subscription declared in YAML.

    The URL, events, secret, template, timeout and retry policy are stored
    by the config sync; these settings complete it.
    """
    async with db.transaction() as conn:
        for sub in config.subscriptions:
            settings = {
                "connect_timeout": sub.connect_timeout,
                "max_in_flight": sub.max_in_flight,
                "rate_limit": sub.rate_limit,
                "disable_after": sub.disable_after,
            }
            await queries.set_delivery_settings(conn, sub.name, settings)
