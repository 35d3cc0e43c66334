"""The egress guard: address families, pinned connections, allowlists.

The guard's own tests use a stub resolver, because a test cannot make a real
DNS name resolve to an address of its choosing. The gateway tests use real
processes and the real resolver, which resolves `localhost` from the hosts file.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.delivery.egress import EgressPolicy, classify_address, create_http_client
from gateway.exceptions import EgressRejected
from tests.delivery.receivers import (
    Receiver,
    make_certificates,
    send_event,
    server_tls,
    start_test_gateway,
    wait_delivery,
)
from tests.support import Gateway


@pytest.mark.parametrize(
    "address, reason",
    [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.9", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("169.254.10.20", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("224.0.0.251", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("169.254.169.254", "a cloud metadata address"),
        ("fd00:ec2::254", "a cloud metadata address"),
        ("0.0.0.0", "an unspecified address"),
        ("100.64.0.1", "a non-public address"),
        ("::ffff:10.0.0.1", "a private address"),
        ("2002:7f00:1::", "a loopback address"),
        ("64:ff9b::a9fe:a9fe", "a cloud metadata address"),
        ("93.184.216.34", None),
        ("2606:2800:220:1::1", None),
    ],
)
def test_classify_address_families(address: str, reason: str | None) -> None:
    assert classify_address(ipaddress.ip_address(address)) == reason


def test_allow_private_keeps_metadata_rejected() -> None:
    """MFO_ALLOW_PRIVATE_NETWORKS allows private targets but not metadata endpoints."""
    policy = EgressPolicy(allow_private=True)

    assert policy.rejection(ipaddress.ip_address("10.0.0.1")) is None
    assert policy.rejection(ipaddress.ip_address("169.254.169.254")) is not None


def test_allowlist_allows_only_its_networks() -> None:
    policy = EgressPolicy(allowlist=(ipaddress.ip_network("10.20.0.0/16"),))

    assert policy.rejection(ipaddress.ip_address("10.20.30.40")) is None
    assert policy.rejection(ipaddress.ip_address("::ffff:10.20.30.40")) is None
    assert policy.rejection(ipaddress.ip_address("10.21.0.1")) == "a private address"


class StubResolver:
    """Return fixed addresses for every lookup, and count the lookups."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if not self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers


def post(client: httpx.AsyncClient, url: str) -> httpx.Response:
    async def send() -> httpx.Response:
        async with client:
            return await client.post(url, content=b"{}")

    return asyncio.run(send())


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


def test_name_resolving_private_rejected(receiver: Receiver) -> None:
    """A public-looking name that resolves to a private address is rejected."""
    resolver = StubResolver("10.9.8.7")
    client = create_http_client(EgressPolicy(), resolver)
    with pytest.raises(
        EgressRejected, match=re.escape("resolves to 10.9.8.7, a private address")
    ):
        post(client, f"http://receiver.test:{receiver.port}/hooks")

    assert receiver.arrivals == []


def test_mixed_answer_rejected(receiver: Receiver) -> None:
    """One forbidden address among public ones rejects the whole name."""
    resolver = StubResolver("93.184.216.34", "127.0.0.1")
    client = create_http_client(EgressPolicy(), resolver)
    with pytest.raises(EgressRejected, match="a loopback address"):
        post(client, f"http://receiver.test:{receiver.port}/hooks")


def test_connects_to_checked_address(receiver: Receiver) -> None:
    """The connection goes to the address checked, with the URL's name as Host."""
    resolver = StubResolver("127.0.0.1")
    policy = EgressPolicy(allowlist=(ipaddress.ip_network("127.0.0.1/32"),))
    client = create_http_client(policy, resolver)
    response = post(client, f"http://receiver.test:{receiver.port}/hooks")

    assert response.status_code == 200
    assert resolver.lookups == ["receiver.test"]
    assert receiver.arrivals[0].headers["host"] == f"receiver.test:{receiver.port}"


def test_tls_uses_url_name(tmp_path: Path) -> None:
    """TLS to a pinned address still sends SNI and checks the certificate by name."""
    ca, certificate, key = make_certificates(tmp_path, "receiver.test")
    receiver = Receiver(tls=server_tls(certificate, key)).start()
    trust = ssl.create_default_context(cafile=str(ca))
    policy = EgressPolicy(allowlist=(ipaddress.ip_network("127.0.0.1/32"),))
    try:
        named = create_http_client(policy, StubResolver("127.0.0.1"), ssl_context=trust)
        response = post(named, f"https://receiver.test:{receiver.port}/hooks")
        by_address = create_http_client(policy, ssl_context=trust)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            post(by_address, f"https://127.0.0.1:{receiver.port}/hooks")
    finally:
        receiver.stop()

    assert response.status_code == 200
    assert len(receiver.arrivals) == 1


def test_dns_failure_is_connect_error() -> None:
    client = create_http_client(EgressPolicy(), StubResolver())
    with pytest.raises(
        httpx.ConnectError, match=re.escape("DNS lookup of 'missing.test' failed")
    ):
        post(client, "http://missing.test/hooks")


def config_subscriptions(*urls: str) -> str:
    lines = ["subscriptions:"]
    for index, url in enumerate(urls):
        lines += [
            f"  target{index}:",
            f"    url: {url}",
            f"    events: [test.egress{index}]",
            "    retry: {schedule: []}",
        ]
    return "\n".join(lines) + "\n"


def pipeline_calling(url: str) -> str:
    return (
        "pipelines:\n  call_out:\n    on: test.pipeline\n    steps:\n"
        "      - name: call\n"
        f"        http: {{method: POST, url: '{url}', json: {{a: 1}}}}\n"
    )


def wait_run(gateway: Gateway, event_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = gateway.api("GET", f"/api/events/{event_id}").json()["runs"]
        if runs and runs[0]["status"] in ("succeeded", "failed"):
            return dict(runs[0])
        time.sleep(0.1)
    raise AssertionError(f"the run of {event_id} did not finish")


def test_gateway_rejects_private_targets(tmp_path: Path, receiver: Receiver) -> None:
    """Without an allowlist, deliveries and http steps to local addresses fail."""
    subscriptions = config_subscriptions(
        receiver.url, f"http://localhost:{receiver.port}/hooks"
    )
    gateway = start_test_gateway(
        tmp_path,
        env={"MFO_ALLOW_PRIVATE_NETWORKS": "0"},
        subscriptions=subscriptions,
        pipelines=pipeline_calling(receiver.url),
    )
    try:
        by_address = wait_delivery(
            gateway, send_event(gateway, "test.egress0"), "failed"
        )
        by_name = wait_delivery(gateway, send_event(gateway, "test.egress1"), "failed")
        run = wait_run(gateway, send_event(gateway, "test.pipeline"))
        refused = gateway.api(
            "POST",
            "/api/notifications/subscribe",
            json={"url": "http://169.254.169.254/latest", "events": ["x"]},
        )
    finally:
        gateway.stop()

    assert "resolves to 127.0.0.1, a loopback address" in by_address["last_error"]
    assert "host 'localhost' resolves to 127.0.0.1" in by_name["last_error"]
    assert run["status"] == "failed"
    assert "a loopback address" in run["error"]
    assert refused.status_code == 400
    assert "a cloud metadata address" in refused.json()["errors"][0]["message"]
    assert receiver.arrivals == []


def test_gateway_allowlist_delivers(tmp_path: Path, receiver: Receiver) -> None:
    """An allowlisted network is reached directly; other private ones stay rejected."""
    gateway = start_test_gateway(
        tmp_path,
        env={
            "MFO_ALLOW_PRIVATE_NETWORKS": "0",
            "MFO_EGRESS_ALLOWLIST": "127.0.0.1/32",
        },
        subscriptions=config_subscriptions(receiver.url),
    )
    try:
        delivered = wait_delivery(
            gateway, send_event(gateway, "test.egress0"), "succeeded"
        )
        other = gateway.api(
            "POST",
            "/api/notifications/subscribe",
            json={"url": "http://10.0.0.1/hooks", "events": ["x"]},
        )
    finally:
        gateway.stop()

    assert delivered["attempts_log"][0]["status_code"] == 200
    assert len(receiver.arrivals) == 1
    assert other.status_code == 400
