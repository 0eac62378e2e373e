"""Which provider credentials PenPay uses: the sandboxes' or, all of them, the operator's."""

import pytest

from penpay.config import load_settings
from penpay.errors import ConfigurationError
from penpay.sandbox.seed import SEED
from penpay.server import Sandboxes, daraja_client, deriv_agent


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
