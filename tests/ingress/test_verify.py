"""Signature and secret schemes over raw bytes."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from gateway.config.model import VerifySpec
from gateway.exceptions import Unauthorized
from gateway.ingress.schemes import HeaderSecret, HmacSignature, build_verifier

BODY = b'{"zen": "Keep it logically awesome.",  "n":\t1, "u": "\\u00e9"}'


def github_signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_hmac_accepts_github_signature() -> None:
    verifier = HmacSignature("X-Hub-Signature-256", ("s3cret",), prefix="sha256=")
    verifier.verify(BODY, {"x-hub-signature-256": github_signature("s3cret", BODY)})


def test_hmac_rejects_reserialized_body() -> None:
    verifier = HmacSignature("X-Hub-Signature-256", ("s3cret",), prefix="sha256=")
    altered = BODY.replace(b"  ", b" ")
    with pytest.raises(Unauthorized):
        verifier.verify(
            altered, {"x-hub-signature-256": github_signature("s3cret", BODY)}
        )


def test_hmac_accepts_any_rotated_secret() -> None:
    verifier = HmacSignature("x-sig", ("new", "old"), prefix="sha256=")
    verifier.verify(BODY, {"x-sig": github_signature("old", BODY)})


def test_hmac_uppercase_hex_accepted() -> None:
    verifier = HmacSignature("x-sig", ("k",), prefix="sha256=")
    signature = github_signature("k", BODY)
    verifier.verify(BODY, {"x-sig": "sha256=" + signature[7:].upper()})


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
def test_hmac_base64_algorithms(algorithm: str) -> None:
    digest = hmac.new(b"k", BODY, getattr(hashlib, algorithm)).digest()
    verifier = HmacSignature("x-sig", ("k",), algorithm=algorithm, encoding="base64")
    verifier.verify(BODY, {"x-sig": base64.b64encode(digest).decode()})


@pytest.mark.parametrize(
    "header",
    [None, "", "sha256=", "sha256=zz", "sha1=" + "0" * 40, "sha256=" + "0" * 64],
)
def test_hmac_rejects_bad_headers(header: str | None) -> None:
    verifier = HmacSignature("x-sig", ("k",), prefix="sha256=")
    headers = {} if header is None else {"x-sig": header}
    with pytest.raises(Unauthorized):
        verifier.verify(BODY, headers)


def test_hmac_sign_round_trip() -> None:
    verifier = build_verifier(
        VerifySpec(type="hmac", header="X-Sig", secrets=("k",), encoding="base64")
    )
    verifier.verify(BODY, verifier.sign(BODY))


def test_header_secret_matches() -> None:
    HeaderSecret("Unipile-Auth", ("a", "b")).verify(BODY, {"unipile-auth": "b"})


@pytest.mark.parametrize("given", ["", "a ", "A", "ab", "\udcff"])
def test_header_secret_rejects(given: str) -> None:
    with pytest.raises(Unauthorized):
        HeaderSecret("Unipile-Auth", ("a",)).verify(BODY, {"unipile-auth": given})


def test_header_secret_missing_header() -> None:
    with pytest.raises(Unauthorized, match="missing header"):
        HeaderSecret("Unipile-Auth", ("a",)).verify(BODY, {})
