from penpay.actors.callbacks import CallbackTokens

TX = "0193a000-0000-7000-8000-000000000001"


def test_a_token_verifies_to_its_transaction() -> None:
    tokens = CallbackTokens(b"k" * 32)
    token = tokens.issue("deposit", TX)
    assert tokens.verify(token) == ("deposit", TX)
    assert tokens.verify(tokens.issue("withdrawal", TX)) == ("withdrawal", TX)


def test_forged_or_altered_tokens_are_refused() -> None:
    tokens = CallbackTokens(b"k" * 32)
    token = tokens.issue("deposit", TX)
    other = CallbackTokens(b"x" * 32).issue("deposit", TX)
    swapped_kind = "w" + token[1:]
    for bad in (other, swapped_kind, token[:-2], "", "d.", "dnot-a-uuid.abc", token + "x"):
        assert tokens.verify(bad) is None, bad
