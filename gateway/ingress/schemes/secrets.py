"""Schemes where the provider sends a shared secret itself: headers, keys, passwords."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlencode, urlsplit, urlunsplit

from gateway.exceptions import CredentialsRequired, SigningUnavailable, Unauthorized
from gateway.ingress.request import WebhookRequest
from gateway.ingress.schemes.base import (
    Scheme,
    header_bytes,
    matches_any,
    required_header,
)


def _encode_all(secrets: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(secret.encode() for secret in secrets)


class HeaderSecret(Scheme):
    """Compare a header with a shared secret, as providers with custom headers do."""

    def __init__(self, header: str, secrets: tuple[str, ...]) -> None:
        self.header = header.lower()
        self.secrets = _encode_all(secrets)

    def verify_request(self, request: WebhookRequest) -> None:
        given = required_header(request, self.header)
        if not matches_any(self.secrets, [header_bytes(given)]):
            raise Unauthorized(f"header {self.header!r} does not match the secret")

    def sign_request(self, request: WebhookRequest) -> WebhookRequest:
        return request.with_headers({self.header: self.secrets[0].decode()})


class BearerToken(Scheme):
    """Accept `Authorization: Bearer <token>` (RFC 6750) for any configured token."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self.secrets = _encode_all(secrets)

    def verify_request(self, request: WebhookRequest) -> None:
        given = required_header(request, "authorization")
        scheme, _, token = given.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("header 'authorization' contains no Bearer token")
        if not matches_any(self.secrets, [header_bytes(token.strip())]):
            raise Unauthorized("Bearer token does not match")

    def sign_request(self, request: WebhookRequest) -> WebhookRequest:
        token = self.secrets[0].decode()
        return request.with_headers({"authorization": f"Bearer {token}"})


class ApiKey(Scheme):
    """Accept a key sent in a header or in one query parameter."""

    def __init__(
        self, secrets: tuple[str, ...], header: str | None, query: str | None
    ) -> None:
        self.secrets = _encode_all(secrets)
        self.header = header.lower() if header else None
        self.query = query

    def verify_request(self, request: WebhookRequest) -> None:
        if self.header is not None:
            given = [header_bytes(required_header(request, self.header))]
            where = f"header {self.header!r}"
        else:
            assert self.query is not None
            try:
                values = request.query_lists.get(self.query, [])
            except ValueError:
                raise Unauthorized("query string has too many parameters") from None
            if not values:
                raise Unauthorized(f"missing query parameter {self.query!r}")
            given = [value.encode("utf-8", "surrogateescape") for value in values]
            where = f"query parameter {self.query!r}"
        if len(given) != 1 or not matches_any(self.secrets, given):
            raise Unauthorized(f"{where} does not match the API key")

    def sign_request(self, request: WebhookRequest) -> WebhookRequest:
        key = self.secrets[0].decode()
        if self.header is not None:
            return request.with_headers({self.header: key})
        if not request.url:
            raise SigningUnavailable(
                f"the API key goes in the query parameter {self.query!r}, so signing"
                " needs the request URL"
            )
        assert self.query is not None
        parts = urlsplit(request.url)
        query = urlencode({self.query: key})
        query = f"{parts.query}&{query}" if parts.query else query
        return request.with_url(urlunsplit(parts._replace(query=query)))


class BasicAuth(Scheme):
    """Accept HTTP Basic credentials (RFC 7617), configured as `user:password`."""

    def __init__(self, secrets: tuple[str, ...], realm: str) -> None:
        self.secrets = _encode_all(secrets)
        self.realm = realm

    def verify_request(self, request: WebhookRequest) -> None:
        given = request.header("authorization")
        if given is None:
            raise CredentialsRequired("missing Basic credentials", self.realm)
        scheme, _, encoded = given.strip().partition(" ")
        if scheme.lower() != "basic":
            raise CredentialsRequired(
                "header 'authorization' contains no Basic credentials", self.realm
            )
        try:
            credentials = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise CredentialsRequired(
                "Basic credentials are not valid base64", self.realm
            ) from None
        if not matches_any(self.secrets, [credentials]):
            raise CredentialsRequired("Basic credentials do not match", self.realm)

    def sign_request(self, request: WebhookRequest) -> WebhookRequest:
        encoded = base64.b64encode(self.secrets[0]).decode()
        return request.with_headers({"authorization": f"Basic {encoded}"})
