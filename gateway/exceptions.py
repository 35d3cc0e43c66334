"""Errors raised by the gateway.

GatewayError
├── ConfigError            a config file is wrong; carries every problem found
├── IngressError           a provider request is rejected; maps to one HTTP status
│   ├── PayloadTooLarge        413
│   ├── UnsupportedMediaType   415
│   ├── InvalidPayload         400 (bad encoding, bad JSON, schema failures)
│   ├── Unauthorized           401 (bad secret or signature)
│   │   └── CredentialsRequired    401 with a Basic auth challenge
│   ├── Forbidden              403 (source address or verify token not allowed)
│   └── UnmappablePayload      422 (templates could not map a valid payload)
├── SigningUnavailable     a scheme lacks the key or URL it needs to sign a request
├── StoreError             the database could not be started or reached
├── EgressRejected         a delivery target resolves to a forbidden address
└── NotFound               an API or CLI lookup found nothing
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One mistake in a config file, located by file, line and column."""

    file: str
    line: int
    column: int
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "severity": self.severity,
        }


class ConfigError(GatewayError):
    """Raise when a config directory has one or more errors."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        lines = "\n".join(str(p) for p in problems)
        super().__init__(f"invalid config:\n{lines}")


class IngressError(GatewayError):
    """Raise to reject a provider request with a 4xx status and a JSON body."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or []

    def as_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        if self.details:
            body["errors"] = self.details
        return body


class PayloadTooLarge(IngressError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(IngressError):
    status_code = 415
    code = "unsupported_media_type"


class InvalidPayload(IngressError):
    status_code = 400
    code = "invalid_payload"


class Unauthorized(IngressError):
    status_code = 401
    code = "unauthorized"


class CredentialsRequired(Unauthorized):
    """Raise for missing or wrong Basic credentials; the answer names the realm."""

    def __init__(self, message: str, realm: str) -> None:
        super().__init__(message)
        escaped = realm.replace("\\", "\\\\").replace('"', '\\"')
        self.headers = {"www-authenticate": f'Basic realm="{escaped}"'}


class Forbidden(IngressError):
    status_code = 403
    code = "forbidden"


class UnmappablePayload(IngressError):
    status_code = 422
    code = "unmappable_payload"


class SigningUnavailable(GatewayError):
    """Raise when a scheme cannot sign a request, for want of a private key or URL."""


class StoreError(GatewayError):
    """Raise when the database cannot be started, reached or migrated."""


class EgressRejected(GatewayError):
    """Raise when a delivery or http step targets a forbidden address."""


class NotFound(GatewayError):
    """Raise when an id names nothing that is stored."""
