"""Settings of the Daraja sandbox: credentials, shortcodes and timings.

The defaults are Safaricom's *public* sandbox test values (protocols.md 1.1),
so PenPay configured for the real sandbox also works against this one.
Every delay is in seconds of trio time, so ``trio.testing.MockClock`` drives
them in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KES_CENTS = 100


@dataclass(frozen=True, slots=True)
class Credentials:
    """One Daraja app: the consumer key/secret pair OAuth is minted for."""

    consumer_key: str
    consumer_secret: str


@dataclass(frozen=True, slots=True)
class DarajaSandboxConfig:
    """Everything the simulated M-Pesa needs to know about its merchants."""

    credentials: tuple[Credentials, ...] = (
        Credentials("sandbox-consumer-key", "sandbox-consumer-secret"),
    )
    # Lipa na M-Pesa Online (STK) shortcode and passkey: public test values.
    stk_shortcode: str = "174379"
    stk_passkey: str = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
    # B2C / Transaction Status / Account Balance shortcode and initiator.
    b2c_shortcode: str = "600992"
    initiator_name: str = "testapi"
    # None: accept any non-empty SecurityCredential (the sandbox has no private
    # key to decrypt it). A string: require exactly that value (else 2001).
    security_credential: str | None = None

    token_ttl_s: float = 3599.0
    # How far an STK Timestamp, read as Nairobi time, may be from the sandbox's
    # clock (protocols.md 1.3: a server in another zone gets "Invalid Timestamp").
    # None: any real calendar time.
    timestamp_tolerance_s: float | None = 900.0
    # Default customer behaviour delay (protocols.md 1.13: 15-30 s in reality).
    default_customer_delay_s: float = 20.0
    default_customer_balance_cents: int = 500_000 * KES_CENTS
    # How much later than the customer's answer a "late" callback arrives.
    late_callback_delay_s: float = 1800.0
    # Delay between the two deliveries of a "duplicate" callback.
    duplicate_gap_s: float = 1.0
    # Delay before B2C / Transaction Status / Account Balance results.
    result_delay_s: float = 5.0
    # How long a "timeout" fault keeps the request hanging.
    hang_s: float = 3600.0
    # Per-delivery limit on how long the sandbox waits for a callback receiver.
    callback_timeout_s: float = 10.0
    # The IP a real callback would come from (protocols.md 1.11); recorded on
    # each delivery and, if ``send_forwarded_for``, sent as X-Forwarded-For.
    callback_source_address: str = "196.201.212.69"
    send_forwarded_for: bool = False

    initial_working_account_cents: int = 0
    initial_utility_account_cents: int = 1_000_000 * KES_CENTS

    stk_min_kes: int = 1
    stk_max_kes: int = 250_000
    b2c_min_kes: int = 10
    b2c_max_kes: int = 250_000

    customer_names: dict[str, str] = field(default_factory=dict)

    def credential_for(self, key: str, secret: str) -> Credentials | None:
        """The configured credential set matching ``key``/``secret``, if any."""
        for cred in self.credentials:
            if cred.consumer_key == key and cred.consumer_secret == secret:
                return cred
        return None
