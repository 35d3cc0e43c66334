"""Refuse outgoing requests to addresses inside the gateway's own network.

A subscriber URL is chosen by whoever creates the subscription, so without
this guard the gateway could be used to reach loopback services, private
networks or a cloud metadata endpoint.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from gateway.exceptions import EgressRejected

_METADATA = (
    ipaddress.ip_network("169.254.169.254/32"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return _forbidden(address.ipv4_mapped)
    if any(address in network for network in _METADATA):
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified or address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    return None


async def check_url(url: str, allow_private: bool) -> None:
    """Resolve the URL's host and raise `EgressRejected` if any address is forbidden."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EgressRejected(f"URL {url!r} is not an http or https URL with a host")
    if allow_private:
        return
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise EgressRejected(f"cannot resolve host {host!r}: {exc}") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        reason = _forbidden(address)
        if reason:
            raise EgressRejected(
                f"host {host!r} resolves to {address}, {reason}; set"
                " MFO_ALLOW_PRIVATE_NETWORKS=1 to allow private targets"
            )
