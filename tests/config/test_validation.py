"""Settings that cannot work are refused at start-up, each naming its variable."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from penpay.config import load_settings
from penpay.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PENPAY_ASK_TIMEOUT_S", "-1"),
        ("PENPAY_STK_QUERY_INTERVAL_S", "0"),
        ("PENPAY_B2C_RESULT_WAIT_S", "inf"),
        ("PENPAY_DERIV_LOOKUP_INTERVAL_S", "nan"),
        ("PENPAY_HTTP_PORT", "99999"),
        ("PENPAY_MAILBOX_CAPACITY", "0"),
        ("PENPAY_DEPOSIT_MIN_USD_CENTS", "200000"),  # above the maximum
        ("PENPAY_LOG_LEVEL", "verbose"),
    ],
)
def test_a_value_that_cannot_work_is_refused_by_name(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        load_settings({variable: value})


def test_zero_where_zero_means_something_and_any_case_of_a_log_level_pass() -> None:
    settings = load_settings({
        "PENPAY_HTTP_PORT": "0", "PENPAY_JOURNAL_BATCH_WINDOW_MS": "0",
        "PENPAY_DERIV_CALLS_PER_MIN": "0", "PENPAY_LOG_LEVEL": "debug",
    })
    assert settings.log_level == "DEBUG" and settings.http_port == 0


@pytest.mark.parametrize("level", ["WARN", "NOTSET", "fatal", "warning"])
def test_every_level_name_logging_takes_is_a_log_level(level: str) -> None:
    logging.getLogger("penpay.test").setLevel(load_settings({"PENPAY_LOG_LEVEL": level}).log_level)


def test_run_py_says_what_is_wrong_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "run.py", "migrate"], cwd=ROOT, capture_output=True, text=True,
        env={"PENPAY_ASK_TIMEOUT_S": "-1", "PATH": "/usr/bin:/bin"}, timeout=60, check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("penpay: PENPAY_ASK_TIMEOUT_S=-1.0")
    assert "Traceback" not in done.stderr
