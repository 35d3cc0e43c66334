"""Fixtures for the three backends: embedded PostgreSQL, the local PostgreSQL
server, and the local server with the queue on the local Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import REPO, Gateway, start_gateway

LOCAL_POSTGRES = os.environ.get(
    "MFO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432"
)
LOCAL_REDIS = os.environ.get("MFO_TEST_REDIS", "redis://127.0.0.1:6379")
BACKENDS = ("embedded", "postgres", "redis")
SECRETS = {
    "UNIPILE_WEBHOOK_SECRET": "test-unipile-secret",
    "GITHUB_WEBHOOK_SECRET": "test-github-secret",
}


def _unavailable(reason: str) -> None:
    """Skip on a developer machine; fail under CI, where the services must run."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _create_database() -> str:
    import psycopg

    name = f"mfo_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(f"{LOCAL_POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        _unavailable(f"local PostgreSQL at {LOCAL_POSTGRES} is not reachable: {exc}")
    return name


def _drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(f"{LOCAL_POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _redis_url() -> str:
    """Check that Redis answers; each gateway gets its own queue name there."""
    import redis

    url = f"{LOCAL_REDIS}/7"
    try:
        client = redis.Redis.from_url(url)
        client.ping()
        client.close()
    except redis.RedisError as exc:
        _unavailable(f"local Redis at {LOCAL_REDIS} is not reachable: {exc}")
    return url


@pytest.fixture(scope="session")
def shipped_config() -> Path:
    return REPO / "config"


def backend_env(backend: str) -> tuple[dict[str, str], str | None]:
    """Return the environment for a backend and the database to drop afterwards."""
    if backend == "embedded":
        return {}, None
    database = _create_database()
    env = {"MFO_DATABASE_URL": f"{LOCAL_POSTGRES}/{database}"}
    if backend == "redis":
        env["MFO_QUEUE_URL"] = _redis_url()
        # A queue name of its own, so test runs sharing this Redis never
        # take each other's jobs.
        env["MFO_QUEUE_NAME"] = f"mfo-{database}"
    return env, database


@pytest.fixture(scope="module", params=BACKENDS)
def gateway(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    shipped_config: Path,
) -> Iterator[Gateway]:
    """A `mfo serve` on the shipped config, once per backend."""
    env, database = backend_env(request.param)
    env.update(SECRETS)
    data_dir = tmp_path_factory.mktemp(f"data-{request.param}")
    running = start_gateway(shipped_config, data_dir, env)
    try:
        yield running
    finally:
        running.stop()
        if database:
            _drop_database(database)


@pytest.fixture(autouse=True)
def _require_corpus(request: pytest.FixtureRequest) -> None:
    """Skip tests that read the provider corpus when it is not beside the checkout."""
    from tests.support import CORPUS

    uses_corpus = "CORPUS" in getattr(request.module, "__dict__", {})
    if uses_corpus and not CORPUS.is_dir():
        pytest.skip(f"the provider corpus is not at {CORPUS}; set MFO_CORPUS_DIR")
