"""Read a request body within a size limit and parse it by its media type."""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

from gateway.exceptions import InvalidPayload, PayloadTooLarge, UnsupportedMediaType

MAX_JSON_DEPTH = 128


async def read_body(
    chunks: AsyncIterator[bytes], content_length: str | None, limit: int
) -> bytes:
    """Collect the body, answering 413 as soon as it passes `limit` bytes."""
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
    """Undo gzip or deflate, refusing output larger than `limit` bytes."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported; send identity, gzip or deflate"
        )
    wbits = 16 + zlib.MAX_WBITS if "gzip" in encoding else zlib.MAX_WBITS
    decompressor = zlib.decompressobj(wbits)
    try:
        output = decompressor.decompress(body, limit + 1)
        if not decompressor.eof and encoding == "deflate" and not output:
            decompressor = zlib.decompressobj(-zlib.MAX_WBITS)
            output = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidPayload(f"body is not valid {encoding} data: {exc}") from None
    if len(output) > limit or decompressor.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body exceeds the limit of {limit} bytes")
    return output


def _reject_constant(name: str) -> Any:
    raise InvalidPayload(f"JSON value {name} is not allowed")


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        following: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                following.extend(item.values())
            elif isinstance(item, list):
                following.extend(item)
        level = following
    return depth - 1


def parse_json(body: bytes, charset: str = "utf-8") -> Any:
    """Parse strict JSON: valid text in its charset, no NaN or Infinity, bounded depth."""
    try:
        text = body.decode(charset)
    except (UnicodeDecodeError, LookupError) as exc:
        raise InvalidPayload(f"body is not valid {charset} text: {exc}") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InvalidPayload(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidPayload(f"JSON nesting exceeds {MAX_JSON_DEPTH} levels") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise InvalidPayload(f"JSON nesting exceeds {MAX_JSON_DEPTH} levels")
    return value


def parse_form(body: bytes, charset: str = "utf-8") -> dict[str, Any]:
    """Parse a form; a field sent once is a string, a field sent again a list."""
    try:
        text = body.decode(charset)
    except (UnicodeDecodeError, LookupError) as exc:
        raise InvalidPayload(f"body is not valid {charset} text: {exc}") from None
    try:
        fields = parse_qs(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=10_000
        )
    except ValueError as exc:
        raise InvalidPayload(f"invalid form body: {exc}") from None
    return {
        key: values[0] if len(values) == 1 else values for key, values in fields.items()
    }


def parse_body(body: bytes, content_type: str | None) -> Any:
    """Parse a body by its Content-Type; JSON is assumed when none is given."""
    media_type, _, parameters = (content_type or "application/json").partition(";")
    media_type = media_type.strip().lower()
    charset = "utf-8"
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"').lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        return parse_json(body, charset)
    if media_type == "application/x-www-form-urlencoded":
        return parse_form(body, charset)
    if media_type.startswith("text/"):
        try:
            return body.decode(charset)
        except (UnicodeDecodeError, LookupError) as exc:
            raise InvalidPayload(f"body is not valid {charset} text: {exc}") from None
    raise UnsupportedMediaType(
        f"Content-Type {media_type!r} is not supported; send application/json,"
        " application/x-www-form-urlencoded or text/plain"
    )
