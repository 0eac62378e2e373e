"""The callback URLs PenPay hands Daraja pass Daraja's CallBackURL checks.

Daraja answers ``400.002.02 Invalid CallBackURL`` to a URL holding "M-PESA",
"mpesa", "Safaricom", "exe", "exec", "cmd", "sql" or "query" in any case, and
refused a host with uppercase letters (protocols.md 1.11): one such URL and
no payment can be made. The URLs once held ``/callbacks/mpesa/`` and
``?query=status``, and a base64url token spelled "exe", "cmd" or "sql" in
about 6 of 2,000 transactions.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

from penpay.actors.callbacks import CallbackTokens
from penpay.actors.mpesa import CallbackUrls

FORBIDDEN = re.compile(r"m-?pesa|safaricom|exe|exec|cmd|sql|query", re.IGNORECASE)
TOKENS = 3_000
HEX_TOKEN = re.compile(r"^[dw][0-9a-f-]{36}\.[0-9a-f]{48}$")

#: Issued by the base64url implementation under ``b"k" * 32``, before hex.
LEGACY = {
    "d0193a000-0000-7000-8000-000000000001.yNQPm9xiv4Ii9bUlESf3iCG9_DPCz0fQ":
        ("deposit", "0193a000-0000-7000-8000-000000000001"),
    "w0193a000-0000-7000-8000-000000000002.0A2p9jJ5pkRaceWwrI7_nNFUnvWiPIeW":
        ("withdrawal", "0193a000-0000-7000-8000-000000000002"),
}  # fmt: skip


def _builders(urls: CallbackUrls) -> list[Callable[[str], str]]:
    """Every kind of URL ``CallbackUrls`` can produce."""
    return [urls.stk, urls.b2c_result, urls.b2c_timeout, urls.b2c_status_result,
            urls.b2c_status_timeout]  # fmt: skip


def _random_tokens(count: int) -> Iterator[str]:
    """Tokens for random transactions, both kinds, under random keys."""
    rng = random.Random(1_111)
    keys = [CallbackTokens(rng.randbytes(32)) for _ in range(8)]
    for n in range(count):
        kind = "deposit" if n % 2 else "withdrawal"
        yield rng.choice(keys).issue(kind, str(uuid.UUID(int=rng.getrandbits(128), version=4)))


@pytest.mark.parametrize(
    "base", ["https://pay.example.com", "https://Pay.Example.COM:8443", "HTTP://127.0.0.1:8000"]
)
def test_every_callback_url_is_lowercase_and_free_of_refused_words(base: str) -> None:
    urls = CallbackUrls(base)
    for token in _random_tokens(TOKENS):
        for build in _builders(urls):
            url = build(token)
            parts = urlsplit(url)
            assert url == url.lower(), url
            assert not FORBIDDEN.search(url), url
            assert parts.scheme in ("http", "https") and not parts.query, url


def test_new_tokens_are_lowercase_hex() -> None:
    for token in _random_tokens(200):
        assert HEX_TOKEN.match(token), token


def test_status_answers_are_marked_by_path_not_by_a_query_string() -> None:
    urls = CallbackUrls("https://pay.example.com")
    assert urls.b2c_status_result("t") == "https://pay.example.com/api/v1/callbacks/b2c/status/result/t"
    assert urls.b2c_status_timeout("t").endswith("/api/v1/callbacks/b2c/status/timeout/t")
    assert len({build("t") for build in _builders(urls)}) == len(_builders(urls))


def test_a_token_issued_in_the_old_form_still_verifies() -> None:
    tokens = CallbackTokens(b"k" * 32)
    for token, expected in LEGACY.items():
        assert tokens.verify(token) == expected


def test_an_old_form_token_is_still_bound_to_its_key_kind_and_transaction() -> None:
    token = next(iter(LEGACY))
    head, _, mac = token.partition(".")
    other_tx = head[:-1] + "2"
    forgeries = ("w" + token[1:], f"{other_tx}.{mac}", token[:-1], token + "A",
                 f"{head}.{mac.upper()}")  # fmt: skip
    for forged in forgeries:
        assert CallbackTokens(b"k" * 32).verify(forged) is None, forged
    assert CallbackTokens(b"x" * 32).verify(token) is None


def test_a_non_ascii_token_is_refused_not_an_error() -> None:
    head = next(iter(LEGACY)).partition(".")[0]
    assert CallbackTokens(b"k" * 32).verify(f"{head}.é") is None
