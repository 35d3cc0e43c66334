"""Twilio's request signature: an HMAC over the public URL and the form fields.

Twilio's "Webhooks security" page describes it. Start from the full URL
Twilio requested, query string included. For a form body, append each
parameter name followed by its value, sorted by name. Sign that text with
HMAC-SHA1 keyed with the account's auth token, and send it base64-encoded
in `X-Twilio-Signature`. A JSON body is covered instead by a `bodySHA256`
query parameter containing its SHA-256 in hex, and is rejected without one.
Twilio may or may not include the port in the URL it signs, so both forms
are accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from gateway.exceptions import SigningUnavailable, Unauthorized
from gateway.ingress.request import MAX_QUERY_FIELDS, WebhookRequest
from gateway.ingress.schemes.base import Scheme, matches_any, required_header

_HEADER = "x-twilio-signature"
_DEFAULT_PORTS = {"https": 443, "http": 80}
_FORM = "application/x-www-form-urlencoded"
_BODY_HASH = "bodySHA256"


class TwilioSignature(Scheme):
    """Check `X-Twilio-Signature` against the URL the provider called.

    `public_url` is the scheme, host and any path prefix the provider sees
    when the gateway sits behind a proxy; the request's path and query are
    appended to it. Without it, the URL is rebuilt from the request.
    """

    def __init__(
        self,
        secrets: tuple[str, ...],
        public_url: str | None = None,
        algorithm: str = "sha1",
    ) -> None:
        self.secrets = tuple(secret.encode() for secret in secrets)
        self.public_url = public_url.rstrip("/") if public_url else None
        self.digest = hashlib.sha256 if algorithm == "sha256" else hashlib.sha1

    def signed_url(self, request: WebhookRequest) -> str:
        """Return the URL the provider signed, as far as this gateway can tell."""
        if self.public_url is None:
            return request.url
        parts = urlsplit(request.url)
        path = f"{parts.path}?{parts.query}" if parts.query else parts.path
        return self.public_url + path

    def _content(self, url: str, request: WebhookRequest) -> bytes:
        if not _is_form(request):
            return url.encode("utf-8", "surrogateescape")
        try:
            pairs = parse_qsl(
                request.body.decode("utf-8", "surrogateescape"),
                keep_blank_values=True,
                errors="surrogateescape",
                max_num_fields=MAX_QUERY_FIELDS,
            )
        except ValueError:
            raise Unauthorized("form body has too many fields to check") from None
        fields: dict[str, set[str]] = {}
        for name, value in pairs:
            fields.setdefault(name, set()).add(value)
        # Twilio's own validator sorts names, then each name's distinct values.
        text = url + "".join(
            name + value for name in sorted(fields) for value in sorted(fields[name])
        )
        return text.encode("utf-8", "surrogateescape")

    def _check_body_hash(self, request: WebhookRequest) -> None:
        """Check `bodySHA256`, which is all that covers a body that is not a form."""
        try:
            hashes = request.query_lists.get(_BODY_HASH, [])
        except ValueError:
            raise Unauthorized("query string has too many parameters") from None
        if not hashes:
            if request.body and not _is_form(request):
                raise Unauthorized(
                    f"a body that is not a form needs {_BODY_HASH} in the URL,"
                    " because the signature covers only the URL"
                )
            return
        actual = hashlib.sha256(request.body).hexdigest().encode()
        given = [value.lower().encode("utf-8", "surrogateescape") for value in hashes]
        if len(given) != 1 or not matches_any([actual], given):
            raise Unauthorized(f"{_BODY_HASH} in the URL does not match the body")

    def _digests(self, url: str, request: WebhookRequest) -> list[bytes]:
        content = self._content(url, request)
        return [hmac.new(key, content, self.digest).digest() for key in self.secrets]

    def verify_request(self, request: WebhookRequest) -> None:
        try:
            given = base64.b64decode(required_header(request, _HEADER), validate=True)
        except (binascii.Error, ValueError):
            raise Unauthorized(f"header {_HEADER!r} is not base64") from None
        self._check_body_hash(request)
        expected = []
        for url in _port_variants(self.signed_url(request)):
            expected.extend(self._digests(url, request))
        if not matches_any(expected, [given]):
            raise Unauthorized(
                f"signature in {_HEADER!r} does not match the URL and form; if a"
                " proxy changes the URL, set public_url"
            )

    def sign_request(self, request: WebhookRequest) -> WebhookRequest:
        if not request.url:
            raise SigningUnavailable(
                "Twilio signs the full URL, so signing needs the request URL"
            )
        if request.body and not _is_form(request):
            parts = urlsplit(request.url)
            digest = hashlib.sha256(request.body).hexdigest()
            query = urlencode({_BODY_HASH: digest})
            query = f"{parts.query}&{query}" if parts.query else query
            request = request.with_url(urlunsplit(parts._replace(query=query)))
        signature = self._digests(self.signed_url(request), request)[0]
        return request.with_headers({_HEADER: base64.b64encode(signature).decode()})


def _is_form(request: WebhookRequest) -> bool:
    media_type = (request.header("content-type") or "").split(";")[0]
    return media_type.strip().lower() == _FORM


def _port_variants(url: str) -> list[str]:
    """Return the URL as given and with its port removed, or the default one added.

    Twilio's own validator accepts both forms, so this does too.
    """
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme)
    if default is None or not parts.netloc or "@" in parts.netloc:
        return [url]
    host, colon, port = parts.netloc.rpartition(":")
    has_port = (
        bool(colon) and port.isdigit() and ("[" not in host or host.endswith("]"))
    )
    if has_port:
        netloc = host
    else:
        netloc = f"{parts.netloc}:{default}"
    return [url, urlunsplit(parts._replace(netloc=netloc))]
