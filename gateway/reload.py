"""Reload the config without a restart: on file change, SIGHUP, API or NOTIFY.

A new config is compiled beside the running one, in a thread so requests
keep flowing, and swapped in only when it has no errors. A broken config
leaves the running one in place; its problems are logged with their
locations and kept for `GET /admin/config`. Every process that reloads
tells the others over PostgreSQL NOTIFY, so workers follow `mfo reload`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from gateway.config.loader import check_config
from gateway.config.model import GatewayConfig
from gateway.exceptions import ConfigProblem
from gateway.ids import new_id
from gateway.store.database import Database

logger = logging.getLogger(__name__)

RELOAD_CHANNEL = "mfo_reload"
WATCH_INTERVAL = 0.5
HEARTBEAT_INTERVAL = 5.0
_IGNORED_SUFFIXES = (".swp", ".swx", ".tmp", "~")


@dataclass
class ReloadState:
    """The config status of this process, as `GET /admin/config` reports it."""

    version: str
    loaded_at: datetime
    last_error: list[dict[str, Any]] | None = None
    last_error_at: datetime | None = None
    reloads: int = 0
    failed_reloads: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "loaded_at": self.loaded_at.isoformat(),
            "reloads": self.reloads,
            "failed_reloads": self.failed_reloads,
            "last_reload_error": self.last_error,
            "last_reload_error_at": (
                self.last_error_at.isoformat() if self.last_error_at else None
            ),
        }


def watched_files(config_dir: Path) -> list[Path]:
    """List the files a config can read: the config folder and `schemas/`."""
    roots = [config_dir, config_dir.parent / "schemas"]
    files = []
    for root in roots:
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            if path.name.startswith(".") or path.name.endswith(_IGNORED_SUFFIXES):
                continue
            if path.is_file():
                files.append(path)
    return sorted(files)


def fingerprint(config_dir: Path) -> tuple[tuple[str, int, int], ...]:
    entries = []
    for path in watched_files(config_dir):
        try:
            stat = path.stat()
        except OSError:
            continue
        entries.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(entries)


@dataclass
class ConfigReloader:
    """Compile, check and swap configs for one process."""

    config_dir: Path
    apply: Callable[[GatewayConfig], Awaitable[None]]
    state: ReloadState
    db: Database | None = None
    process_kind: str = "server"
    current: Callable[[], GatewayConfig] | None = None
    process_id: str = field(default_factory=lambda: new_id("proc"))
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def reload(self, reason: str, announce: bool = True) -> dict[str, Any]:
        """Compile the config; swap it in when valid. Return the outcome."""
        async with self._lock:
            config, problems = await asyncio.to_thread(check_config, self.config_dir)
            errors = [p for p in problems if p.severity == "error"]
            if config is not None and self.current is not None:
                errors += self._dropped_routes(self.current(), config)
                if errors:
                    config = None
            if config is None:
                self._record_failure(errors, reason)
                await self._beat_once()
                return {
                    "reloaded": False,
                    "version": self.state.version,
                    "errors": [p.as_dict() for p in errors],
                }
            changed = config.version != self.state.version
            if changed:
                await self.apply(config)
                self.state.version = config.version
                self.state.loaded_at = datetime.now(UTC)
                self.state.reloads += 1
                logger.info("config reloaded (%s): version %s", reason, config.version)
            self.state.last_error = None
            self.state.last_error_at = None
        if changed and announce:
            await self._announce(config.version)
        await self._beat_once()
        return {"reloaded": changed, "version": config.version, "errors": []}

    async def _beat_once(self) -> None:
        """Report the version at once, so listings do not wait for the next beat."""
        if self.db is None:
            return
        try:
            await self._beat()
        except Exception as exc:
            logger.warning("process heartbeat failed: %s", exc)

    def _dropped_routes(
        self, running: GatewayConfig, new: GatewayConfig
    ) -> list[ConfigProblem]:
        """Refuse a config without routes in place of one with routes.

        An editor that truncates the file before writing it produces exactly
        that for a moment; a restart still accepts an empty config.
        """
        old_routes = {route.qualified_name for route in running.routes}
        new_routes = {route.qualified_name for route in new.routes}
        if old_routes and not new_routes:
            file = str(self.config_dir / "providers.yaml")
            message = (
                f"the new config declares no routes while {len(old_routes)} are served;"
                " it looks half-written, so it is not loaded (restart mfo to run"
                " without routes)"
            )
            return [ConfigProblem(file, 1, 1, message)]
        removed = sorted(old_routes - new_routes)
        if removed:
            logger.warning("config reload removes routes: %s", ", ".join(removed))
        return []

    def _record_failure(self, errors: list[ConfigProblem], reason: str) -> None:
        self.state.failed_reloads += 1
        self.state.last_error = [p.as_dict() for p in errors]
        self.state.last_error_at = datetime.now(UTC)
        logger.error(
            "config reload (%s) rejected, still running version %s: %d problems",
            reason,
            self.state.version,
            len(errors),
        )
        for problem in errors:
            logger.error("%s", problem)

    async def _announce(self, version: str) -> None:
        if self.db is None:
            return
        try:
            async with self.db.connection() as conn:
                await conn.execute(
                    "SELECT pg_notify(%s, %s)",
                    (RELOAD_CHANNEL, f"{self.process_id}:{version}"),
                )
        except psycopg.Error as exc:
            logger.warning("could not tell other processes about the reload: %s", exc)

    def start(self, watch_files: bool = True) -> None:
        """Start watching files, listening for NOTIFY and sending heartbeats."""
        if watch_files:
            self._tasks.append(asyncio.create_task(self._watch_files()))
        if self.db is not None:
            self._tasks.append(asyncio.create_task(self._listen()))
            self._tasks.append(asyncio.create_task(self._heartbeat()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._tasks.clear()
        if self.db is not None:
            try:
                async with self.db.connection() as conn:
                    await conn.execute(
                        "DELETE FROM mfo_processes WHERE id = %s", (self.process_id,)
                    )
            except Exception:
                pass

    async def _watch_files(self) -> None:
        seen = await asyncio.to_thread(fingerprint, self.config_dir)
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            try:
                current = await asyncio.to_thread(fingerprint, self.config_dir)
                if current != seen:
                    seen = current
                    await self.reload("files changed")
            except Exception:
                logger.exception("config watcher failed; it keeps watching")

    async def _listen(self) -> None:
        assert self.db is not None
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.db.url, autocommit=True
                )
                async with conn:
                    await conn.execute(f"LISTEN {RELOAD_CHANNEL}")
                    async for notify in conn.notifies():
                        sender, _, version = notify.payload.partition(":")
                        if sender != self.process_id and version != self.state.version:
                            await self.reload(
                                "another process reloaded", announce=False
                            )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(
                    "reload listener lost its connection (%s); reconnecting", exc
                )
                await asyncio.sleep(2)

    async def _heartbeat(self) -> None:
        assert self.db is not None
        while True:
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("process heartbeat failed: %s", exc)
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def _beat(self) -> None:
        assert self.db is not None
        async with self.db.connection() as conn:
            await conn.execute(
                "INSERT INTO mfo_processes (id, kind, hostname, pid, config_version,"
                " last_reload_error, heartbeat_at) VALUES (%s, %s, %s, %s, %s, %s, now())"
                " ON CONFLICT (id) DO UPDATE SET config_version = EXCLUDED.config_version,"
                " last_reload_error = EXCLUDED.last_reload_error, heartbeat_at = now()",
                (
                    self.process_id,
                    self.process_kind,
                    socket.gethostname(),
                    os.getpid(),
                    self.state.version,
                    Jsonb(self.state.last_error),
                ),
            )


async def list_processes(db: Database) -> list[dict[str, Any]]:
    """Return the processes that sent a heartbeat in the last 30 seconds."""
    async with db.connection() as conn:
        cursor = await conn.execute(
            "SELECT id, kind, hostname, pid, config_version, last_reload_error,"
            " started_at, heartbeat_at FROM mfo_processes"
            " WHERE heartbeat_at > now() - interval '30 seconds' ORDER BY started_at"
        )
        return await cursor.fetchall()
