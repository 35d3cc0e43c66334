"""Random hostile requests against every route of a real server.

Hypothesis builds bodies (random bytes, broken and nasty JSON, forms,
near-valid provider payloads), encodings, content types, headers and query
strings, and signs some of them correctly so that they get past
verification into parsing, schemas and templates. Every response must be
below 500, the server must stay healthy, and no rejected request may leave
a stored row.
"""

from __future__ import annotations

import gzip
import json
import os
import string
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ingress.live import LiveGateway, live_gateway

# Enough to reach each of the 18 routes over a hundred times. This test with
# 2,500 took about 20 s on a 2-core machine; MFO_HOSTILE_EXAMPLES changes it.
EXAMPLES = int(os.environ.get("MFO_HOSTILE_EXAMPLES", "2500"))
PROBE_HEADER = "x-probe-id"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    with live_gateway(tmp_path_factory.mktemp("hostile")) as running:
        yield running


# Bodies

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=12), children, max_size=5),
    ),
    max_leaves=25,
)
NASTY_JSON = [
    b"NaN",
    b'{"a": Infinity}',
    b'{"a": -Infinity}',
    b'{"a": 1e400}',
    b'{"a": ' + b"7" * 5000 + b"}",
    b'{"a": 1, "a": 2}',
    b'{"a": "\\ud800"}',
    b'{"\\u0000": 1}',
    b'{"a": "x\\u0000"}',
    b"[" * 3000 + b"]" * 3000,
    b"{" * 200,
    b'{"a": [' * 600 + b"]}" * 600,
    b"\xef\xbb\xbf{}",
    '{"a": "\u00e9"}'.encode("utf-16"),
    b'{"a": "\xc3\x28"}',
    b"",
    b" ",
    b"\x00",
    b'"\\u0000"',
    b"[1, 2, 3]",
    b"12345678901234567890",
    b"true",
    b'{"type": "url_verification", "challenge": "\\u0000"}',
    b'{"type": "url_verification", "challenge": ' + b'"x"' * 2 + b"}",
    b'{"event": "endpoint.url_validation", "payload": {"plainToken": 5}}',
    b'{"event": "endpoint.url_validation", "payload": null}',
]


def dump_json(value: Any, indent: int | None, ascii_only: bool) -> bytes:
    return json.dumps(value, indent=indent, ensure_ascii=ascii_only).encode()


json_bodies = st.builds(
    dump_json, JSON_VALUES, st.sampled_from([None, 0, 2]), st.booleans()
)
form_bodies = st.one_of(
    st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=6).map(
        lambda fields: urlencode(fields).encode()
    ),
    JSON_VALUES.map(lambda value: urlencode({"payload": json.dumps(value)}).encode()),
    st.text(alphabet=string.printable + "%", max_size=60).map(str.encode),
)


def sid(prefix: str) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(alphabet="0123456789abcdef", min_size=32, max_size=32).map(
            lambda digits: prefix + digits
        ),
        st.text(max_size=20),
    )


# Payloads close enough to each provider's that they reach the event rules.
PLAUSIBLE = {
    "unipile/notify": st.fixed_dictionaries(
        {
            "email_id": st.text(max_size=20),
            "account_id": st.text(max_size=20),
            "event": st.sampled_from(["mail_received", "mail_sent", "other"]),
        },
        optional={"subject": st.one_of(st.none(), st.text(max_size=30))},
    ),
    "stripe/events": st.fixed_dictionaries(
        {
            "id": st.text(max_size=20).map(lambda text: "evt_" + text),
            "object": st.just("event"),
            "type": st.from_regex(r"[a-z_]{1,10}(\.[a-z_]{1,10}){0,2}", fullmatch=True),
            "created": st.integers(),
            "data": st.fixed_dictionaries(
                {"object": st.dictionaries(st.text(), JSON_LEAVES)}
            ),
        }
    ),
    "slack/events": st.fixed_dictionaries(
        {
            "type": st.sampled_from(["event_callback", "url_verification", "x"]),
            "event_id": st.text(max_size=20),
            "challenge": st.text(max_size=40),
            "event": st.fixed_dictionaries({"type": st.text(max_size=20)}),
        }
    ),
    "acme/events": st.fixed_dictionaries(
        {
            "type": st.text(max_size=20),
            "timestamp": st.text(max_size=25),
            "data": JSON_VALUES,
        }
    ),
    "zoom/events": st.fixed_dictionaries(
        {
            "event": st.sampled_from(["endpoint.url_validation", "meeting.started"]),
            "payload": st.fixed_dictionaries({"plainToken": JSON_LEAVES}),
        }
    ),
    "lab/reply": st.fixed_dictionaries({"id": JSON_LEAVES}),
    "lab/numbers": st.fixed_dictionaries(
        {"x": st.one_of(JSON_LEAVES, st.sampled_from(["nan", "inf", "-1e999", "1_0"]))}
    ),
}
PLAUSIBLE_FORMS = {
    "twilio/messages": st.fixed_dictionaries(
        {"MessageSid": sid("SM"), "AccountSid": sid("AC")},
        optional={
            "SmsStatus": st.text(max_size=12),
            "MessageStatus": st.text(max_size=12),
            "Body": st.text(max_size=40),
        },
    ),
    "slack/interactions": st.fixed_dictionaries(
        {"payload": JSON_VALUES.map(lambda value: json.dumps({"type": value}))}
    ),
}


# Headers and URLs

TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
HEADER_NAMES = st.one_of(
    st.sampled_from(
        [
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "stripe-signature",
            "x-slack-signature",
            "x-slack-request-timestamp",
            "x-twilio-signature",
            "x-hub-signature-256",
            "x-shopify-hmac-sha256",
            "x-shopify-topic",
            "x-github-event",
            "x-github-delivery",
            "x-forwarded-for",
            "authorization",
            "x-token",
            "x-id",
            "unipile-auth",
            "x-zm-signature",
            "x-zm-request-timestamp",
        ]
    ),
    st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=20),
)
HEADER_VALUES = st.one_of(
    st.text(alphabet=string.printable.strip("\r\n\x0b\x0c") + " ", max_size=60).map(
        str.strip
    ),
    st.sampled_from(
        [
            "",
            "v1,AAAA",
            "t=1,v1=00",
            "v0=",
            "Bearer ",
            "Basic !!",
            "999999999999999999999",
        ]
    ),
    st.binary(max_size=20).map(
        lambda raw: bytes(b for b in raw if b >= 0x80 or 0x20 < b < 0x7F).decode(
            "latin-1"
        )
    ),
)
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            None,
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=utf-16",
            "application/json; charset=latin-1",
            "application/json; charset=nope",
            "application/json; charset=unicode_escape",
            "application/vnd.api+json",
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=iso-8859-1",
            "text/plain",
            "text/plain; charset=rot13",
            "text/xml",
            "multipart/form-data; boundary=x",
            "application/octet-stream",
            "",
            ";;;",
            "application/json; charset=",
        ]
    ),
    st.text(alphabet=string.printable.strip("\r\n\x0b\x0c"), max_size=40).map(
        str.strip
    ),
)
ENCODINGS = st.sampled_from(
    [
        None,
        "identity",
        "gzip",
        "deflate",
        "raw-deflate",
        "gzip, gzip",
        "br",
        "gzip-lie",
        "x",
    ]
)
QUERIES = st.one_of(
    st.just(""),
    st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4).map(
        urlencode
    ),
    st.text(alphabet=string.ascii_letters + "%=&+;.0123456789", max_size=40),
    st.sampled_from(
        [
            "validationToken=" + quote("Validation\u00e9 <b>x</b>"),
            "validationToken=%00",
            "hub.mode=subscribe&hub.challenge=1&hub.verify_token=nope",
            "hub.mode=subscribe&hub.challenge=%FF",
            "key=query-secret&q=%00",
            "bodySHA256=zz",
            "&" * 50,
        ]
    ),
)


@dataclass(frozen=True)
class Probe:
    """One request to send, before signing."""

    route: str
    method: str
    body: bytes
    content_type: str | None
    encoding: str | None
    headers: tuple[tuple[str, str], ...]
    query: str
    signing: str


def encode_body(body: bytes, encoding: str | None) -> tuple[bytes, str | None]:
    """Compress as declared, or declare an encoding the body does not have."""
    if encoding == "gzip":
        return gzip.compress(body), "gzip"
    if encoding == "deflate":
        return zlib.compress(body), "deflate"
    if encoding == "raw-deflate":
        compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return compressor.compress(body) + compressor.flush(), "deflate"
    if encoding == "gzip, gzip":
        return gzip.compress(gzip.compress(body)), "gzip, gzip"
    if encoding == "gzip-lie":
        return body, "gzip"
    return body, encoding


@st.composite
def probes(
    draw: st.DrawFn, routes: list[str], methods: dict[str, tuple[str, ...]]
) -> Probe:
    route = draw(st.sampled_from(routes))
    hostile = [
        st.binary(max_size=512),
        json_bodies,
        form_bodies,
        st.sampled_from(NASTY_JSON),
    ]
    plausible = []
    if route in PLAUSIBLE:
        plausible.append(PLAUSIBLE[route].map(lambda value: json.dumps(value).encode()))
    if route in PLAUSIBLE_FORMS:
        plausible.append(PLAUSIBLE_FORMS[route].map(lambda v: urlencode(v).encode()))
    # Half the bodies look like the provider's, so they reach the event rules.
    body = draw(st.one_of(*hostile, *(plausible * len(hostile))))
    content_type = draw(CONTENT_TYPES)
    if draw(st.booleans()):
        form = route in PLAUSIBLE_FORMS
        content_type = (
            "application/x-www-form-urlencoded" if form else "application/json"
        )
    # Mostly the route's own methods, sometimes ones it does not serve.
    method_choices = [*methods[route] * 20, "GET", "PUT", "DELETE"]
    return Probe(
        route=route,
        method=draw(st.sampled_from(method_choices)),
        body=body,
        content_type=content_type,
        encoding=draw(ENCODINGS),
        headers=tuple(
            draw(st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6))
        ),
        query=draw(QUERIES),
        signing=draw(st.sampled_from(["none", "valid", "valid", "tampered"])),
    )


def build_request(
    live: LiveGateway, probe: Probe, probe_id: str
) -> tuple[str, dict[str, str], bytes]:
    """Return the URL, headers and body of a probe, signed unless `signing` is none."""
    body, encoding = encode_body(probe.body, probe.encoding)
    # httpx rejects leading and trailing whitespace in a header value.
    headers = {name.lower(): value.strip(" \t") for name, value in probe.headers}
    headers.pop("content-length", None)
    headers.pop("host", None)
    headers.pop("transfer-encoding", None)
    if probe.content_type is not None:
        headers["content-type"] = probe.content_type
    if encoding is not None:
        headers["content-encoding"] = encoding
    headers[PROBE_HEADER] = probe_id
    url = live.url(probe.route, probe.query)
    if probe.signing != "none":
        url, headers = live.sign(probe.route, body, headers, probe.query)
    if probe.signing == "tampered":
        body = body[:-1] + bytes([body[-1] ^ 1]) if body else b"x"
    return url, headers, body


def stored_probe_ids(database_url: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT headers ->> %s FROM mfo_requests WHERE headers ? %s",
            (PROBE_HEADER, PROBE_HEADER),
        ).fetchall()
    return {row[0] for row in rows}


def test_hostile_requests_never_fail_the_server(live: LiveGateway) -> None:
    """No 5xx, the server stays healthy, and nothing rejected is stored."""
    routes = sorted(route.qualified_name for route in live.config.routes)
    methods = {route.qualified_name: route.methods for route in live.config.routes}
    outcomes: dict[str, int] = {}
    client = httpx.Client(timeout=30)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(probe=probes(routes, methods))
    def send(probe: Probe) -> None:
        probe_id = str(uuid.uuid4())
        url, headers, body = build_request(live, probe, probe_id)
        # Latin-1 bytes, because h11 allows header bytes that ASCII does not.
        raw_headers = [(n.encode(), v.encode("latin-1")) for n, v in headers.items()]
        response = client.request(probe.method, url, content=body, headers=raw_headers)
        outcomes[probe_id] = response.status_code
        assert response.status_code < 500, (probe, response.text)

    try:
        send()
    finally:
        client.close()

    stored = stored_probe_ids(live.database_url)
    rejected = {probe_id for probe_id, status in outcomes.items() if status >= 300}
    created = {probe_id for probe_id, status in outcomes.items() if status == 202}
    counts: dict[int, int] = {}
    for status in outcomes.values():
        counts[status] = counts.get(status, 0) + 1
    print(
        f"\n{len(outcomes)} hostile requests, statuses {dict(sorted(counts.items()))}"
    )

    assert len(outcomes) >= min(EXAMPLES, 100)
    assert stored & rejected == set()
    assert created <= stored
    assert httpx.get(live.server.base_url + "/healthz", timeout=10).status_code == 200
    assert httpx.get(live.server.base_url + "/readyz", timeout=10).status_code == 200
    assert live.server.process.poll() is None
    assert "internal error" not in live.server.log()
