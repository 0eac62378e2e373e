"""PenPay's HTTP interface: a Starlette app that turns requests into actor messages."""

from penpay.http.app import create_app
from penpay.http.services import Services

__all__ = ["Services", "create_app"]
