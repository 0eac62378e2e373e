"""The client's address behind reverse proxies PenPay trusts.

Behind a load balancer the TCP peer is the balancer: the Daraja callback
allow-list would refuse Safaricom (or, with the balancer allowed, accept
anyone who reaches it), and every client would share one per-IP limit. A
proxy appends the address it saw to ``X-Forwarded-For``. Read from the
right, past the proxies in ``PENPAY_TRUSTED_PROXIES``, the first address is
one no trusted hop could have been handed by the client, so it is the
client's. A peer that is not a trusted proxy is the client itself, whatever
headers it sends.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> Address | None:
    """``text`` as an IP address, an IPv4-mapped IPv6 one as the IPv4 it maps; None if invalid.

    A dual-stack listener reports an IPv4 peer as ``::ffff:a.b.c.d``, which is
    inside no IPv4 network: unmapped, Safaricom's addresses match as listed.
    """
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def in_any(address: Address, networks: Iterable[Network]) -> bool:
    return any(address in network for network in networks)


def parse_networks(text: str) -> tuple[Network, ...]:
    """``"10.0.0.0/8, 192.0.2.7"`` as networks; a malformed entry raises ``ValueError``."""
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()
    )


class TrustedProxies:
    """Replace ``scope["client"]`` with the forwarded client when the peer is a trusted proxy."""

    def __init__(self, app: ASGIApp, networks: Iterable[Network] = ()) -> None:
        self.app = app
        self.networks = tuple(networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.networks and scope["type"] in ("http", "websocket"):
            peer = scope.get("client")
            if peer and self._trusted(peer[0]):
                client = self._client(_forwarded_for(scope))
                if client is not None:
                    scope = {**scope, "client": (client, 0)}
        await self.app(scope, receive, send)

    def _trusted(self, peer: str) -> bool:
        address = parse_address(peer)
        return address is not None and in_any(address, self.networks)

    def _client(self, hops: list[str]) -> str | None:
        """The rightmost hop that is not a trusted proxy; None if the list is unusable.

        An entry that is not an address ends the walk: what lies left of it
        cannot be trusted, and the proxy itself stays the client.
        """
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                return None
            if not in_any(address, self.networks):
                return str(address)
        return None


def _forwarded_for(scope: Scope) -> list[str]:
    """Every ``X-Forwarded-For`` entry, in order, across repeated headers."""
    hops: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            hops += [hop.strip() for hop in value.decode("latin-1").split(",")]
    return hops
