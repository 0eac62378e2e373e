"""E-mails whose case folds differently in Python and PostgreSQL register and log in alike."""

from __future__ import annotations

import httpx
import pytest

from penpay.http import Services, create_app
from tests.http.server import serving
from tests.identity.helpers import login, register
from tests.identity.test_stores import UNICODE_EMAILS

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("email", UNICODE_EMAILS)
async def test_user_logs_in_with_the_email_they_registered(services: Services, email: str) -> None:
    async with serving(create_app(services)) as url, httpx.AsyncClient(base_url=url) as client:
        registered = await register(client, email=email)
        assert registered.status_code == 201, registered.text
        typed_again = await login(client, email=email)
        lowered = await login(client, email=email.lower(), device_id="second")
    assert typed_again.status_code == 200, typed_again.text
    assert lowered.status_code == 200, lowered.text
