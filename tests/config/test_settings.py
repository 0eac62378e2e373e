from pathlib import Path

import pytest

from penpay.config import load_settings
from penpay.config.reference import settings_table
from penpay.errors import ConfigurationError

DOC = Path(__file__).resolve().parents[2] / "doc" / "operations.md"


def test_settings_come_from_penpay_variables() -> None:
    settings = load_settings(
        {"PENPAY_HTTP_PORT": "9000", "PENPAY_DATA_DIR": "/tmp/x", "PENPAY_DATABASE_URL": ""}
    )
    assert settings.http_port == 9000
    assert str(settings.data_dir) == "/tmp/x"
    assert settings.database_url is None  # empty means unset: use the embedded server


def test_a_malformed_setting_names_its_variable() -> None:
    with pytest.raises(ConfigurationError, match="PENPAY_HTTP_PORT='eighty'"):
        load_settings({"PENPAY_HTTP_PORT": "eighty"})


def test_the_operations_doc_lists_every_setting() -> None:
    assert settings_table() in DOC.read_text(), (
        "doc/operations.md is out of date: regenerate with `python -m penpay.config.reference`"
    )
