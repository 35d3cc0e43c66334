"""Helpers the API controllers share: runtime access, JSON shaping, time filters."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar.datastructures import State
from litestar.exceptions import HTTPException

from gateway.config.checks import parse_duration


class ApiError(HTTPException):
    """A 4xx response whose body states what was wrong with the request."""

    def __init__(self, status_code: int, message: str, errors: list[Any] | None = None):
        super().__init__(
            detail=message, status_code=status_code, extra={"errors": errors or []}
        )


def runtime(state: State) -> Any:
    return state["mfo"]


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """Turn datetimes into ISO 8601 strings so a row can be sent as JSON."""
    return {
        key: value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value
        for key, value in row.items()
    }


def parse_time(value: str | None, name: str) -> datetime | None:
    """Read a time filter: a duration back from now (`2h`) or an ISO 8601 time."""
    if value is None or value == "":
        return None
    if re.match(r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$", value):
        try:
            return datetime.now(UTC) - timedelta(seconds=parse_duration(value))
        except OverflowError:
            message = f"invalid {name} {value!r}; the duration is too long"
            raise ApiError(400, message) from None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400,
            f"invalid {name} {value!r}; use a duration such as 2h or an ISO 8601 time",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_limit(value: int | None, default: int = 100, maximum: int = 1000) -> int:
    if value is None:
        return default
    if not 1 <= value <= maximum:
        raise ApiError(400, f"limit must be between 1 and {maximum}, not {value}")
    return value
