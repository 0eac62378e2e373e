"""``run.py admin create --email …``: create an operator account.

The password comes from ``PENPAY_ADMIN_PASSWORD`` or is asked for on the
terminal; it is never taken from the command line (shell history).
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

import trio

from penpay.config import load_settings
from penpay.engine import Clock, Entropy
from penpay.http.auth.factory import build_auth
from penpay.http.auth.service import create_admin
from penpay.storage.audit import PgAuditLog
from penpay.storage.embedded import start_embedded_postgres
from penpay.storage.identity import EmailTaken, PgUserStore
from penpay.storage.migrations import migrate
from penpay.storage.pg import database


def create_admin_command(email: str) -> int:
    settings = load_settings()
    password = os.environ.get("PENPAY_ADMIN_PASSWORD") or getpass.getpass("Password: ")
    database_url = settings.database_url
    embedded = None
    if database_url is None:
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        embedded = start_embedded_postgres(Path(settings.data_dir))
        database_url = embedded.url

    async def main(url: str) -> str:
        async with database(url, pool_size_max=2) as db:
            await migrate(db)
            clock = Clock()
            auth = build_auth(
                users=PgUserStore(db), audit=PgAuditLog(db, clock),
                data_dir=Path(settings.data_dir), clock=clock, entropy=Entropy(),
            )
            return await create_admin(auth, email, password)

    try:
        user_id = trio.run(main, database_url)
    except (ValueError, EmailTaken) as exc:
        print(f"admin not created: {exc}", file=sys.stderr)
        return 1
    finally:
        if embedded is not None:
            embedded.close()
    print(f"admin {email} created: {user_id}")
    return 0
