"""Which provider credentials PenPay uses: the sandboxes' or, all of them, the operator's."""

import pytest

from penpay.config import load_settings
from penpay.errors import ConfigurationError
from penpay.sandbox.seed import SEED
from penpay.server import Sandboxes, callback_urls, daraja_client, deriv_agent


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
