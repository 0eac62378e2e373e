"""Settings of PenPay's Daraja client. Every limit is named with its unit."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DarajaClientConfig:
    """Credentials, shortcodes, limits and timings for :class:`DarajaClient`.

    ``security_credential`` is the initiator password already RSA-encrypted
    with M-Pesa's certificate and base64-encoded (protocols.md 1.8); it is
    reusable across requests, so it is computed once outside the client.
    """

    base_url: str
    consumer_key: str
    consumer_secret: str
    stk_shortcode: str
    stk_passkey: str
    b2c_shortcode: str = ""
    initiator_name: str = ""
    security_credential: str = ""
    transaction_type: str = "CustomerPayBillOnline"
    stk_party_b: str | None = None  # till number for CustomerBuyGoodsOnline
    b2c_command_id: str = "BusinessPayment"
    identifier_type: str = "4"  # organisation shortcode

    request_timeout_s: float = 30.0
    token_refresh_after_s: float = 3000.0  # refresh at 50 min of a 60-min token
    max_concurrent_requests: int = 10
    query_attempts_max: int = 3  # queries and token requests only; never money calls
    retry_backoff_s: float = 1.0
    retry_backoff_max_s: float = 8.0
    breaker_failure_threshold: int = 5
    breaker_cooldown_s: float = 30.0

    stk_min_kes: int = 1
    stk_max_kes: int = 250_000
    b2c_min_kes: int = 10
    b2c_max_kes: int = 250_000

    def __post_init__(self) -> None:
        if self.query_attempts_max < 1 or self.max_concurrent_requests < 1:
            raise ValueError("query_attempts_max and max_concurrent_requests must be >= 1")
        if self.request_timeout_s <= 0 or self.token_refresh_after_s <= 0:
            raise ValueError("timeouts must be positive")
