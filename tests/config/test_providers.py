"""Which provider credentials PenPay uses: the sandboxes' or, all of them, the operator's."""

import pytest

from penpay.config import load_settings
from penpay.errors import ConfigurationError
from penpay.sandbox.seed import SEED
from penpay.server import Sandboxes, callback_urls, check_providers, daraja_client, deriv_agent


def test_without_a_deriv_token_the_sandbox_agent_is_used() -> None:
    assert deriv_agent(load_settings({})) == (SEED.agent_token, SEED.agent_login_id)


def test_a_real_deriv_token_comes_with_its_login_id() -> None:
    settings = load_settings({
        "PENPAY_DERIV_AGENT_TOKEN": "real-token", "PENPAY_DERIV_AGENT_LOGIN_ID": "CR1234567",
    })
    assert deriv_agent(settings) == ("real-token", "CR1234567")


def test_a_real_deriv_token_without_its_login_id_is_refused() -> None:
    settings = load_settings({"PENPAY_DERIV_AGENT_TOKEN": "real-token"})
    with pytest.raises(ConfigurationError, match="PENPAY_DERIV_AGENT_LOGIN_ID"):
        deriv_agent(settings)  # never the sandbox agent's id with a real token


def test_real_daraja_names_every_missing_credential() -> None:
    settings = load_settings({"PENPAY_DARAJA_CONSUMER_KEY": "key"})
    with pytest.raises(ConfigurationError, match="PENPAY_DARAJA_STK_PASSKEY"):
        daraja_client(settings, Sandboxes(), clock=None)


def test_a_public_url_daraja_would_refuse_stops_start_up_with_real_daraja() -> None:
    refused = load_settings({"PENPAY_PUBLIC_BASE_URL": "https://mpesa.penpay.example"})
    with pytest.raises(ConfigurationError, match="mpesa"):
        callback_urls(refused, Sandboxes())
    accepted = load_settings({"PENPAY_PUBLIC_BASE_URL": "https://pay.penpay.example"})
    assert callback_urls(accepted, Sandboxes()).stk("t").startswith("https://pay.penpay.example/")
    sandbox = Sandboxes(daraja_url="http://127.0.0.1:9")  # the sandbox checks no words
    assert callback_urls(refused, sandbox).base == "https://mpesa.penpay.example"


@pytest.mark.parametrize(
    "environ",
    [
        {"PENPAY_DERIV_AGENT_TOKEN": "real-token", "PENPAY_DERIV_AGENT_LOGIN_ID": "CR1234567"},
        {"PENPAY_DARAJA_CONSUMER_KEY": "key", "PENPAY_DARAJA_CONSUMER_SECRET": "secret"},
    ],
    ids=["real deriv, sandbox daraja", "real daraja, sandbox deriv"],
)
def test_one_real_provider_beside_a_sandbox_is_refused(environ: dict[str, str]) -> None:
    """Real USD credited for deposits a simulated M-Pesa 'paid', or the reverse."""
    with pytest.raises(ConfigurationError, match="both real providers or both sandboxes"):
        check_providers(load_settings(environ))


def test_a_credential_whose_key_is_missing_or_empty_is_refused() -> None:
    environ = {"PENPAY_DARAJA_CONSUMER_KEY": "", "PENPAY_DARAJA_CONSUMER_SECRET": "secret",
               "PENPAY_DERIV_AGENT_TOKEN": "real-token", "PENPAY_DERIV_AGENT_LOGIN_ID": "CR1"}
    with pytest.raises(ConfigurationError, match="PENPAY_DARAJA_CONSUMER_SECRET set, but"):
        check_providers(load_settings(environ))


def test_both_sandboxes_or_both_real_providers_are_fine() -> None:
    check_providers(load_settings({}))
    check_providers(load_settings({
        "PENPAY_DARAJA_CONSUMER_KEY": "key", "PENPAY_DERIV_AGENT_TOKEN": "real-token",
    }))


def test_the_public_url_loses_a_trailing_slash() -> None:
    """``…//api/v1/callbacks/…`` answers 404, and Daraja calls back only once."""
    settings = load_settings({"PENPAY_PUBLIC_BASE_URL": "https://pay.penpay.example/"})
    assert callback_urls(settings, Sandboxes()).stk("t").startswith(
        "https://pay.penpay.example/api/v1/"
    )


@pytest.mark.parametrize(
    "url",
    ["http://pay.penpay.example", "https://127.0.0.1:8000", "https://10.0.0.5",
     "https://localhost", "pay.penpay.example", "https://pay.penpay.example/prefix"],
)
def test_real_daraja_needs_a_public_https_base_url(url: str) -> None:
    with pytest.raises(ConfigurationError, match="PENPAY_PUBLIC_BASE_URL"):
        callback_urls(load_settings({"PENPAY_PUBLIC_BASE_URL": url}), Sandboxes())


def test_the_sandbox_takes_the_default_loopback_url() -> None:
    sandbox = Sandboxes(daraja_url="http://127.0.0.1:9")
    assert callback_urls(load_settings({}), sandbox).base == "http://127.0.0.1:8000"


def test_sandboxes_started_elsewhere_call_back_on_loopback() -> None:
    """PENPAY_SANDBOX_SEEDED: Daraja's client settings point at a sandbox on loopback."""
    settings = load_settings({"PENPAY_SANDBOX_SEEDED": "1",
                              "PENPAY_PUBLIC_BASE_URL": "http://127.0.0.1:8123"})
    assert callback_urls(settings, Sandboxes()).base == "http://127.0.0.1:8123"
