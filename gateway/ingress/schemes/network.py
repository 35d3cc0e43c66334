"""Accept requests only from listed networks, seen through trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from gateway.exceptions import Forbidden
from gateway.ingress.request import WebhookRequest
from gateway.ingress.schemes.base import Scheme

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> IPAddress | None:
    """Parse an address as proxies write it: bare, bracketed, or with a port."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def _forwarded_entry(entry: str) -> str:
    """Return the address in one proxy header entry.

    `X-Forwarded-For` entries are bare addresses; RFC 7239 `Forwarded`
    entries are parameters such as `for=192.0.2.60;proto=https`.
    """
    if "=" not in entry:
        return entry
    for parameter in entry.split(";"):
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "for":
            return value
    return ""


def _within(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    return any(address in network for network in networks)


class SourceAllowlist(Scheme):
    """Reject a request unless its client address is inside an allowed network.

    The client is the peer of the connection, unless the peer is a trusted
    proxy and `proxy_header` is set. Then the header's addresses (such as
    `X-Forwarded-For: client, proxy1, proxy2`) are read from right to left,
    skipping trusted proxies, and the first address that is not one is the
    client. Entries left of it could have been written by that client, so
    they are never believed.
    """

    def __init__(
        self,
        allow: tuple[str, ...],
        proxy_header: str | None = None,
        trusted_proxies: tuple[str, ...] = (),
    ) -> None:
        self.allow = [ipaddress.ip_network(n, strict=False) for n in allow]
        self.proxy_header = proxy_header.lower() if proxy_header else None
        self.trusted = [ipaddress.ip_network(n, strict=False) for n in trusted_proxies]

    def client_address(self, request: WebhookRequest) -> IPAddress:
        peer = parse_address(request.client_host or "")
        if peer is None:
            raise Forbidden("the client address is unknown, so it cannot be allowed")
        if self.proxy_header is None or not _within(peer, self.trusted):
            return peer
        forwarded = request.header(self.proxy_header)
        if forwarded is None:
            return peer
        client = peer
        for entry in reversed(forwarded.split(",")):
            address = parse_address(_forwarded_entry(entry))
            if address is None:
                raise Forbidden(
                    f"header {self.proxy_header!r} holds {entry.strip()[:60]!r},"
                    " which is not an IP address"
                )
            client = address
            if not _within(address, self.trusted):
                break
        return client

    def verify_request(self, request: WebhookRequest) -> None:
        client = self.client_address(request)
        if not _within(client, self.allow):
            raise Forbidden(f"requests from {client} are not allowed on this route")

    def sign_request(self, request: WebhookRequest) -> WebhookRequest:
        return request
