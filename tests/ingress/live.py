"""A running gateway with the shipped routes plus test routes, and signers for them.

The test routes cover what the shipped providers do not: GET and plain-text
handshakes, challenge-response with an HMAC, Basic auth, Bearer tokens,
query-string keys, an address allowlist behind a proxy, small size and
depth limits and templated responses.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from gateway.config.loader import load_config
from gateway.config.model import GatewayConfig, RouteConfig
from gateway.ingress.request import WebhookRequest
from gateway.ingress.schemes import build_verifier
from tests.conftest import SECRETS, _drop_database, backend_env
from tests.support import REPO, Gateway, start_gateway

LIVE_SECRETS = {
    **SECRETS,
    "STRIPE_WEBHOOK_SECRET": "whsec_test-stripe-secret",
    "SLACK_SIGNING_SECRET": "test-slack-signing-secret",
    "SHOPIFY_WEBHOOK_SECRET": "test-shopify-secret",
    "TWILIO_AUTH_TOKEN": "test-twilio-auth-token",
    "ACME_WEBHOOK_SECRET": "whsec_dGVzdC1hY21lLXNlY3JldC10ZXN0LWFjbWUtc2VjcmV0",
    "META_APP_SECRET": "test-meta-app-secret",
    "META_VERIFY_TOKEN": "test-meta-verify-token",
    "ZOOM_SECRET_TOKEN": "test-zoom-secret-token",
}

# Inserted under `providers:` of the shipped file.
TEST_PROVIDERS = """
  meta:
    routes:
      events:
        path: /test/meta
        verify:
          type: hmac
          header: X-Hub-Signature-256
          prefix: "sha256="
          secret: ${META_APP_SECRET}
        handshakes:
          subscribe:
            method: get
            verify: false
            when: query['hub.mode'] == 'subscribe'
            token: "{{ query['hub.verify_token'] }}"
            secret: ${META_VERIFY_TOKEN}
            response:
              body: "{{ query['hub.challenge'] }}"
        events:
          - type: meta.{{ payload.object }}
  graph:
    routes:
      notifications:
        path: /test/graph
        verify: {type: bearer, secret: graph-token}
        handshakes:
          validation:
            verify: false
            when: "'validationToken' in query"
            response:
              headers: {content-type: text/plain}
              body: "{{ query.validationToken }}"
        events:
          - type: graph.notification
  zoom:
    routes:
      events:
        path: /test/zoom
        verify:
          type: hmac
          header: x-zm-signature
          prefix: "v0="
          signed_content: "v0:{{ timestamp }}:{{ body }}"
          timestamp_header: x-zm-request-timestamp
          secret: ${ZOOM_SECRET_TOKEN}
        handshakes:
          url_validation:
            when: payload.event == 'endpoint.url_validation'
            secret: ${ZOOM_SECRET_TOKEN}
            response:
              body:
                plainToken: "{{ payload.payload.plainToken }}"
                encryptedToken: "{{ hmac(payload.payload.plainToken) }}"
        events:
          - type: zoom.{{ payload.event }}
  lab:
    routes:
      basic:
        path: /test/basic
        verify: {type: basic_auth, secrets: ["acme:new-pass", "acme:old-pass"]}
        events: [{type: lab.basic}]
      query_key:
        path: /test/query-key
        verify: {type: api_key, query: key, secret: query-secret}
        events: [{type: lab.query, data: "{{ query }}"}]
      proxied:
        path: /test/proxied
        verify:
          - type: ip_allowlist
            allow: [192.0.2.0/24]
            proxy_header: X-Forwarded-For
            trusted_proxies: [127.0.0.1/32]
          - {type: header_secret, header: X-Token, secret: proxied-token}
        events: [{type: lab.proxied}]
      open:
        path: /test/open
        verify: {type: none}
        idempotency_key: "{{ headers['x-id'] }}"
        events: [{type: lab.open, data: "{{ {'payload': payload, 'q': query} }}"}]
      numbers:
        path: /test/numbers
        verify: {type: none}
        events: [{type: lab.number, data: {x: "{{ payload.x | float }}"}}]
      small:
        path: /test/small
        max_body_size: 1kib
        verify: {type: none}
        events: [{type: lab.small}]
      shallow:
        path: /test/shallow
        verify: {type: none}
        decode: {max_json_depth: 4}
        events: [{type: lab.shallow}]
      reply:
        path: /test/reply
        verify: {type: none}
        idempotency_key: "{{ payload.id }}"
        events: [{type: lab.reply}]
        response:
          status: "{{ 200 if duplicate else 201 }}"
          headers: {X-Event-Id: "{{ event_id }}"}
          body: {received: "{{ event_id }}", again: "{{ duplicate }}"}
"""
# The global body limit; routes without max_body_size use it.
GLOBAL_LIMIT = "settings:\n  max_body_size: 64kib\n"


def write_live_config(root: Path) -> Path:
    """Write the shipped providers plus TEST_PROVIDERS into `root/config`."""
    text = (REPO / "config" / "providers.yaml").read_text()
    text = text.replace("\npipelines:\n", TEST_PROVIDERS + "\npipelines:\n", 1)
    config_dir = root / "config"
    config_dir.mkdir(parents=True)
    (config_dir / "providers.yaml").write_text(GLOBAL_LIMIT + text)
    shutil.copytree(REPO / "schemas", root / "schemas")
    return config_dir


@dataclass
class LiveGateway:
    """A running gateway, its compiled config and the URL of its database."""

    server: Gateway
    config: GatewayConfig
    database_url: str

    def route(self, qualified_name: str) -> RouteConfig:
        provider, _, name = qualified_name.partition("/")
        route = self.config.route(provider, name)
        assert route is not None, qualified_name
        return route

    def url(self, qualified_name: str, query: str = "") -> str:
        url = self.server.base_url + self.route(qualified_name).path
        return f"{url}?{query}" if query else url

    def sign(
        self,
        qualified_name: str,
        body: bytes,
        headers: dict[str, str],
        query: str = "",
    ) -> tuple[str, dict[str, str]]:
        """Sign a request as the route's provider would; return its URL and headers."""
        route = self.route(qualified_name)
        unsigned = WebhookRequest(body, headers, url=self.url(qualified_name, query))
        signed = build_verifier(route.verify).sign_request(unsigned)
        return signed.url, dict(signed.headers)

    def stored_requests(self, route: str) -> int:
        provider, _, name = route.partition("/")
        with psycopg.connect(self.database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM mfo_requests WHERE provider = %s AND route = %s",
                (provider, name),
            ).fetchone()
        assert row is not None
        return int(row[0])


@contextmanager
def live_gateway(root: Path) -> Iterator[LiveGateway]:
    """Start a gateway on the local PostgreSQL server; CI fails without one."""
    env, database = backend_env("postgres")
    assert database is not None
    config_dir = write_live_config(root)
    config = load_config(config_dir, env=LIVE_SECRETS)
    server = start_gateway(config_dir, root / "data", {**env, **LIVE_SECRETS})
    try:
        yield LiveGateway(server, config, env["MFO_DATABASE_URL"])
    finally:
        server.stop()
        _drop_database(database)
