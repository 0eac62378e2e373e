"""doc/ledger.md's worked examples are what the code does, to the cent."""

from pathlib import Path

from penpay.ledger_examples import render

DOC = Path(__file__).resolve().parents[2] / "doc" / "ledger.md"


def test_the_worked_examples_in_the_doc_match_the_code() -> None:
    assert render() in DOC.read_text(), (
        "doc/ledger.md is out of date: regenerate the worked examples with "
        "`python -m penpay.ledger_examples`"
    )
