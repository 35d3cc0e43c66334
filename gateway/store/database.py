"""Open the connection pool and apply migrations."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from gateway.exceptions import StoreError

logger = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every mfo process.
_MIGRATION_LOCK = 0x6D666F01

Connection = psycopg.AsyncConnection[dict[str, Any]]


def _migration_files() -> list[tuple[int, str, str]]:
    folder = resources.files("gateway.store") / "migrations"
    migrations = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            migrations.append((number, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(migrations)


class Database:
    """A pool of connections to the gateway's PostgreSQL database."""

    def __init__(self, url: str, min_size: int = 2, max_size: int = 10) -> None:
        self.url = url
        self.pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"row_factory": dict_row, "autocommit": True},
            # A connection broken by a server restart is replaced before use.
            check=AsyncConnectionPool.check_connection,
            open=False,
            name="mfo",
        )

    async def open(self, timeout: float = 30.0) -> None:
        # One direct connection first, because the pool hides the server's
        # reason (no such database, bad password) behind a timeout.
        try:
            probe = await psycopg.AsyncConnection.connect(self.url, connect_timeout=10)
            await probe.close()
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            raise StoreError(
                f"cannot connect to PostgreSQL at {_redact(self.url)}: {reason};"
                " check MFO_DATABASE_URL"
            ) from None
        try:
            await self.pool.open(wait=True, timeout=timeout)
        except Exception as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {_redact(self.url)}: {exc}"
            ) from exc

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self.pool.connection() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.pool.connection() as conn, conn.transaction():
            yield conn

    async def migrate(self) -> int:
        """Apply the migrations not yet applied; return how many ran."""
        applied = 0
        async with self.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS mfo_migrations ("
                " number integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT number FROM mfo_migrations")
            done = {row["number"] for row in await cursor.fetchall()}
            for number, name, sql in _migration_files():
                if number in done:
                    continue
                logger.info("applying migration %s", name)
                await conn.execute(sql)  # type: ignore[arg-type]
                await conn.execute(
                    "INSERT INTO mfo_migrations (number, name) VALUES (%s, %s)",
                    (number, name),
                )
                applied += 1
        return applied

    async def ping(self) -> bool:
        try:
            async with self.connection() as conn:
                await conn.execute("SELECT 1")
        except Exception:
            return False
        return True


def _redact(url: str) -> str:
    """Hide a password in a connection URL before it is logged."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
