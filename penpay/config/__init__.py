"""Typed settings read from ``PENPAY_*`` environment variables."""

from penpay.config.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
