"""Signature and secret schemes that prove a request came from its provider.

Every scheme works on the exact bytes received, compares in constant time,
and accepts any of several secrets so that a secret can be rotated without
dropping requests. Each scheme can also sign a body, which `mfo send` uses to
act as the provider.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Protocol

from gateway.config.model import VerifySpec
from gateway.exceptions import Unauthorized

_ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}


class SignatureVerifier(Protocol):
    """Check one request; raise `Unauthorized` when it is not genuine."""

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None: ...

    def sign(self, body: bytes) -> dict[str, str]: ...


class NoVerification:
    """Accept every request; for providers that sign nothing."""

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        return None

    def sign(self, body: bytes) -> dict[str, str]:
        return {}


class HeaderSecret:
    """Compare a header with a shared secret, as providers with custom headers do."""

    def __init__(self, header: str, secrets: tuple[str, ...]) -> None:
        self.header = header.lower()
        self.secrets = tuple(secret.encode() for secret in secrets)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        given = headers.get(self.header)
        if given is None:
            raise Unauthorized(f"missing header {self.header!r}")
        given_bytes = given.encode("utf-8", "surrogateescape")
        # Compare against every secret, so the time taken does not reveal which one matched.
        matches = [hmac.compare_digest(given_bytes, secret) for secret in self.secrets]
        if not any(matches):
            raise Unauthorized(f"header {self.header!r} does not match the secret")

    def sign(self, body: bytes) -> dict[str, str]:
        return {self.header: self.secrets[0].decode()}


class HmacSignature:
    """Check an HMAC of the raw body sent in a header, hex or base64, with a prefix."""

    def __init__(
        self,
        header: str,
        secrets: tuple[str, ...],
        algorithm: str = "sha256",
        encoding: str = "hex",
        prefix: str = "",
    ) -> None:
        self.header = header.lower()
        self.secrets = tuple(secret.encode() for secret in secrets)
        self.digest = _ALGORITHMS[algorithm]
        self.encoding = encoding
        self.prefix = prefix

    def _expected(self, body: bytes) -> list[bytes]:
        return [hmac.new(secret, body, self.digest).digest() for secret in self.secrets]

    def _candidates(self, value: str) -> list[bytes]:
        """Decode every signature in a header that may list several."""
        decoded = []
        for part in value.replace(",", " ").split():
            if self.prefix:
                if not part.lower().startswith(self.prefix.lower()):
                    continue
                part = part[len(self.prefix) :]
            try:
                if self.encoding == "hex":
                    decoded.append(bytes.fromhex(part))
                else:
                    decoded.append(base64.b64decode(part, validate=True))
            except (ValueError, binascii.Error):
                continue
        return decoded

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        given = headers.get(self.header)
        if given is None:
            raise Unauthorized(f"missing signature header {self.header!r}")
        candidates = self._candidates(given)
        if not candidates:
            raise Unauthorized(
                f"header {self.header!r} holds no {self.encoding} signature"
                + (f" with prefix {self.prefix!r}" if self.prefix else "")
            )
        matched = False
        for expected in self._expected(body):
            for candidate in candidates:
                matched |= hmac.compare_digest(expected, candidate)
        if not matched:
            raise Unauthorized(f"signature in {self.header!r} does not match the body")

    def sign(self, body: bytes) -> dict[str, str]:
        digest = self._expected(body)[0]
        text = (
            digest.hex()
            if self.encoding == "hex"
            else base64.b64encode(digest).decode()
        )
        return {self.header: f"{self.prefix}{text}"}


def build_verifier(spec: VerifySpec) -> SignatureVerifier:
    """Create the verifier a route's `verify:` section describes."""
    if spec.type == "header_secret":
        assert spec.header is not None
        return HeaderSecret(spec.header, spec.secrets)
    if spec.type == "hmac":
        assert spec.header is not None
        return HmacSignature(
            spec.header, spec.secrets, spec.algorithm, spec.encoding, spec.prefix
        )
    return NoVerification()
