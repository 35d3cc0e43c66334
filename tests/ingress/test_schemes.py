"""Each verification scheme against signatures made by the provider's algorithm.

Where a provider publishes a signer in a Python package (`standardwebhooks`,
`slack_sdk`, `twilio`), that package signs the request, and it also checks
what the gateway signs for `mfo send`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from slack_sdk.signature import SignatureVerifier as SlackVerifier
from standardwebhooks import Webhook
from twilio.request_validator import RequestValidator

from gateway.config.model import VerifySpec
from gateway.config.templates import compile_text
from gateway.exceptions import (
    CredentialsRequired,
    Forbidden,
    SigningUnavailable,
    Unauthorized,
)
from gateway.ingress.request import WebhookRequest
from gateway.ingress.schemes import (
    AllOf,
    ApiKey,
    BasicAuth,
    BearerToken,
    HmacSignature,
    SourceAllowlist,
    StandardWebhooks,
    StripeSignature,
    TwilioSignature,
    build_verifier,
)
from gateway.ingress.schemes.hmac import (
    TimestampRule,
    shopify_signature,
    slack_signature,
    template_content,
)

# Two spaces, a tab, a newline and escaped unicode: signed as sent, never re-serialized.
BODY = b'{"type":"invoice.paid",  "n":\t1,\n "name": "Jos\\u00e9 \\ud83d\\ude00"}'
SW_KEY = b"0123456789abcdef0123456789abcdef"
SW_SECRET = "whsec_" + base64.b64encode(SW_KEY).decode()
SW_OLD_SECRET = (
    "whsec_" + base64.b64encode(b"old-secret-old-secret-old-secret").decode()
)
TOLERANCE = 300.0


def now() -> int:
    return int(time.time())


def sw_headers(
    secret: str, body: bytes, timestamp: int, webhook_id: str = "msg_1"
) -> dict[str, str]:
    signature = Webhook(secret).sign(
        webhook_id, datetime.fromtimestamp(timestamp, UTC), body
    )
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def standard(
    *secrets: str, public_keys: tuple[str, ...] = (), signing_key: str | None = None
) -> StandardWebhooks:
    return StandardWebhooks(secrets, public_keys, signing_key, TOLERANCE)


# Standard Webhooks


@pytest.mark.parametrize("configured", [SW_SECRET, SW_SECRET.removeprefix("whsec_")])
def test_standard_accepts_library_signature(configured: str) -> None:
    """The secret works with and without its whsec_ prefix."""
    standard(configured).verify(BODY, sw_headers(SW_SECRET, BODY, now()))


def test_standard_accepts_rotated_secret() -> None:
    standard(SW_SECRET, SW_OLD_SECRET).verify(
        BODY, sw_headers(SW_OLD_SECRET, BODY, now())
    )


def test_standard_accepts_any_listed_signature() -> None:
    """While a sender rotates, it lists an old and a new signature."""
    old = sw_headers(SW_OLD_SECRET, BODY, now())
    new = sw_headers(SW_SECRET, BODY, now())
    both = {
        **new,
        "webhook-signature": f"{old['webhook-signature']} {new['webhook-signature']}",
    }
    standard(SW_SECRET).verify(BODY, both)


def test_standard_header_names_any_case() -> None:
    headers = {
        name.upper(): value
        for name, value in sw_headers(SW_SECRET, BODY, now()).items()
    }
    standard(SW_SECRET).verify(BODY, headers)


@pytest.mark.parametrize("offset", [-TOLERANCE - 30, TOLERANCE + 30])
def test_standard_rejects_stale_and_future(offset: float) -> None:
    headers = sw_headers(SW_SECRET, BODY, int(now() + offset))
    with pytest.raises(Unauthorized, match=r"past|future"):
        standard(SW_SECRET).verify(BODY, headers)


def test_standard_rejects_milliseconds() -> None:
    """The specification counts seconds, so milliseconds look far in the future."""
    millis = now() * 1000
    content = f"msg_1.{millis}.".encode() + BODY
    signature = base64.b64encode(
        hmac.new(SW_KEY, content, hashlib.sha256).digest()
    ).decode()
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(millis),
        "webhook-signature": f"v1,{signature}",
    }
    with pytest.raises(Unauthorized, match="future"):
        standard(SW_SECRET).verify(BODY, headers)


def test_standard_rejects_reserialized_body() -> None:
    headers = sw_headers(SW_SECRET, BODY, now())
    with pytest.raises(Unauthorized, match="matches"):
        standard(SW_SECRET).verify(BODY.replace(b"  ", b" "), headers)


def test_standard_rejects_wrong_secret() -> None:
    with pytest.raises(Unauthorized):
        standard(SW_OLD_SECRET).verify(BODY, sw_headers(SW_SECRET, BODY, now()))


@pytest.mark.parametrize(
    "missing", ["webhook-id", "webhook-timestamp", "webhook-signature"]
)
def test_standard_missing_header(missing: str) -> None:
    headers = sw_headers(SW_SECRET, BODY, now())
    del headers[missing]
    with pytest.raises(Unauthorized, match="missing header"):
        standard(SW_SECRET).verify(BODY, headers)


def test_standard_sign_checked_by_library() -> None:
    headers = standard(SW_SECRET).sign(BODY)
    Webhook(SW_SECRET).verify(BODY, headers)


def ed25519_pair() -> tuple[Ed25519PrivateKey, str, str]:
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return (
        private,
        "whpk_" + base64.b64encode(public).decode(),
        "whsk_" + base64.b64encode(seed).decode(),
    )


def v1a_headers(
    private: Ed25519PrivateKey, body: bytes, timestamp: int
) -> dict[str, str]:
    """Sign as the specification describes: ed25519 over id.timestamp.body, base64."""
    signature = private.sign(f"msg_2.{timestamp}.".encode() + body)
    return {
        "webhook-id": "msg_2",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1a," + base64.b64encode(signature).decode(),
    }


def test_standard_v1a_accepted() -> None:
    private, public, _ = ed25519_pair()
    standard(public_keys=(public,)).verify(BODY, v1a_headers(private, BODY, now()))


def test_standard_v1a_key_without_prefix() -> None:
    private, public, _ = ed25519_pair()
    verifier = standard(public_keys=(public.removeprefix("whpk_"),))
    verifier.verify(BODY, v1a_headers(private, BODY, now()))


def test_standard_v1a_rotated_key() -> None:
    old, old_public, _ = ed25519_pair()
    _, new_public, _ = ed25519_pair()
    standard(public_keys=(new_public, old_public)).verify(
        BODY, v1a_headers(old, BODY, now())
    )


def test_standard_v1a_wrong_key_rejected() -> None:
    signer, _, _ = ed25519_pair()
    _, other_public, _ = ed25519_pair()
    with pytest.raises(Unauthorized):
        standard(public_keys=(other_public,)).verify(
            BODY, v1a_headers(signer, BODY, now())
        )


def test_standard_v1a_stale_rejected() -> None:
    private, public, _ = ed25519_pair()
    headers = v1a_headers(private, BODY, now() - 3600)
    with pytest.raises(Unauthorized, match="past"):
        standard(public_keys=(public,)).verify(BODY, headers)


def test_standard_v1a_sign_round_trip() -> None:
    _, public, signing = ed25519_pair()
    verifier = standard(public_keys=(public,), signing_key=signing)
    headers = verifier.sign(BODY)
    assert headers["webhook-signature"].startswith("v1a,")
    verifier.verify(BODY, headers)


def test_standard_public_key_only_cannot_sign() -> None:
    _, public, _ = ed25519_pair()
    with pytest.raises(SigningUnavailable, match="signing_key"):
        standard(public_keys=(public,)).sign(BODY)


# Stripe


def stripe_header(secret: str, body: bytes, timestamp: int) -> str:
    """Sign as Stripe documents: hex HMAC-SHA256 of "t.body", keyed as given."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def stripe(*secrets: str) -> StripeSignature:
    return StripeSignature(secrets, TOLERANCE)


def test_stripe_accepts_documented_signature() -> None:
    stripe("whsec_abc").verify(
        BODY, {"Stripe-Signature": stripe_header("whsec_abc", BODY, now())}
    )


def test_stripe_secret_used_with_prefix() -> None:
    """Stripe keys the HMAC with the whole secret, whsec_ included."""
    header = stripe_header("abc", BODY, now())
    with pytest.raises(Unauthorized):
        stripe("whsec_abc").verify(BODY, {"stripe-signature": header})


def test_stripe_rolled_secret_lists_two_signatures() -> None:
    timestamp = now()
    old = stripe_header("whsec_old", BODY, timestamp)
    new = stripe_header("whsec_new", BODY, timestamp).split(",")[1]
    header = f"{old},{new},v0=ignored"
    stripe("whsec_new").verify(BODY, {"stripe-signature": header})
    stripe("whsec_old").verify(BODY, {"stripe-signature": header})


def test_stripe_accepts_rotated_config_secret() -> None:
    header = stripe_header("whsec_old", BODY, now())
    stripe("whsec_new", "whsec_old").verify(BODY, {"stripe-signature": header})


@pytest.mark.parametrize("offset", [-TOLERANCE - 30, TOLERANCE + 30])
def test_stripe_rejects_stale_and_future(offset: float) -> None:
    header = stripe_header("whsec_abc", BODY, int(now() + offset))
    with pytest.raises(Unauthorized, match=r"past|future"):
        stripe("whsec_abc").verify(BODY, {"stripe-signature": header})


def test_stripe_rejects_milliseconds() -> None:
    header = stripe_header("whsec_abc", BODY, now() * 1000)
    with pytest.raises(Unauthorized, match="future"):
        stripe("whsec_abc").verify(BODY, {"stripe-signature": header})


@pytest.mark.parametrize(
    "header",
    [
        "",
        "v1=00",
        "t=1,t=2,v1=00",
        f"t={int(time.time())}",
        "t=abc,v1=00",
        "t=1e9,v1=00",
    ],
)
def test_stripe_rejects_malformed_header(header: str) -> None:
    with pytest.raises(Unauthorized):
        stripe("whsec_abc").verify(BODY, {"stripe-signature": header})


def test_stripe_sign_round_trip() -> None:
    verifier = stripe("whsec_abc")
    verifier.verify(BODY, verifier.sign(BODY))


# Slack


SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def slack_headers(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    signature = SlackVerifier(secret).generate_signature(
        timestamp=str(timestamp), body=body
    )
    assert signature is not None
    return {"X-Slack-Request-Timestamp": str(timestamp), "X-Slack-Signature": signature}


def test_slack_accepts_sdk_signature() -> None:
    slack_signature((SLACK_SECRET,), TOLERANCE).verify(
        BODY, slack_headers(SLACK_SECRET, BODY, now())
    )


def test_slack_header_names_any_case() -> None:
    headers = {
        k.lower(): v for k, v in slack_headers(SLACK_SECRET, BODY, now()).items()
    }
    slack_signature((SLACK_SECRET,), TOLERANCE).verify(BODY, headers)


def test_slack_accepts_rotated_secret() -> None:
    headers = slack_headers("old-secret", BODY, now())
    slack_signature((SLACK_SECRET, "old-secret"), TOLERANCE).verify(BODY, headers)


@pytest.mark.parametrize("offset", [-TOLERANCE - 30, TOLERANCE + 30])
def test_slack_rejects_stale_and_future(offset: float) -> None:
    headers = slack_headers(SLACK_SECRET, BODY, int(now() + offset))
    with pytest.raises(Unauthorized, match=r"past|future"):
        slack_signature((SLACK_SECRET,), TOLERANCE).verify(BODY, headers)


def test_slack_rejects_milliseconds() -> None:
    headers = slack_headers(SLACK_SECRET, BODY, now() * 1000)
    with pytest.raises(Unauthorized, match="future"):
        slack_signature((SLACK_SECRET,), TOLERANCE).verify(BODY, headers)


def test_slack_sign_checked_by_sdk() -> None:
    headers = slack_signature((SLACK_SECRET,), TOLERANCE).sign(BODY)
    assert SlackVerifier(SLACK_SECRET).is_valid_request(BODY, headers)


# Shopify


def shopify_header(secret: str, body: bytes) -> str:
    """Sign as Shopify documents: base64 HMAC-SHA256 of the raw body."""
    return base64.b64encode(
        hmac.new(secret.encode(), body, hashlib.sha256).digest()
    ).decode()


def test_shopify_accepts_documented_signature() -> None:
    shopify_signature(("shpss_1",)).verify(
        BODY, {"X-Shopify-Hmac-Sha256": shopify_header("shpss_1", BODY)}
    )


def test_shopify_accepts_rotated_secret() -> None:
    headers = {"x-shopify-hmac-sha256": shopify_header("shpss_old", BODY)}
    shopify_signature(("shpss_new", "shpss_old")).verify(BODY, headers)


def test_shopify_rejects_reserialized_body() -> None:
    headers = {"x-shopify-hmac-sha256": shopify_header("shpss_1", BODY)}
    with pytest.raises(Unauthorized):
        shopify_signature(("shpss_1",)).verify(BODY.replace(b"\t", b" "), headers)


# Twilio

TWILIO_TOKEN = "12345678901234567890123456789012"
FORM_URL = "https://hooks.example.com/webhooks/twilio?account=main"
FORM = (
    b"To=%2B15551230000&From=%2B15559870000&Body=Hello+%C3%A9&MessageSid=SM1"
    b"&Media=b&Media=a"
)
FORM_PARAMS = {
    "To": "+15551230000",
    "From": "+15559870000",
    "Body": "Hello \u00e9",
    "MessageSid": "SM1",
}
FORM_TYPE = {"content-type": "application/x-www-form-urlencoded"}


class _MultiDict(dict[str, list[str]]):
    """The shape Twilio's validator reads repeated fields from."""

    def getall(self, name: str) -> list[str]:
        return self[name]


def twilio_form_signature(token: str, url: str) -> str:
    params = _MultiDict({name: [value] for name, value in FORM_PARAMS.items()})
    params["Media"] = ["b", "a"]
    return RequestValidator(token).compute_signature(url, params)


def twilio_request(
    url: str, signature: str, body: bytes = FORM, **headers: str
) -> WebhookRequest:
    return WebhookRequest(
        body, {**FORM_TYPE, "x-twilio-signature": signature, **headers}, url=url
    )


def test_twilio_accepts_library_signature() -> None:
    signature = twilio_form_signature(TWILIO_TOKEN, FORM_URL)
    TwilioSignature((TWILIO_TOKEN,)).verify_request(twilio_request(FORM_URL, signature))


def test_twilio_accepts_url_with_port() -> None:
    signature = twilio_form_signature(
        TWILIO_TOKEN, FORM_URL.replace(".com/", ".com:443/")
    )
    TwilioSignature((TWILIO_TOKEN,)).verify_request(twilio_request(FORM_URL, signature))


def test_twilio_public_url_behind_proxy() -> None:
    """The gateway sees http://127.0.0.1:8080; Twilio signed the public URL."""
    signature = twilio_form_signature(TWILIO_TOKEN, FORM_URL)
    local = "http://127.0.0.1:8080/webhooks/twilio?account=main"
    verifier = TwilioSignature((TWILIO_TOKEN,), public_url="https://hooks.example.com/")
    verifier.verify_request(twilio_request(local, signature))
    with pytest.raises(Unauthorized, match="public_url"):
        TwilioSignature((TWILIO_TOKEN,)).verify_request(
            twilio_request(local, signature)
        )


def test_twilio_accepts_rotated_token() -> None:
    signature = twilio_form_signature("old-token", FORM_URL)
    TwilioSignature((TWILIO_TOKEN, "old-token")).verify_request(
        twilio_request(FORM_URL, signature)
    )


def test_twilio_rejects_changed_field() -> None:
    signature = twilio_form_signature(TWILIO_TOKEN, FORM_URL)
    tampered = FORM.replace(b"Hello", b"Hullo")
    with pytest.raises(Unauthorized):
        TwilioSignature((TWILIO_TOKEN,)).verify_request(
            twilio_request(FORM_URL, signature, tampered)
        )


def test_twilio_json_body_hash() -> None:
    body = b'{"event": "x",  "n": 1}'
    url = f"{FORM_URL}&bodySHA256={hashlib.sha256(body).hexdigest()}"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, {})
    request = WebhookRequest(
        body,
        {"content-type": "application/json", "x-twilio-signature": signature},
        url=url,
    )
    TwilioSignature((TWILIO_TOKEN,)).verify_request(request)
    with pytest.raises(Unauthorized, match="bodySHA256"):
        TwilioSignature((TWILIO_TOKEN,)).verify_request(
            WebhookRequest(body + b" ", request.headers, url=url)
        )


def test_twilio_json_without_body_hash_rejected() -> None:
    """Without bodySHA256 the signature covers only the URL, not the body."""
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(FORM_URL, {})
    headers = {"content-type": "application/json", "x-twilio-signature": signature}
    request = WebhookRequest(b'{"forged": true}', headers, url=FORM_URL)
    with pytest.raises(Unauthorized, match="bodySHA256"):
        TwilioSignature((TWILIO_TOKEN,)).verify_request(request)


def test_twilio_sign_json_adds_body_hash() -> None:
    body = b'{"event": "x"}'
    request = WebhookRequest(body, {"content-type": "application/json"}, url=FORM_URL)
    signed = TwilioSignature((TWILIO_TOKEN,)).sign_request(request)
    digest = hashlib.sha256(body).hexdigest()
    assert signed.url == f"{FORM_URL}&bodySHA256={digest}"
    validator = RequestValidator(TWILIO_TOKEN)
    assert validator.validate(
        signed.url, body.decode(), signed.headers["x-twilio-signature"]
    )


def test_twilio_sign_checked_by_library() -> None:
    request = WebhookRequest(FORM, FORM_TYPE, url=FORM_URL)
    signed = TwilioSignature((TWILIO_TOKEN,)).sign_request(request)
    params = _MultiDict({name: [value] for name, value in FORM_PARAMS.items()})
    params["Media"] = ["a", "b"]
    assert RequestValidator(TWILIO_TOKEN).validate(
        FORM_URL, params, signed.headers["x-twilio-signature"]
    )


def test_twilio_sign_needs_url() -> None:
    verifier = TwilioSignature((TWILIO_TOKEN,), public_url="https://h.example.com")
    with pytest.raises(SigningUnavailable, match="request URL"):
        verifier.sign(FORM)


# Generic HMAC with a templated signed content


def millis_scheme(unit: str = "ms") -> HmacSignature:
    return HmacSignature(
        "X-Signature",
        ("k1",),
        encoding="base64",
        content=template_content(compile_text("{{ timestamp }}.{{ body }}")),
        timestamp=TimestampRule("X-Timestamp", TOLERANCE, unit),
    )


def timestamped_headers(body: bytes, timestamp: int) -> dict[str, str]:
    digest = hmac.new(b"k1", f"{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "x-timestamp": str(timestamp),
        "x-signature": base64.b64encode(digest).decode(),
    }


def test_template_hmac_milliseconds() -> None:
    millis_scheme().verify(BODY, timestamped_headers(BODY, int(time.time() * 1000)))


def test_template_hmac_seconds_on_millisecond_route() -> None:
    with pytest.raises(Unauthorized, match="past"):
        millis_scheme().verify(BODY, timestamped_headers(BODY, now()))


def test_template_hmac_stale_milliseconds() -> None:
    stale = int((time.time() - TOLERANCE - 30) * 1000)
    with pytest.raises(Unauthorized, match="past"):
        millis_scheme().verify(BODY, timestamped_headers(BODY, stale))


def test_template_hmac_signs_invalid_utf8_as_sent() -> None:
    body = b'{"a": "\xff\xfe"}  '
    millis_scheme().verify(body, timestamped_headers(body, int(time.time() * 1000)))


def test_template_hmac_sign_round_trip() -> None:
    verifier = millis_scheme()
    verifier.verify(BODY, verifier.sign(BODY))


# Secrets sent as they are


def test_bearer_accepts_any_token() -> None:
    BearerToken(("new", "old")).verify(BODY, {"Authorization": "bearer old"})


@pytest.mark.parametrize("value", ["Bearer", "Bearer wrong", "Basic b2xk", "old"])
def test_bearer_rejects(value: str) -> None:
    with pytest.raises(Unauthorized):
        BearerToken(("old",)).verify(BODY, {"authorization": value})


def test_api_key_in_header() -> None:
    ApiKey(("k",), "X-Api-Key", None).verify(BODY, {"x-api-key": "k"})


def test_api_key_in_query() -> None:
    request = WebhookRequest(BODY, url="http://h/x?a=1&api_key=k%2F1")
    ApiKey(("k/1",), None, "api_key").verify_request(request)


@pytest.mark.parametrize("query", ["", "api_key=", "api_key=k&api_key=k", "api_key=K"])
def test_api_key_in_query_rejects(query: str) -> None:
    request = WebhookRequest(BODY, url=f"http://h/x?{query}")
    with pytest.raises(Unauthorized):
        ApiKey(("k",), None, "api_key").verify_request(request)


def test_api_key_sign_adds_query() -> None:
    scheme = ApiKey(("k 1",), None, "key")
    signed = scheme.sign_request(WebhookRequest(BODY, url="http://h/x?a=1"))
    assert signed.url == "http://h/x?a=1&key=k+1"
    scheme.verify_request(signed)


def test_basic_auth_accepts() -> None:
    credentials = base64.b64encode(b"acme:p\xc3\xa4ss").decode()
    BasicAuth(("acme:p\u00e4ss",), "mfo").verify(
        BODY, {"authorization": f"Basic {credentials}"}
    )


@pytest.mark.parametrize(
    "value",
    [None, "Basic !!", "Basic " + base64.b64encode(b"acme:no").decode(), "Bearer x"],
)
def test_basic_auth_rejects_with_challenge(value: str | None) -> None:
    headers = {} if value is None else {"authorization": value}
    with pytest.raises(CredentialsRequired) as caught:
        BasicAuth(("acme:pass",), 'a "realm"').verify(BODY, headers)
    assert caught.value.headers == {"www-authenticate": 'Basic realm="a \\"realm\\""'}


# Source addresses


def at(client: str, **headers: str) -> WebhookRequest:
    return WebhookRequest(BODY, headers, client_host=client)


def test_allowlist_peer_allowed() -> None:
    SourceAllowlist(("192.0.2.0/24",)).verify_request(at("192.0.2.7"))


@pytest.mark.parametrize("client", ["198.51.100.1", "::1", "", "not-an-address"])
def test_allowlist_peer_rejected(client: str) -> None:
    with pytest.raises(Forbidden):
        SourceAllowlist(("192.0.2.0/24",)).verify_request(at(client))


def test_allowlist_ipv4_mapped_peer() -> None:
    SourceAllowlist(("192.0.2.0/24",)).verify_request(at("::ffff:192.0.2.9"))


def behind_proxy() -> SourceAllowlist:
    return SourceAllowlist(
        ("192.0.2.0/24",), "X-Forwarded-For", ("127.0.0.1/32", "10.0.0.0/8")
    )


def test_allowlist_reads_trusted_proxy_header() -> None:
    behind_proxy().verify_request(
        at("127.0.0.1", **{"x-forwarded-for": "192.0.2.5, 10.1.1.1"})
    )


def test_allowlist_ignores_entries_the_client_wrote() -> None:
    """A client may prepend any address; only the hop the proxy saw counts."""
    request = at("127.0.0.1", **{"x-forwarded-for": "192.0.2.5, 198.51.100.9"})
    with pytest.raises(Forbidden, match=r"198\.51\.100\.9"):
        behind_proxy().verify_request(request)


def test_allowlist_ignores_header_from_untrusted_peer() -> None:
    request = at("198.51.100.9", **{"x-forwarded-for": "192.0.2.5"})
    with pytest.raises(Forbidden, match=r"198\.51\.100\.9"):
        behind_proxy().verify_request(request)


def test_allowlist_rejects_garbage_header() -> None:
    with pytest.raises(Forbidden, match="not an IP address"):
        behind_proxy().verify_request(at("127.0.0.1", **{"x-forwarded-for": "unknown"}))


def test_allowlist_reads_forwarded_header() -> None:
    scheme = SourceAllowlist(("2001:db8::/32",), "Forwarded", ("127.0.0.1/32",))
    scheme.verify_request(
        at("127.0.0.1", forwarded='for="[2001:db8::1]:4711";proto=https')
    )


def test_all_of_needs_every_scheme() -> None:
    scheme = AllOf([SourceAllowlist(("192.0.2.0/24",)), BearerToken(("t",))])
    scheme.verify_request(at("192.0.2.1", authorization="Bearer t"))
    with pytest.raises(Unauthorized):
        scheme.verify_request(at("192.0.2.1", authorization="Bearer x"))
    with pytest.raises(Forbidden):
        scheme.verify_request(at("198.51.100.1", authorization="Bearer t"))


# Every scheme signs what it verifies


_, _PUBLIC, _SIGNING = ed25519_pair()
SPECS = [
    VerifySpec(type="none"),
    VerifySpec(type="header_secret", header="X-Token", secrets=("t",)),
    VerifySpec(type="bearer", secrets=("t",)),
    VerifySpec(type="api_key", header="X-Key", secrets=("t",)),
    VerifySpec(type="api_key", query="key", secrets=("t",)),
    VerifySpec(type="basic_auth", secrets=("u:p",)),
    VerifySpec(type="hmac", header="X-Sig", secrets=("t",), prefix="sha256="),
    VerifySpec(
        type="hmac",
        header="X-Sig",
        secrets=("t",),
        signed_content=compile_text("{{ timestamp }}:{{ body }}"),
        timestamp_header="X-Ts",
        timestamp_unit="ms",
    ),
    VerifySpec(type="standard_webhooks", secrets=(SW_SECRET,)),
    VerifySpec(type="standard_webhooks", public_keys=(_PUBLIC,), signing_key=_SIGNING),
    VerifySpec(type="stripe", secrets=("whsec_t",)),
    VerifySpec(type="slack", secrets=("t",)),
    VerifySpec(type="shopify", secrets=("t",)),
    VerifySpec(type="twilio", secrets=("t",)),
    VerifySpec(type="twilio", secrets=("t",), public_url="https://hooks.example.com"),
    VerifySpec(type="ip_allowlist", allow=("127.0.0.0/8",)),
    VerifySpec(
        type="all",
        parts=(
            VerifySpec(type="ip_allowlist", allow=("127.0.0.0/8",)),
            VerifySpec(type="slack", secrets=("t",)),
        ),
    ),
]


BODY_SIGNING = (
    "hmac",
    "standard_webhooks",
    "stripe",
    "slack",
    "shopify",
    "twilio",
    "all",
)


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.type)
def test_every_scheme_verifies_its_signature(spec: VerifySpec) -> None:
    verifier = build_verifier(spec)
    url = "http://127.0.0.1:8080/hook?x=1"
    unsigned = WebhookRequest(BODY, FORM_TYPE, url=url, client_host="127.0.0.1")
    signed = verifier.sign_request(unsigned)
    verifier.verify_request(signed)
    if spec.type not in ("none", "ip_allowlist"):
        with pytest.raises(Unauthorized):
            verifier.verify_request(unsigned)
    if spec.type in BODY_SIGNING:
        tampered = WebhookRequest(
            BODY + b" ", signed.headers, url=signed.url, client_host="127.0.0.1"
        )
        with pytest.raises(Unauthorized):
            verifier.verify_request(tampered)
