"""Body limits, decompression and strict parsing."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator

import pytest

from gateway.config.model import DecodeConfig
from gateway.exceptions import InvalidPayload, PayloadTooLarge, UnsupportedMediaType
from gateway.ingress.decode import (
    decompress,
    parse_body,
    read_body,
    unstorable_value,
)


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


@pytest.mark.parametrize(
    "body, reason",
    [
        (b'{"a": 1, "a": 2}', "twice"),
        (b'{"a": {"b": 1, "b": 1}}', "twice"),
        (b'{"a": 1e400}', "too large"),
        (b'{"a": -1e400}', "too large"),
        (b'{"a": ' + b"9" * 5000 + b"}", "number"),
        (b'{"a": "\\ud800"}', "surrogate"),
        (b'{"\\udfff": 1}', "surrogate"),
        (b'{"a": "x\\u0000y"}', "U\\+0000"),
        (b'["\\u0000"]', "U\\+0000"),
    ],
)
def test_strict_json_rejects(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidPayload, match=reason):
        parse_body(body, "application/json")


def test_surrogate_pair_escape_accepted() -> None:
    assert parse_body(b'"\\ud83d\\ude00"', "application/json") == "\U0001f600"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32-be", "utf-8-sig"])
def test_json_encoding_detected_without_charset(encoding: str) -> None:
    body = '{"name": "Jos\u00e9"}'.encode(encoding)
    assert parse_body(body, "application/json") == {"name": "Jos\u00e9"}


def test_invalid_utf8_rejected() -> None:
    with pytest.raises(InvalidPayload, match="utf-8"):
        parse_body(b'{"a": "\xc3\x28"}', "application/json")


@pytest.mark.parametrize(
    "charset", ["no-such-charset", "rot13", "base64", "unicode_escape"]
)
def test_unusable_charset_rejected(charset: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="charset"):
        parse_body(b"{}", f"application/json; charset={charset}")


def test_max_json_depth_configurable() -> None:
    decode = DecodeConfig(max_json_depth=3)
    assert parse_body(b"[[[1]]]", "application/json", decode) == [[[1]]]
    with pytest.raises(InvalidPayload, match="3 levels"):
        parse_body(b"[[[[1]]]]", "application/json", decode)


def test_form_field_holding_json() -> None:
    decode = DecodeConfig(form_json_fields=("payload",))
    body = b"payload=%7B%22type%22%3A+%22block_actions%22%7D&extra=1"
    parsed = parse_body(body, "application/x-www-form-urlencoded", decode)
    assert parsed == {"payload": {"type": "block_actions"}, "extra": "1"}


@pytest.mark.parametrize(
    "body",
    [b"payload=%7Bnot+json", b"payload=1&payload=2", b"payload=%7B%22a%22%3ANaN%7D"],
)
def test_form_json_field_rejects(body: bytes) -> None:
    decode = DecodeConfig(form_json_fields=("payload",))
    with pytest.raises(InvalidPayload, match="payload"):
        parse_body(body, "application/x-www-form-urlencoded", decode)


def test_form_json_field_counts_form_depth() -> None:
    decode = DecodeConfig(form_json_fields=("payload",), max_json_depth=2)
    ok = b"payload=%7B%22a%22%3A1%7D"
    deep = b"payload=%7B%22a%22%3A%7B%22b%22%3A1%7D%7D"
    assert parse_body(ok, "application/x-www-form-urlencoded", decode) == {
        "payload": {"a": 1}
    }
    with pytest.raises(InvalidPayload, match="2 levels"):
        parse_body(deep, "application/x-www-form-urlencoded", decode)


def test_form_charset_honoured() -> None:
    body = b"name=Jos%E9"
    parsed = parse_body(body, "application/x-www-form-urlencoded; charset=iso-8859-1")
    assert parsed == {"name": "Jos\u00e9"}


def test_form_invalid_percent_utf8_rejected() -> None:
    with pytest.raises(InvalidPayload):
        parse_body(b"name=Jos%E9", "application/x-www-form-urlencoded")


def test_form_nul_rejected() -> None:
    with pytest.raises(InvalidPayload, match="U\\+0000"):
        parse_body(b"a=%00", "application/x-www-form-urlencoded")


def test_text_body_with_charset() -> None:
    body = "caf\u00e9".encode("cp1252")
    assert parse_body(body, "text/plain; charset=windows-1252") == "caf\u00e9"


def test_raw_deflate_decoded() -> None:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = compressor.compress(b'{"a":1}') + compressor.flush()
    assert decompress(raw, "deflate", 100) == b'{"a":1}'


def test_stacked_encodings_decoded_in_reverse() -> None:
    body = gzip.compress(zlib.compress(b'{"a":1}'))
    assert decompress(body, "deflate, gzip", 100) == b'{"a":1}'


@pytest.mark.parametrize(
    "body",
    [gzip.compress(b'{"a":1}')[:-6], gzip.compress(b'{"a":1}') + b"junk"],
    ids=["truncated", "trailing"],
)
def test_damaged_gzip_rejected(body: bytes) -> None:
    with pytest.raises(InvalidPayload):
        decompress(body, "gzip", 100)


def test_deflate_bomb_rejected() -> None:
    with pytest.raises(PayloadTooLarge):
        decompress(zlib.compress(b"\0" * 5_000_000), "deflate", 1000)


@pytest.mark.parametrize(
    "value, problem",
    [
        ({"a": [1, "x\x00"]}, "U+0000 in the string at /a/1"),
        ({"a/b": "\ud800"}, "an unpaired surrogate in the string at /a~1b"),
        ({"\x00": 1}, "U+0000 in a key at /"),
        ([float("nan")], "the number nan at /0"),
        ({"a": float("inf")}, "the number inf at /a"),
    ],
)
def test_unstorable_value_located(value: object, problem: str) -> None:
    assert unstorable_value(value) == problem


def test_storable_value_passes() -> None:
    assert unstorable_value({"a": [1.5, "caf\u00e9", None, {"b": True}]}) is None
