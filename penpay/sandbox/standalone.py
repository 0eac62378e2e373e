"""Both sandboxes on real sockets in this process, for a PenPay run elsewhere.

Used where PenPay runs as its own process and must be killed or loaded while
the peers live on, like the real Daraja and Deriv would (the SIGKILL test,
``bench e2e``): :func:`peers_on_sockets` starts them seeded, and
:func:`penpay_env` is the environment that points ``run.py serve`` at them.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from penpay.sandbox.daraja import Credentials, DarajaSandbox, DarajaSandboxConfig
from penpay.sandbox.daraja.server import serve_daraja_sandbox
from penpay.sandbox.deriv import DerivWorld, serve_deriv_sandbox
from penpay.sandbox.seed import SEED, seed_daraja, seed_deriv

#: Credentials of the sandbox Daraja app (sandbox-only values, not secrets).
SANDBOX_DARAJA_KEY = "penpay-sandbox-key"
SANDBOX_DARAJA_SECRET = "penpay-sandbox-secret"
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago (for child processes)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Peers:
    daraja: DarajaSandbox
    daraja_url: str
    deriv: DerivWorld
    deriv_url: str


@asynccontextmanager
async def peers_on_sockets(seed: int = 7) -> AsyncIterator[Peers]:
    world = DerivWorld(rng=random.Random(seed))
    seed_deriv(world)
    config = DarajaSandboxConfig(
        credentials=(Credentials(SANDBOX_DARAJA_KEY, SANDBOX_DARAJA_SECRET),),
        callback_source_address="127.0.0.1",
    )
    async with httpx.AsyncClient(timeout=5) as callbacks, trio.open_nursery() as nursery:
        address = await nursery.start(serve_deriv_sandbox, world, "127.0.0.1", 0)
        sandbox, url = await nursery.start(
            lambda task_status: serve_daraja_sandbox(
                "127.0.0.1", 0, config=config, callback_http=callbacks, task_status=task_status
            )
        )
        seed_daraja(sandbox)
        try:
            yield Peers(sandbox, url, world, address.url)
        finally:
            nursery.cancel_scope.cancel()


def penpay_env(
    peers: Peers, *, data_dir: Path, http_port: int, **settings: str
) -> dict[str, str]:
    """The environment of a ``run.py serve`` that uses ``peers`` as its Daraja and Deriv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENPAY_")}
    env.update({
        "PENPAY_DATA_DIR": str(data_dir),
        "PENPAY_HTTP_PORT": str(http_port),
        "PENPAY_PUBLIC_BASE_URL": f"http://127.0.0.1:{http_port}",
        "PENPAY_REDIS_NAMESPACE": f"run-{secrets.token_hex(4)}",
        "PENPAY_CALLBACK_ALLOW": "127.0.0.0/8",
        "PENPAY_DARAJA_BASE_URL": peers.daraja_url,
        "PENPAY_DARAJA_CONSUMER_KEY": SANDBOX_DARAJA_KEY,
        "PENPAY_DARAJA_CONSUMER_SECRET": SANDBOX_DARAJA_SECRET,
        "PENPAY_DARAJA_STK_PASSKEY": SANDBOX_PASSKEY,
        "PENPAY_DARAJA_SECURITY_CREDENTIAL": "sandbox-credential",
        "PENPAY_DERIV_WS_URL": peers.deriv_url,
        "PENPAY_DERIV_AGENT_TOKEN": SEED.agent_token,
        "PENPAY_DERIV_AGENT_LOGIN_ID": SEED.agent_login_id,
        "PENPAY_SANDBOX_SEEDED": "1",
    })
    env.update({f"PENPAY_{k.upper()}": v for k, v in settings.items()})
    return env


REPO_ROOT = Path(__file__).resolve().parents[2]


class PenPayProcess:
    """``python run.py serve`` as a child process that can be SIGKILLed."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.port = int(env["PENPAY_HTTP_PORT"])
        self.process: trio.Process | None = None

    async def start(self) -> None:
        out = self.log.open("ab")
        self.process = await trio.lowlevel.open_process(
            [sys.executable, "run.py", "serve"], cwd=REPO_ROOT, env=self.env, stdout=out, stderr=out
        )
        async with httpx.AsyncClient() as http:
            with trio.fail_after(90):
                while True:
                    try:
                        ready = await http.get(f"http://127.0.0.1:{self.port}/readyz")
                        if ready.status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.2)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(20):
                await self.process.wait()
            if self.process.returncode is None:
                await self.kill()
