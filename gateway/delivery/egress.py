"""Reject outgoing requests to addresses inside the gateway's own network.

Subscriber URLs come from API clients and pipeline step URLs from the
config, so without this guard the gateway could be used to reach loopback services,
private networks or a cloud metadata endpoint.

The check runs where the connection is made. `GuardedBackend` is the network
backend of the HTTP client's connection pool: it resolves the host once,
checks every address, and connects to one of the checked addresses, so a DNS
answer cannot change between check and connect. The pool still knows the
connection by the URL's host name, so TLS SNI, certificate verification and
the Host header use that name, and a connection is never reused for a
different name.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from gateway.exceptions import EgressRejected
from gateway.settings import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Resolve a host name and port to IP address strings.
Resolver = Callable[[str, int], Awaitable[list[str]]]

METADATA_REASON = "a cloud metadata address"
_METADATA = tuple(
    ipaddress.ip_network(network)
    for network in (
        "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack instance metadata
        "169.254.170.2/32",  # AWS ECS task metadata
        "fd00:ec2::254/128",  # AWS instance metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud instance metadata
        "168.63.129.16/32",  # Azure platform endpoint (a public address)
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Connecting tries at most this many checked addresses of one host.
_MAX_ADDRESSES = 4


def classify_address(address: Address) -> str | None:
    """Name the kind of non-public address this is, or return None for a public one.

    IPv6 forms that carry an IPv4 address (mapped, 6to4, Teredo, NAT64) are
    judged by the IPv4 address they carry.
    """
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return classify_address(embedded)
    if any(address in network for network in _METADATA):
        return METADATA_REASON
    checks = (
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_unspecified, "an unspecified address"),
        (address.is_private, "a private address"),
        (address.is_reserved, "a reserved address"),
        (not address.is_global, "a non-public address"),
    )
    for matched, reason in checks:
        if matched:
            return reason
    return None


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class EgressPolicy:
    """The rule that decides which addresses outgoing requests may reach.

    Public addresses are always allowed. `allow_private` allows every
    non-public address except cloud metadata endpoints; `allowlist` allows
    the networks it names, metadata endpoints included.
    """

    allow_private: bool = False
    allowlist: tuple[Network, ...] = ()

    def rejection(self, address: Address) -> str | None:
        """Return why `address` may not be reached, or None when it may."""
        candidates = [address]
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            candidates.append(embedded)
        for candidate in candidates:
            if any(candidate in network for network in self.allowlist):
                return None
        reason = classify_address(address)
        if reason is None or (self.allow_private and reason != METADATA_REASON):
            return None
        return reason

    def check(self, host: str, addresses: Iterable[Address]) -> None:
        """Raise `EgressRejected` if any address of `host` may not be reached."""
        for address in addresses:
            reason = self.rejection(address)
            if reason is not None:
                raise EgressRejected(
                    f"host {host!r} resolves to {address}, {reason}; add its network"
                    " to MFO_EGRESS_ALLOWLIST or set MFO_ALLOW_PRIVATE_NETWORKS=1"
                    " to allow it"
                )


def egress_policy(settings: Settings) -> EgressPolicy:
    """Build the policy set by MFO_ALLOW_PRIVATE_NETWORKS and MFO_EGRESS_ALLOWLIST."""
    return EgressPolicy(settings.allow_private_networks, settings.egress_allowlist)


def check_url_syntax(url: str) -> None:
    """Raise `EgressRejected` unless `url` is an http or https URL with a host."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise EgressRejected(f"URL {url!r} is invalid") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EgressRejected(f"URL {url!r} is not an http or https URL with a host")


def check_literal_target(url: str, policy: EgressPolicy) -> None:
    """Reject a URL whose host is a forbidden IP address or a `localhost` name.

    This needs no DNS, so it suits checking input. Other names are checked
    when a request connects.
    """
    check_url_syntax(url)
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        policy.check(host, [ipaddress.ip_address("127.0.0.1")])
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    policy.check(host, [address])


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve a host name with the operating system's resolver."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]).split("%")[0] for info in infos]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the policy allows."""

    def __init__(self, policy: EgressPolicy, resolver: Resolver | None = None) -> None:
        self.policy = policy
        self.resolver = resolver or system_resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        self.policy.check(host, addresses)
        error: Exception | None = None
        for address in addresses[:_MAX_ADDRESSES]:
            try:
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error

    async def _resolve(
        self, host: str, port: int, timeout: float | None
    ) -> list[Address]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        try:
            answers = await asyncio.wait_for(self.resolver(host, port), timeout)
        except TimeoutError:
            raise httpcore.ConnectTimeout(
                f"DNS lookup of {host!r} timed out after {timeout}s"
            ) from None
        except OSError as exc:
            raise httpcore.ConnectError(
                f"DNS lookup of {host!r} failed: {exc}"
            ) from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(a) for a in answers))
        if not addresses:
            raise httpcore.ConnectError(f"DNS lookup of {host!r} returned no address")
        return addresses

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise EgressRejected(f"Unix socket {path!r} is not an allowed target")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def create_http_client(
    policy: EgressPolicy,
    resolver: Resolver | None = None,
    limits: httpx.Limits | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """Build an HTTP client whose every connection passes the egress guard.

    Redirects are off, and proxies from the environment are not used because
    a proxy would make the connection on the guard's behalf. Certificates are
    verified against `ssl_context`, by default the CA bundle httpx uses
    (SSL_CERT_FILE or SSL_CERT_DIR when set, else certifi).
    """
    limits = limits or httpx.Limits(max_connections=64, max_keepalive_connections=32)
    transport = httpx.AsyncHTTPTransport(limits=limits)
    # NOTE: httpx (0.27 and 0.28) has no public way to pass a network backend,
    # so the transport's connection pool is replaced by one built the same way.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context or httpx.create_ssl_context(),
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=GuardedBackend(policy, resolver),
    )
    return httpx.AsyncClient(transport=transport, follow_redirects=False)


class ClientShards:
    """Several guarded HTTP clients with small pools, taken in turn.

    Each time a request starts or ends, httpcore's pool walks all of its
    connections, and once more for each request waiting for one
    (`_assign_requests_to_connections`), so one client slows as requests in
    flight grow. In `bench/run.py`, 16 concurrent POSTs to one receiver made
    about 650/s through one client and about 1,700/s spread over four. Each
    client keeps its own connections, so keep-alive still works per shard.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        shards: int = 4,
        connections_per_shard: int = 16,
        resolver: Resolver | None = None,
    ) -> None:
        limits = httpx.Limits(
            max_connections=connections_per_shard,
            max_keepalive_connections=max(1, connections_per_shard // 2),
        )
        self.clients = [
            create_http_client(policy, resolver, limits) for _ in range(shards)
        ]
        self._turns = itertools.cycle(self.clients)

    def next(self) -> httpx.AsyncClient:
        return next(self._turns)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
