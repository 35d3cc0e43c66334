"""Body limits, decompression and strict parsing."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator

import pytest

from gateway.exceptions import InvalidPayload, PayloadTooLarge, UnsupportedMediaType
from gateway.ingress.decode import decompress, parse_body, read_body


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def test_read_body_limit_without_content_length() -> None:
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_body(_chunks(b"x" * 60, b"x" * 60), None, 100))


def test_read_body_limit_from_content_length() -> None:
    with pytest.raises(PayloadTooLarge):
        asyncio.run(read_body(_chunks(b"x"), "101", 100))


def test_read_body_bad_content_length() -> None:
    with pytest.raises(InvalidPayload):
        asyncio.run(read_body(_chunks(b"x"), "ten", 100))


def test_gzip_and_deflate_decoded() -> None:
    assert decompress(gzip.compress(b'{"a":1}'), "gzip", 100) == b'{"a":1}'
    assert decompress(zlib.compress(b'{"a":1}'), "deflate", 100) == b'{"a":1}'


def test_gzip_bomb_rejected() -> None:
    bomb = gzip.compress(b"0" * 1_000_000)
    with pytest.raises(PayloadTooLarge):
        decompress(bomb, "gzip", 10_000)


def test_unknown_encoding_rejected() -> None:
    with pytest.raises(UnsupportedMediaType):
        decompress(b"x", "br", 100)


def test_corrupt_gzip_rejected() -> None:
    with pytest.raises(InvalidPayload):
        decompress(b"not gzip", "gzip", 100)


@pytest.mark.parametrize(
    "body",
    [
        b"NaN",
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b"\xff\xfe",
        b"",
        b"{",
        b"[" * 5000,
    ],
)
def test_invalid_json_rejected(body: bytes) -> None:
    with pytest.raises(InvalidPayload):
        parse_body(body, "application/json")


def test_deep_nesting_rejected() -> None:
    with pytest.raises(InvalidPayload, match="nesting"):
        parse_body(b"[" * 200 + b"]" * 200, "application/json")


@pytest.mark.parametrize(
    "body, value", [(b"[1, 2]", [1, 2]), (b"3", 3), (b"null", None)]
)
def test_top_level_values_parse(body: bytes, value: object) -> None:
    assert parse_body(body, "application/json") == value


def test_charset_parameter_honoured() -> None:
    body = '{"name": "Jos\u00e9"}'.encode("latin-1")
    assert parse_body(body, "application/json; charset=ISO-8859-1") == {
        "name": "Jos\u00e9"
    }


def test_form_body_parsed() -> None:
    parsed = parse_body(
        b"a=1&b=2&b=3&payload=%7B%22x%22%3A1%7D", "application/x-www-form-urlencoded"
    )
    assert parsed == {"a": "1", "b": ["2", "3"], "payload": '{"x":1}'}


def test_unsupported_media_type() -> None:
    with pytest.raises(UnsupportedMediaType):
        parse_body(b"x", "image/png")
