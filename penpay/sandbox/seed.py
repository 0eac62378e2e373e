"""The sandbox world ``run.py serve`` starts with: a payment agent and a demo client.

The tokens below are sandbox credentials of a simulated Deriv, not secrets:
they only work against the sandbox PenPay starts on loopback.
"""

from __future__ import annotations

from dataclasses import dataclass

from penpay.sandbox.daraja import DarajaSandbox
from penpay.sandbox.deriv import DerivWorld, PaymentAgentTerms


@dataclass(frozen=True)
class SandboxSeed:
    agent_login_id: str = "CR9000001"
    agent_email: str = "agent@penpay.example"
    agent_token: str = "sandbox-agent-token-0001"
    agent_float_usd_cents: int = 5_000_000  # USD 50,000.00
    client_login_id: str = "CR9000002"
    client_email: str = "demo@penpay.example"
    client_full_name: str = "Demo Client"
    client_token: str = "sandbox-demo-token-0002"
    client_balance_usd_cents: int = 100_000  # USD 1,000.00
    client_phone: str = "254712345678"
    mpesa_utility_kes_cents: int = 100_000_000  # KES 1,000,000.00
    customer_delay_s: float = 3.0


SEED = SandboxSeed()


def seed_deriv(world: DerivWorld, seed: SandboxSeed = SEED) -> None:
    """Create the payment agent (with float) and the demo client."""
    world.create_account(
        seed.agent_login_id,
        email=seed.agent_email,
        fullname="PenPay Payment Agent",
        balance_cents=seed.agent_float_usd_cents,
        # PenPay's own limits (USD 2-1000) sit inside the agent's terms.
        payment_agent=PaymentAgentTerms(name="PenPay", min_cents=100, max_cents=200_000),
        tokens={seed.agent_token: ("read", "payments", "trading_information", "admin")},
    )
    world.create_account(
        seed.client_login_id,
        email=seed.client_email,
        fullname=seed.client_full_name,
        balance_cents=seed.client_balance_usd_cents,
        tokens={seed.client_token: ("read", "payments")},
    )


def seed_daraja(sandbox: DarajaSandbox, seed: SandboxSeed = SEED) -> None:
    """Fund the B2C utility account; the demo phone answers prompts after a short wait."""
    sandbox.set_accounts(utility_cents=seed.mpesa_utility_kes_cents)
    sandbox.script_customer(seed.client_phone, "accept", delay_s=seed.customer_delay_s)
