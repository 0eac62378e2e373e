"""Who the client is behind a reverse proxy: believed only from a trusted one."""

from __future__ import annotations

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from penpay.http.callbacks import SAFARICOM_CALLBACK_IPS, SourceAllowList
from penpay.http.proxies import TrustedProxies, parse_address, parse_networks

PROXY = "10.0.0.5"
SAFARICOM = "196.201.214.200"


async def _echo_client(scope: Scope, receive: Receive, send: Send) -> None:
    client = scope["client"][0].encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": client})


async def _seen(peer: str, *forwarded: str, trusted: str = "10.0.0.0/24") -> str:
    app = TrustedProxies(_echo_client, parse_networks(trusted))
    transport = httpx.ASGITransport(app, client=(peer, 40000))
    headers = [("x-forwarded-for", value) for value in forwarded]
    async with httpx.AsyncClient(transport=transport, base_url="http://penpay") as client:
        return (await client.get("/", headers=headers)).text


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        (PROXY, [SAFARICOM], SAFARICOM),  # the proxy says who it saw
        (PROXY, [f"6.6.6.6, {SAFARICOM}"], SAFARICOM),  # what the client claimed is ignored
        (PROXY, [SAFARICOM, "10.0.0.6"], SAFARICOM),  # past a second trusted hop, repeated header
        (PROXY, [], PROXY),  # nothing forwarded: the proxy is all we know
        (PROXY, ["not-an-address"], PROXY),  # garbage ends the walk
        (PROXY, ["10.0.0.7"], PROXY),  # only trusted hops: the proxy stays the client
        ("203.0.113.9", [SAFARICOM], "203.0.113.9"),  # an untrusted peer cannot claim anyone
        (f"::ffff:{PROXY}", [SAFARICOM], SAFARICOM),  # a dual-stack listener's IPv4 peer
    ],
)
async def test_the_client_is_the_first_untrusted_hop(
    peer: str, forwarded: list[str], client: str
) -> None:
    assert await _seen(peer, *forwarded) == client


async def test_with_no_trusted_proxy_no_header_is_read() -> None:
    assert await _seen(PROXY, SAFARICOM, trusted="") == PROXY


def test_ipv4_mapped_addresses_are_their_ipv4() -> None:
    assert str(parse_address(f"::ffff:{SAFARICOM}")) == SAFARICOM
    assert parse_address("nonsense") is None


def test_a_malformed_network_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/8, 300.1.1.1")


def test_the_callback_allow_list_matches_ipv4_mapped_peers() -> None:
    allow = SourceAllowList(SAFARICOM_CALLBACK_IPS)
    assert allow.allows(SAFARICOM) and allow.allows(f"::ffff:{SAFARICOM}")
    assert not allow.allows("::ffff:203.0.113.9") and not allow.allows("nonsense")
