"""Sign outgoing webhooks as the Standard Webhooks specification describes.

The signed content is `{webhook-id}.{webhook-timestamp}.{body}`; the key is
the base64 part of a `whsec_` secret; the signature header lists
`v1,<base64 HMAC-SHA256>` entries separated by spaces.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

SECRET_PREFIX = "whsec_"


def generate_secret() -> str:
    """Return a new `whsec_` secret holding 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(24)).decode()


def secret_key(secret: str) -> bytes:
    """Decode a `whsec_` secret to the HMAC key; raise ValueError if malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a signing secret must start with 'whsec_'")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except ValueError as exc:
        raise ValueError(
            f"the part after 'whsec_' is not valid base64: {exc}"
        ) from None
    if not 16 <= len(key) <= 64:
        raise ValueError("a signing secret must decode to 16 to 64 bytes")
    return key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Return the `v1,` signature of one message."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    secrets: list[str], message_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Build the three Standard Webhooks headers, one signature per secret."""
    signatures = " ".join(
        sign(secret, message_id, timestamp, body) for secret in secrets
    )
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
    }
