"""The config compiler's checks of verification schemes, handshakes, decoding and
responses, each reported as FILE:LINE:COLUMN."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest

from gateway.config.loader import check_config, load_config
from gateway.config.model import RouteConfig
from gateway.config.templates import TextTemplate, TreeTemplate
from tests.support import REPO

SW_SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
PUBLIC_KEY = "whpk_" + base64.b64encode(b"p" * 32).decode()


def write(tmp_path: Path, route_body: str) -> Path:
    """Write a providers.yaml whose one route has `route_body` from line 5 on."""
    config_dir = tmp_path / "config"
    config_dir.mkdir(exist_ok=True)
    text = "providers:\n  acme:\n    routes:\n      hook:\n" + textwrap.indent(
        textwrap.dedent(route_body), " " * 8
    )
    (config_dir / "providers.yaml").write_text(text)
    return config_dir


def problems(config_dir: Path, severity: str = "error") -> list[str]:
    _, found = check_config(config_dir, env={})
    prefix = f"{config_dir}/providers.yaml:"
    return [
        str(p).removeprefix(prefix).replace(str(config_dir), "")
        for p in found
        if p.severity == severity
    ]


def compile_route(tmp_path: Path, route_body: str) -> RouteConfig:
    """Compile a route whose events are EVENTS and whose other keys are `route_body`."""
    config_dir = write(tmp_path, EVENTS + textwrap.dedent(route_body))
    config = load_config(config_dir, env={})
    return config.routes[0]


EVENTS = "path: /hook\nevents: [{type: acme.x}]\n"


def test_every_scheme_compiles(tmp_path: Path) -> None:
    route = compile_route(
        tmp_path,
        f"""\
        verify:
          - type: ip_allowlist
            allow: [192.0.2.0/24, "2001:db8::/32"]
            proxy_header: X-Forwarded-For
            trusted_proxies: [127.0.0.1]
          - type: standard_webhooks
            secrets: [{SW_SECRET}]
            public_key: {PUBLIC_KEY}
            tolerance: 10m
        """,
    )
    allowlist, standard = route.verify.parts
    assert route.verify.type == "all"
    assert allowlist.allow == ("192.0.2.0/24", "2001:db8::/32")
    assert allowlist.trusted_proxies == ("127.0.0.1/32",)
    assert standard.secrets == (SW_SECRET,)
    assert standard.public_keys == (PUBLIC_KEY,)
    assert standard.tolerance == 600.0


def test_hmac_template_compiles(tmp_path: Path) -> None:
    route = compile_route(
        tmp_path,
        """\
        verify:
          type: hmac
          header: X-Signature
          secret: s
          signed_content: "{{ timestamp }}.{{ body }}"
          timestamp_header: X-Timestamp
          timestamp_unit: ms
          tolerance: 90s
        """,
    )
    assert isinstance(route.verify.signed_content, TextTemplate)
    assert route.verify.timestamp_unit == "ms"
    assert route.verify.tolerance == 90.0


def test_handshake_and_response_compile(tmp_path: Path) -> None:
    route = compile_route(
        tmp_path,
        """\
        verify: {type: none}
        handshakes:
          subscribe:
            method: get
            verify: false
            when: query['hub.mode'] == 'subscribe'
            token: "{{ query['hub.verify_token'] }}"
            secrets: [t1, t2]
            response:
              body: "{{ query['hub.challenge'] }}"
        response:
          status: "{{ 200 if duplicate else 201 }}"
          headers: {X-Event: "{{ event_id }}"}
          body: {id: "{{ event_id }}"}
        decode:
          form_json_fields: payload
          max_json_depth: 16
          max_decompressed_size: 2mib
        """,
    )
    handshake = route.handshakes[0]
    assert route.methods == ("POST", "GET")
    assert handshake.method == "GET"
    assert handshake.verify is False
    assert handshake.secrets == ("t1", "t2")
    assert route.response is not None
    assert isinstance(route.response.status, TextTemplate)
    assert route.response.headers[0][0] == "x-event"
    assert isinstance(route.response.body, TreeTemplate)
    assert route.decode.form_json_fields == ("payload",)
    assert route.decode.max_json_depth == 16
    assert route.decode.max_decompressed_bytes == 2 * 1024 * 1024


CASES = [
    (
        "verify: {type: hmac, secret: s}",
        "7:17: route acme/hook.verify is missing the required key 'header'",
    ),
    (
        "verify: {type: bearer}",
        "7:17: route acme/hook.verify needs 'secret' (or a list in 'secrets')",
    ),
    (
        "verify: {type: stripe, secret: s, tolerance: soon}",
        "7:54: route acme/hook.verify.tolerance: invalid duration 'soon'",
    ),
    (
        "verify: {type: slack, secret: s, tolerance: 0}",
        "7:53: route acme/hook.verify.tolerance must be longer than zero",
    ),
    (
        "verify: {type: shopify, secret: s, header: X}",
        "7:44: unknown key 'header' in route acme/hook.verify (shopify)",
    ),
    (
        "verify: {type: hmac, header: 'Bad Header', secret: s}",
        "7:38: route acme/hook.verify.header 'Bad Header' is not a valid HTTP header",
    ),
    (
        "verify: {type: hmac, header: X, secret: s, timestamp_unit: us}",
        "7:68: route acme/hook.verify.timestamp_unit is 'us'; expected one of s, ms",
    ),
    (
        "verify: {type: hmac, header: X, secret: s, signed_content: '{{ body'}",
        "7:68: route acme/hook.verify.signed_content: invalid template",
    ),
    (
        "verify: {type: api_key, secret: s}",
        "7:17: route acme/hook.verify needs exactly one of 'header' and 'query'",
    ),
    (
        "verify: {type: api_key, secret: s, header: X, query: k}",
        "7:17: route acme/hook.verify needs exactly one of 'header' and 'query'",
    ),
    (
        "verify: {type: basic_auth, secret: nocolon}",
        "7:44: route acme/hook.verify.secret: each Basic credential is written",
    ),
    (
        "verify: {type: standard_webhooks}",
        "7:17: route acme/hook.verify needs 'secret' (whsec_...) or 'public_key'",
    ),
    (
        "verify: {type: standard_webhooks, secret: whsec_!!!}",
        "7:51: route acme/hook.verify.secret is not base64 after the 'whsec_' prefix",
    ),
    (
        "verify: {type: standard_webhooks, public_keys: [whpk_AAAA]}",
        "7:57: route acme/hook.verify.public_keys[0] decodes to 3 bytes",
    ),
    (
        "verify: {type: twilio, secret: s, public_url: hooks.example.com}",
        "7:55: route acme/hook.verify.public_url is 'hooks.example.com'; expected",
    ),
    (
        "verify: {type: twilio, secret: s, algorithm: md5}",
        "7:54: route acme/hook.verify.algorithm is 'md5'; expected one of sha1, sha256",
    ),
    (
        "verify: {type: ip_allowlist}",
        "7:17: route acme/hook.verify is missing the required key 'allow'",
    ),
    (
        "verify: {type: ip_allowlist, allow: [192.0.2.0/33]}",
        "7:46: route acme/hook.verify.allow has '192.0.2.0/33', which is not an IP",
    ),
    (
        "verify: {type: ip_allowlist, allow: [10.0.0.0/8], proxy_header: X-F}",
        "7:73: route acme/hook.verify.proxy_header needs 'trusted_proxies'",
    ),
    (
        "verify: []",
        "7:17: route acme/hook.verify must list at least one scheme",
    ),
    (
        "verify: [{type: none}, {type: hmac}]",
        "7:32: route acme/hook.verify[1] is missing the required key 'header'",
    ),
    (
        "verify: [{type: none}, 5]",
        "7:32: route acme/hook.verify[1] must be a mapping, not a number",
    ),
]


@pytest.mark.parametrize("verify, expected", CASES, ids=[c[1][6:50] for c in CASES])
def test_verify_mistake_located(tmp_path: Path, verify: str, expected: str) -> None:
    found = problems(
        write(tmp_path, f"path: /hook\nevents: [{{type: acme.x}}]\n{verify}\n")
    )
    assert any(line.startswith(expected) for line in found), found


ROUTE_CASES = [
    (
        "handshakes: {hs: {response: {body: x}}}",
        "8:26: route acme/hook.handshakes.hs is missing the required key 'when'",
    ),
    (
        "handshakes: {hs: {when: 'true', method: delete, response: {}}}",
        "8:49: route acme/hook.handshakes.hs.method is 'delete'",
    ),
    (
        "handshakes: {hs: {when: 'true', token: '{{ query.t }}', response: {}}}",
        "8:48: route acme/hook.handshakes.hs.token needs 'secret'",
    ),
    (
        "handshakes: {hs: {when: 'true', verify: maybe, response: {}}}",
        "8:49: route acme/hook.handshakes.hs.verify must be true",
    ),
    (
        "handshakes: {hs: {when: 'payload.(', response: {}}}",
        "8:33: route acme/hook.handshakes.hs.when: invalid expression",
    ),
    (
        "handshakes: {'bad name': {when: 'true', response: {}}}",
        "8:22: handshake name 'bad name' is invalid",
    ),
    (
        "response: {status: 99}",
        "8:28: route acme/hook.response.status is 99; expected a status code",
    ),
    (
        "response: {status: '{{ 200'}",
        "8:28: route acme/hook.response.status: invalid template",
    ),
    (
        "response: {headers: {'Content-Length': '5'}}",
        "8:30: route acme/hook.response.headers: 'Content-Length' is set by the server",
    ),
    (
        "response: {headers: {'X Bad': '5'}}",
        "8:30: route acme/hook.response.headers: 'X Bad' is not a valid HTTP header",
    ),
    (
        "response: {body: {a: '{{ x'}}",
        "8:30: route acme/hook.response.body.a: invalid template",
    ),
    (
        "response: {stauts: 200}",
        "8:20: unknown key 'stauts' in route acme/hook.response;"
        " did you mean 'status'?",
    ),
    (
        "decode: {max_json_depth: 0}",
        "8:34: route acme/hook.decode.max_json_depth is 0; expected 1 to 512",
    ),
    (
        "decode: {max_json_depth: 2.5}",
        "8:34: route acme/hook.decode.max_json_depth must be whole",
    ),
    (
        "decode: {max_decompressed_size: lots}",
        "8:41: route acme/hook.decode.max_decompressed_size: invalid size 'lots'",
    ),
    (
        "decode: {form_json_fields: [1]}",
        "8:37: route acme/hook.decode.form_json_fields[0] must be a string",
    ),
]


@pytest.mark.parametrize(
    "line, expected", ROUTE_CASES, ids=[c[1][6:50] for c in ROUTE_CASES]
)
def test_route_key_mistake_located(tmp_path: Path, line: str, expected: str) -> None:
    body = f"path: /hook\nevents: [{{type: acme.x}}]\nverify: {{type: none}}\n{line}\n"
    found = problems(write(tmp_path, body))
    assert any(line.startswith(expected) for line in found), found


def test_short_standard_secret_warns(tmp_path: Path) -> None:
    body = EVENTS + "verify: {type: standard_webhooks, secret: whsec_c2hvcnQ=}\n"
    warnings = problems(write(tmp_path, body), "warning")
    assert any("has 5 bytes" in line for line in warnings), warnings


def test_handshake_method_conflicts_with_other_route(tmp_path: Path) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "providers.yaml").write_text(
        textwrap.dedent(
            """\
            providers:
              a:
                routes:
                  one:
                    path: /hook
                    verify: {type: none}
                    events: [{type: a.x}]
                    handshakes:
                      probe: {method: get, when: 'true', response: {}}
                  two:
                    path: /hook
                    method: put
                    verify: {type: none}
                    events: [{type: a.y}]
                    handshakes:
                      probe: {method: get, when: 'true', response: {}}
            """
        )
    )
    found = problems(config_dir)
    assert any(
        "route a/two uses GET /hook, already used by route a/one" in f for f in found
    )


def test_handshake_secret_default_is_reported(tmp_path: Path) -> None:
    body = (
        "verify: {type: none}\n"
        "handshakes:\n"
        "  hs: {when: 'true', token: x, secret: '${HS_TOKEN:-dev}', response: {}}\n"
    )
    route = compile_route(tmp_path, body)
    assert route.defaulted_variables == ("HS_TOKEN",)


def test_shipped_routes_compile() -> None:
    config = load_config(REPO / "config", env={})
    routes = {route.qualified_name: route for route in config.routes}
    assert routes["stripe/events"].verify.type == "stripe"
    assert routes["slack/events"].handshakes[0].name == "url_verification"
    assert routes["slack/interactions"].decode.form_json_fields == ("payload",)
    assert routes["shopify/webhooks"].verify.type == "shopify"
    assert routes["twilio/messages"].response is not None
    assert routes["acme/events"].verify.type == "standard_webhooks"
    for name in ("stripe/events", "slack/events", "shopify/webhooks", "acme/events"):
        assert routes[name].defaulted_variables, name
