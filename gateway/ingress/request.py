"""The view of one provider request that schemes, handshakes and templates read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from litestar import Request

# More query parameters than any provider sends; past this the request is rejected.
MAX_QUERY_FIELDS = 1000


@dataclass(frozen=True)
class WebhookRequest:
    """A request as received, or as `mfo send` is about to send it.

    `headers` has lower-case names; a header sent several times has its
    values joined with ", ", as RFC 9110 allows for list fields. `url` is
    absolute and keeps the path and query exactly as sent.
    """

    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    method: str = "POST"
    url: str = ""
    client_host: str | None = None

    @classmethod
    def from_litestar(cls, request: Request[Any, Any, Any], body: bytes) -> Self:
        scope = request.scope
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        raw_path = scope.get("raw_path") or scope["path"].encode()
        url = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
        url += raw_path.decode("latin-1")
        query_string = scope.get("query_string", b"").decode("latin-1")
        if query_string:
            url += f"?{query_string}"
        client = request.client.host if request.client else None
        return cls(body, headers, request.method, url, client)

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query_string(self) -> str:
        return urlsplit(self.url).query

    @cached_property
    def query_lists(self) -> dict[str, list[str]]:
        """Return every query parameter with all its values, for schemes to compare.

        Percent-escapes that are not UTF-8 decode to surrogates, so
        `value.encode("utf-8", "surrogateescape")` gives back the bytes sent.
        Raise ValueError when the query has more than `MAX_QUERY_FIELDS` fields.
        """
        return self._parse_query("surrogateescape")

    @cached_property
    def query(self) -> dict[str, str]:
        """Return each query parameter's first value, as templates see it.

        Raise ValueError when the query has more than `MAX_QUERY_FIELDS` fields.
        """
        parsed = self._parse_query("replace")
        return {name: values[0] for name, values in parsed.items()}

    def _parse_query(self, errors: str) -> dict[str, list[str]]:
        values: dict[str, list[str]] = {}
        pairs = parse_qsl(
            self.query_string,
            keep_blank_values=True,
            errors=errors,
            max_num_fields=MAX_QUERY_FIELDS,
        )
        for name, value in pairs:
            values.setdefault(name, []).append(value)
        return values

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def with_headers(self, extra: Mapping[str, str]) -> WebhookRequest:
        merged = {**self.headers, **{name.lower(): v for name, v in extra.items()}}
        return replace(self, headers=merged)

    def with_url(self, url: str) -> WebhookRequest:
        return replace(self, url=url)
