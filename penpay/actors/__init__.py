"""The domain: transactions, ledger accounts, gateways, FX and policies."""
