"""JSON Schemas of providers.yaml and subscriptions.yaml, for editors and CI.

The compiler's own checks are the authority, and they report more than a
schema can (missing schema files, templates that do not compile, duplicate
paths). These schemas give editors key completion and catch typos early;
the verification section is built from the compiler's table of schemes, so
both accept the same keys.
"""

from __future__ import annotations

from typing import Any

from gateway.config import verify

DIALECT = "https://json-schema.org/draft/2020-12/schema"
_STRING = {"type": "string", "minLength": 1}
_DURATION = {
    "description": "A number of seconds, or a number with ms, s, m, h or d.",
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h|d)?\s*$"},
    ],
}
_SIZE = {
    "description": "Bytes, or a number with b, kb, kib, mb or mib.",
    "anyOf": [{"type": "integer", "minimum": 1}, {"type": "string"}],
}
_PATTERNS = {
    "description": "Event type patterns; * matches any text.",
    "anyOf": [_STRING, {"type": "array", "items": _STRING, "minItems": 1}],
}
_TEMPLATE_TREE = {"description": "A value whose string leaves are Jinja templates."}
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


def _closed(
    properties: dict[str, Any], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


def _verify_schema() -> dict[str, Any]:
    variants = []
    for kind, keys in verify._VERIFY_KEYS.items():
        properties: dict[str, Any] = {key: {} for key in keys}
        properties["type"] = {"const": kind}
        variants.append(_closed(properties, ("type",)))
    scheme = {"oneOf": variants}
    return {
        "description": "How the route checks its provider's requests; a list must all pass.",
        "anyOf": [scheme, {"type": "array", "items": scheme, "minItems": 1}],
    }


def _response_schema() -> dict[str, Any]:
    return _closed(
        {
            "status": {"type": ["integer", "string"]},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "body": _TEMPLATE_TREE,
        }
    )


def _handshake_schema() -> dict[str, Any]:
    return _closed(
        {
            "method": {
                "enum": ["GET", "POST", "PUT", "PATCH", "get", "post", "put", "patch"]
            },
            "when": {"type": ["string", "boolean"]},
            "verify": {"type": "boolean"},
            "token": _STRING,
            "secret": _STRING,
            "secrets": {"type": "array", "items": _STRING, "minItems": 1},
            "response": _response_schema(),
        },
        ("when", "response"),
    )


def _route_schema() -> dict[str, Any]:
    event_rule = _closed(
        {
            "type": _STRING,
            "when": {"type": ["string", "boolean"]},
            "data": _TEMPLATE_TREE,
        },
        ("type",),
    )
    return _closed(
        {
            "path": {"type": "string", "pattern": "^/"},
            "method": {"enum": ["POST", "PUT", "PATCH", "post", "put", "patch"]},
            "description": {"type": "string"},
            "verify": _verify_schema(),
            "schema": {
                "type": "string",
                "description": "A JSON Schema file under schemas/.",
            },
            "idempotency_key": _STRING,
            "events": {"type": "array", "items": event_rule, "minItems": 1},
            "max_body_size": _SIZE,
            "handshakes": {
                "type": "object",
                "propertyNames": {"pattern": _NAME_PATTERN},
                "additionalProperties": _handshake_schema(),
            },
            "response": _response_schema(),
            "decode": _closed(
                {
                    "form_json_fields": {
                        "anyOf": [_STRING, {"type": "array", "items": _STRING}]
                    },
                    "max_json_depth": {"type": "integer", "minimum": 1, "maximum": 512},
                    "max_decompressed_size": _SIZE,
                }
            ),
        },
        ("path", "verify", "events"),
    )


def _step_schema() -> dict[str, Any]:
    http = _closed(
        {
            "method": {"type": "string"},
            "url": _STRING,
            "headers": _TEMPLATE_TREE,
            "json": _TEMPLATE_TREE,
            "body": {"type": "string"},
            "timeout": _DURATION,
        },
        ("url",),
    )
    python = {
        "anyOf": [
            _STRING,
            _closed({"function": _STRING, "args": _TEMPLATE_TREE}, ("function",)),
        ]
    }
    emit = _closed({"type": _STRING, "data": _TEMPLATE_TREE}, ("type",))
    return {
        **_closed(
            {
                "name": _STRING,
                "when": {"type": ["string", "boolean"]},
                "transform": _TEMPLATE_TREE,
                "emit": emit,
                "http": http,
                "python": python,
            }
        ),
        "minProperties": 1,
    }


def providers_schema() -> dict[str, Any]:
    """Return the JSON Schema of providers.yaml."""
    provider = _closed(
        {
            "description": {"type": "string"},
            "routes": {
                "type": "object",
                "propertyNames": {"pattern": _NAME_PATTERN},
                "additionalProperties": _route_schema(),
            },
        },
        ("routes",),
    )
    pipeline = _closed(
        {
            "description": {"type": "string"},
            "on": _PATTERNS,
            "when": {"type": ["string", "boolean"]},
            "steps": {"type": "array", "items": _step_schema(), "minItems": 1},
        },
        ("on", "steps"),
    )
    return {
        "$schema": DIALECT,
        "$id": "urn:mfo:config:providers",
        "title": "mfo providers.yaml",
        **_closed(
            {
                "providers": {
                    "type": "object",
                    "propertyNames": {"pattern": _NAME_PATTERN},
                    "additionalProperties": provider,
                },
                "pipelines": {
                    "type": "object",
                    "propertyNames": {"pattern": _NAME_PATTERN},
                    "additionalProperties": pipeline,
                },
                "settings": _closed({"max_body_size": _SIZE}),
            }
        ),
    }


def subscriptions_schema() -> dict[str, Any]:
    """Return the JSON Schema of subscriptions.yaml."""
    override = _closed(
        {
            "schedule": {"type": "array", "items": _DURATION},
            "jitter": {"type": "number", "minimum": 0, "maximum": 1},
        }
    )
    retry = _closed(
        {
            **override["properties"],
            "by_event_type": {
                "description": "Retry schedules for event types or patterns.",
                "type": "object",
                "additionalProperties": override,
            },
        }
    )
    settings: dict[str, Any] = {
        "timeout": _DURATION,
        "connect_timeout": _DURATION,
        "retry": retry,
        "max_in_flight": {"type": "integer", "minimum": 1},
        "rate_limit": {
            "description": "Deliveries per second, or a count per s, m or h: 10/s.",
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string"},
                {"type": "null"},
            ],
        },
        "disable_after": {
            "description": "Disable after failing this long without a success, or never.",
            "anyOf": [_DURATION, {"const": "never"}, {"type": "null"}],
        },
    }
    subscription = _closed(
        {
            "url": {"type": "string", "pattern": "^https?://"},
            "events": _PATTERNS,
            "secret": {"type": "string", "pattern": "^whsec_"},
            "filter": {"type": "string"},
            "template": _TEMPLATE_TREE,
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "description": {"type": "string"},
            **settings,
        },
        ("url", "events"),
    )
    return {
        "$schema": DIALECT,
        "$id": "urn:mfo:config:subscriptions",
        "title": "mfo subscriptions.yaml",
        **_closed(
            {
                "defaults": _closed(settings),
                "subscriptions": {
                    "type": ["object", "null"],
                    "propertyNames": {"pattern": _NAME_PATTERN},
                    "additionalProperties": subscription,
                },
            }
        ),
    }


SCHEMAS = {"providers": providers_schema, "subscriptions": subscriptions_schema}
