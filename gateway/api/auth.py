"""Protect the API with a bearer token, generated on first start when unset."""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers import BaseRouteHandler

logger = logging.getLogger(__name__)

TOKEN_FILE = "api-token"


def token_path(data_dir: Path) -> Path:
    return data_dir / TOKEN_FILE


def read_api_token(data_dir: Path) -> str | None:
    """Return the token kept in the data directory, if there is one."""
    try:
        return token_path(data_dir).read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def ensure_api_token(data_dir: Path, configured: str | None) -> str:
    """Return the configured token, or the stored one, creating it if needed."""
    if configured:
        return configured
    existing = read_api_token(data_dir)
    if existing:
        logger.info("API token read from %s", token_path(data_dir))
        return existing
    data_dir.mkdir(parents=True, exist_ok=True)
    token = "mfo_" + secrets.token_urlsafe(32)
    path = token_path(data_dir)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    logger.warning(
        "MFO_API_TOKEN is not set; generated an API token in %s (readable by its owner"
        " only); the mfo CLI reads it from there",
        path,
    )
    return token


def bearer_guard(token: str):  # type: ignore[no-untyped-def]
    """Build a Litestar guard that requires `Authorization: Bearer <token>`."""
    expected = token.encode()

    def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        header = connection.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), expected
        ):
            raise NotAuthorizedException(
                detail="missing or invalid API token; send Authorization: Bearer <token>"
            )

    return guard
