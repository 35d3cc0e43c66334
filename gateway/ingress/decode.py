"""Read a request body within a size limit and parse it by its media type.

Parsing is strict, so that every later reader of a stored payload reads
the same values:

- JSON must be valid text in its charset (UTF-8, or UTF-16/32 detected
  from the first bytes as RFC 8259 allows, or the `charset` parameter).
  `NaN`, `Infinity`, numbers too large for a double and integers of more
  than 4300 digits are rejected, and so is nesting deeper than the route's
  `max_json_depth`.
- Duplicate keys in one JSON object are rejected. Parsers disagree on which
  value wins (Python keeps the last, some keep the first), so a body with
  duplicates could mean one thing to a signature checker or a filter and
  another to a subscriber.
- Strings holding U+0000 or unpaired surrogates (`"\\ud800"`) are rejected,
  because PostgreSQL cannot store them in `jsonb` or `text`.
- Form bodies become a mapping; a field sent once is a string, a field
  sent again a list. Fields named in `form_json_fields` hold JSON (as
  Slack's interactive payloads do) and are parsed with the JSON rules.
- Any top-level JSON value is accepted here; the route's schema judges it.
"""

from __future__ import annotations

import codecs
import json
import math
import zlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

from gateway.config.model import DEFAULT_MAX_JSON_DEPTH, DecodeConfig
from gateway.exceptions import InvalidPayload, PayloadTooLarge, UnsupportedMediaType

MAX_FORM_FIELDS = 10_000
# Codecs Python calls text encodings that turn escape sequences into other
# characters, so the decoded text would differ from what the sender meant.
_ESCAPE_CODECS = frozenset(
    {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "utf-7"}
)
_FORM = "application/x-www-form-urlencoded"
_PLAIN = DecodeConfig()


async def read_body(
    chunks: AsyncIterator[bytes], content_length: str | None, limit: int
) -> bytes:
    """Collect the body; raise PayloadTooLarge (413) once it passes `limit` bytes."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise InvalidPayload(f"invalid Content-Length {content_length!r}") from None
        if declared > limit:
            raise PayloadTooLarge(
                f"body of {declared} bytes exceeds the limit of {limit}"
            )
    received = bytearray()
    async for chunk in chunks:
        received += chunk
        if len(received) > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
    return bytes(received)


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo gzip or deflate codings, in the reverse of the order they are listed.

    Raise PayloadTooLarge as soon as any stage would produce more than
    `limit` bytes, so a small compressed bomb never expands in memory.
    """
    codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
    for coding in reversed([c for c in codings if c not in ("", "identity")]):
        body = _decompress_one(body, coding, limit)
    return body


def _decompress_one(body: bytes, coding: str, limit: int) -> bytes:
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedMediaType(
            f"Content-Encoding {coding!r} is not supported; send identity, gzip"
            " or deflate"
        )
    if "gzip" in coding:
        wbits = 16 + zlib.MAX_WBITS
    elif _has_zlib_header(body):
        wbits = zlib.MAX_WBITS
    else:
        # Some senders omit the zlib header that RFC 9110 deflate requires.
        wbits = -zlib.MAX_WBITS
    decompressor = zlib.decompressobj(wbits)
    try:
        output = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidPayload(f"body is not valid {coding} data: {exc}") from None
    if len(output) > limit or decompressor.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body exceeds the limit of {limit} bytes")
    if not decompressor.eof:
        raise InvalidPayload(f"body is truncated {coding} data")
    if decompressor.unused_data:
        raise InvalidPayload(f"body has bytes after the end of its {coding} data")
    return output


def _has_zlib_header(body: bytes) -> bool:
    """Tell whether a body starts with an RFC 1950 (zlib) header."""
    return len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] << 8 | body[1]) % 31 == 0


def _text_codec(charset: str) -> str:
    """Return the codec for a charset parameter, or raise 415 for an unusable one."""
    try:
        info = codecs.lookup(charset)
    except LookupError:
        raise UnsupportedMediaType(f"charset {charset!r} is not known") from None
    if not getattr(info, "_is_text_encoding", True) or info.name in _ESCAPE_CODECS:
        raise UnsupportedMediaType(f"charset {charset!r} is not a text encoding")
    return info.name


def _decode_text(body: bytes, charset: str) -> str:
    try:
        text = body.decode(_text_codec(charset))
    except UnicodeDecodeError as exc:
        raise InvalidPayload(
            f"body is not valid {charset} text: {exc.reason}"
        ) from None
    return text[1:] if text.startswith("\ufeff") else text


def _reject_constant(name: str) -> Any:
    raise InvalidPayload(f"JSON value {name} is not allowed")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidPayload(f"JSON number {text[:40]} is too large for a double")
    return value


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidPayload(
                f"JSON object has the key {key[:60]!r} twice; duplicate keys are"
                " rejected because parsers disagree on which value wins"
            )
        result[key] = value
    return result


def loads_strict(text: str, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Any:
    """Parse JSON text with the rules in this module's docstring."""
    try:
        value = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_parse_float,
            object_pairs_hook=_reject_duplicate_keys,
        )
    except json.JSONDecodeError as exc:
        raise InvalidPayload(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidPayload(f"JSON nesting exceeds {max_depth} levels") from None
    except ValueError as exc:
        # int() refuses more than sys.get_int_max_str_digits() digits.
        raise InvalidPayload(f"JSON number is invalid: {exc}") from None
    check_tree(value, max_depth)
    return value


def parse_json(
    body: bytes, charset: str | None = None, max_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> Any:
    """Parse a JSON body; without a charset, detect UTF-8, UTF-16 or UTF-32."""
    return loads_strict(
        _decode_text(body, charset or json.detect_encoding(body)), max_depth
    )


def parse_form(
    body: bytes, charset: str = "utf-8", decode: DecodeConfig = _PLAIN
) -> dict[str, Any]:
    """Parse a form; a field sent once is a string, a field sent again a list."""
    text = _decode_text(body, charset)
    try:
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            encoding=_text_codec(charset),
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError as exc:
        raise InvalidPayload(f"invalid form body: {exc}") from None
    fields: dict[str, Any] = {}
    for name, value in pairs:
        previous = fields.get(name)
        if previous is None:
            fields[name] = value
        elif isinstance(previous, list):
            previous.append(value)
        else:
            fields[name] = [previous, value]
    for name in decode.form_json_fields:
        if name in fields:
            fields[name] = _parse_form_json(name, fields[name], decode.max_json_depth)
    check_tree(fields, decode.max_json_depth)
    return fields


def _parse_form_json(name: str, value: Any, max_depth: int) -> Any:
    if not isinstance(value, str):
        raise InvalidPayload(
            f"form field {name!r} contains JSON and must appear only once"
        )
    try:
        # The caller checks the depth again, counting the form as one level.
        return loads_strict(value, max_depth)
    except InvalidPayload as exc:
        raise InvalidPayload(f"form field {name!r}: {exc.message}") from None


def parse_body(
    body: bytes, content_type: str | None, decode: DecodeConfig = _PLAIN
) -> Any:
    """Parse a body by its Content-Type; JSON is assumed when none is given."""
    media_type, _, parameters = (content_type or "application/json").partition(";")
    media_type = media_type.strip().lower()
    charset = None
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"').lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return parse_json(body, charset, decode.max_json_depth)
    if media_type == _FORM:
        return parse_form(body, charset or "utf-8", decode)
    if media_type.startswith("text/"):
        text = _decode_text(body, charset or "utf-8")
        check_tree(text, decode.max_json_depth)
        return text
    shown = repr(media_type) if media_type else f"{content_type!r} (no media type)"
    raise UnsupportedMediaType(
        f"Content-Type {shown} is not supported; send application/json,"
        f" {_FORM} or text/plain"
    )


def unstorable_value(value: Any) -> str | None:
    """Describe the first string or number in a value that PostgreSQL cannot store.

    Parsed payloads never hold NaN or infinities, but event data rendered by
    a template (such as `payload.x | float`) can.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, pointer = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return f"the number {item} at {pointer or '/'}"
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return f"{problem} in the string at {pointer or '/'}"
        elif isinstance(item, dict):
            for key, child in item.items():
                problem = _text_problem(key)
                if problem:
                    return f"{problem} in a key at {pointer or '/'}"
                stack.append((child, f"{pointer}/{_escape_pointer(key)}"))
        elif isinstance(item, list):
            stack.extend((child, f"{pointer}/{i}") for i, child in enumerate(item))
    return None


def check_tree(value: Any, max_depth: int) -> None:
    """Reject nesting deeper than `max_depth` and strings PostgreSQL cannot store."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth >= max_depth:
                raise InvalidPayload(f"JSON nesting exceeds {max_depth} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    problem = unstorable_value(value)
    if problem:
        raise InvalidPayload(f"payload has {problem}, which PostgreSQL cannot store")


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "U+0000"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "an unpaired surrogate"
    return None


def _escape_pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")
