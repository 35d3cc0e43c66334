"""Check the shape of loaded YAML and collect every problem with its location."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from gateway.config.source import Location, YList, YMap
from gateway.config.templates import (
    Expression,
    TemplateCompileError,
    TextTemplate,
    TreeTemplate,
    compile_expression,
    compile_text,
    compile_tree,
)
from gateway.exceptions import ConfigProblem

_DURATION = re.compile(r"^\s*(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(
    r"^\s*(?P<number>\d+)\s*(?P<unit>b|kb|kib|mb|mib)?\s*$", re.IGNORECASE
)
_UNIT_BYTES = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, None: 1}


def parse_duration(value: Any) -> float:
    """Parse `500ms`, `5s`, `5m`, `2h`, `1d` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"invalid duration {value!r}: must not be negative")
        return float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(
            f"invalid duration {value!r}: write a number with a unit, such as 5s, 5m or 2h"
        )
    return float(match.group("number")) * _UNIT_SECONDS[match.group("unit")]


def parse_size(value: Any) -> int:
    """Parse `512kb`, `1mib` or a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _SIZE.match(str(value))
    if not match or int(match.group("number")) <= 0:
        raise ValueError(f"invalid size {value!r}: write bytes or a unit, such as 1mib")
    unit = match.group("unit")
    return int(match.group("number")) * _UNIT_BYTES[unit.lower() if unit else None]


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers the gateway sets itself on every delivery; a subscription may not
# replace them, because that would break the request or its signature.
RESERVED_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "content-type",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
)


MAX_URL_LENGTH = 2048


def url_problem(value: str) -> str | None:
    """Say what makes a subscriber URL unusable, or return None when it is fine."""
    if len(value) > MAX_URL_LENGTH:
        return f"is longer than {MAX_URL_LENGTH} characters"
    if any(ord(char) < 0x21 or ord(char) == 0x7F for char in value):
        return "contains spaces or control characters"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "is not an http:// or https:// URL with a host"
    if port == 0:
        return "has port 0"
    return None


def header_problem(name: str, value: str) -> str | None:
    """Say why an extra delivery header cannot be sent, or return None."""
    if not _HEADER_NAME.match(name):
        return f"header name {name!r} is not a valid HTTP header name"
    if name.lower() in RESERVED_HEADERS:
        return f"header {name!r} is set by the gateway and cannot be replaced"
    if any(char in value for char in "\r\n\0"):
        return f"header {name!r} has a line break or NUL in its value"
    return None


def _type_name(value: Any) -> str:
    if value == "":
        return "an empty string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "empty"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string"


class Checker:
    """Collect problems while reading values out of YAML mappings."""

    def __init__(self) -> None:
        self.problems: list[ConfigProblem] = []

    def error(self, location: Location, message: str) -> None:
        self.problems.append(location.problem(message))

    def warn(self, location: Location, message: str) -> None:
        self.problems.append(location.problem(message, severity="warning"))

    def mapping(self, value: Any, location: Location, what: str) -> YMap | None:
        if isinstance(value, YMap):
            return value
        self.error(location, f"{what} must be a mapping, not {_type_name(value)}")
        return None

    def keys(
        self,
        node: YMap,
        what: str,
        allowed: Iterable[str],
        required: Iterable[str] = (),
    ) -> None:
        allowed = list(allowed)
        for key in node:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                known = ", ".join(sorted(allowed))
                self.error(
                    node.key_at(key),
                    f"unknown key {key!r} in {what}{hint} (allowed: {known})",
                )
        for key in required:
            if key not in node:
                self.error(node.location, f"{what} is missing the required key {key!r}")

    def string(
        self, node: YMap, key: str, what: str, default: str | None = None
    ) -> str | None:
        if key not in node:
            return default
        value = node[key]
        if isinstance(value, str) and value != "":
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        self.error(
            node.value_at(key),
            f"{what}.{key} must be a non-empty string, not {_type_name(value)}",
        )
        return default

    def choice(
        self, node: YMap, key: str, what: str, choices: tuple[str, ...], default: str
    ) -> str:
        value = self.string(node, key, what, default)
        if value is None:
            return default
        if value.lower() not in choices:
            self.error(
                node.value_at(key),
                f"{what}.{key} is {value!r}; expected one of {', '.join(choices)}",
            )
            return default
        return value.lower()

    def string_list(self, node: YMap, key: str, what: str) -> tuple[str, ...]:
        if key not in node:
            return ()
        value = node[key]
        if isinstance(value, str) and value:
            return (value,)
        if not isinstance(value, YList) or not value:
            self.error(
                node.value_at(key),
                f"{what}.{key} must be a string or a non-empty list of strings",
            )
            return ()
        result = []
        for index, item in enumerate(value):
            if isinstance(item, str) and item:
                result.append(item)
            else:
                self.error(
                    value.item_at(index), f"{what}.{key}[{index}] must be a string"
                )
        return tuple(result)

    def number(
        self, node: YMap, key: str, what: str, default: float, low: float, high: float
    ) -> float:
        if key not in node:
            return default
        value = node[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(node.value_at(key), f"{what}.{key} must be a number")
            return default
        if not low <= value <= high:
            self.error(
                node.value_at(key), f"{what}.{key} is {value}; expected {low} to {high}"
            )
            return default
        return float(value)

    def parsed(
        self, node: YMap, key: str, what: str, parse: Callable[[Any], Any], default: Any
    ) -> Any:
        if key not in node:
            return default
        try:
            return parse(node[key])
        except ValueError as exc:
            self.error(node.value_at(key), f"{what}.{key}: {exc}")
            return default

    def url(self, node: YMap, key: str, what: str) -> str | None:
        value = self.string(node, key, what)
        if value is None:
            return None
        problem = url_problem(value)
        if problem is not None:
            self.error(
                node.value_at(key),
                f"{what}.{key} is {value!r}; expected an http:// or https:// URL"
                f" with a host (it {problem})",
            )
            return None
        return value

    def template_error(
        self, location: Location, what: str, kind: str, exc: TemplateCompileError
    ) -> None:
        """Report a template error on the YAML line where the template broke."""
        if exc.template_line:
            location = location.text_line(exc.template_line)
        syntax = (
            "{{ expression }} for values and {% if %}...{% endif %} for statements"
            if kind == "template"
            else "a Jinja expression such as payload.type == 'push'"
        )
        self.error(
            location,
            f"{what}: invalid {kind}: {exc}; the text is {exc.source!r}."
            f" Write {syntax}.",
        )

    def expression(self, node: YMap, key: str, what: str) -> Expression | None:
        value = node.get(key)
        if key not in node:
            return None
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, str) or not value.strip():
            self.error(node.value_at(key), f"{what}.{key} must be an expression string")
            return None
        try:
            return compile_expression(value)
        except TemplateCompileError as exc:
            self.template_error(node.value_at(key), f"{what}.{key}", "expression", exc)
            return None

    def text_template(self, node: YMap, key: str, what: str) -> TextTemplate | None:
        value = self.string(node, key, what)
        if value is None:
            return None
        try:
            return compile_text(value)
        except TemplateCompileError as exc:
            self.template_error(node.value_at(key), f"{what}.{key}", "template", exc)
            return None

    def tree(self, node: YMap, key: str, what: str) -> TreeTemplate | None:
        if key not in node:
            return None
        try:
            return compile_tree(node[key])
        except TemplateCompileError:
            pass
        for path, location, leaf in _leaves(
            node[key], node.value_at(key), f"{what}.{key}"
        ):
            try:
                compile_tree(leaf)
            except TemplateCompileError as exc:
                self.template_error(location, path, "template", exc)
        return None


def _leaves(
    value: Any, location: Location, path: str
) -> Iterator[tuple[str, Location, str]]:
    """Yield every string leaf of a YAML tree with its path and location."""
    if isinstance(value, str):
        yield path, location, value
    elif isinstance(value, YMap):
        for key, item in value.items():
            yield from _leaves(item, value.value_at(key), f"{path}.{key}")
    elif isinstance(value, YList):
        for index, item in enumerate(value):
            yield from _leaves(item, value.item_at(index), f"{path}[{index}]")
