"""Simulated-world tests' scaffolding: a world with one onboarded user, and
actors that crash on cue."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from penpay.engine import Actor
from penpay.sim.chaos import Chaos, SimulatedActorCrash
from penpay.sim.trace import Trace
from penpay.sim.workload import Operator, Stats, User
from penpay.sim.world import SimWorld


@asynccontextmanager
async def onboarded_world(seed: int = 1) -> AsyncIterator[tuple[SimWorld, User]]:
    """A running world (no faults) and user 1, registered, activated and linked to Deriv."""
    world = SimWorld(seed, Trace(), Chaos(random.Random(0)))
    async with trio.open_nursery() as root:
        await world.start(root)
        stats = Stats()
        user = User(1, world, Operator(world.router, world.trace, stats, seed), stats, 1)
        assert await user.onboard()
        yield world, user
        await world.stop()
        root.cancel_scope.cancel()


def crash_on(
    world: SimWorld, kind: type[Actor], crashes: dict[type, int], *, after_handling: bool = False
) -> None:
    """Make ``kind`` crash on its next ``crashes[type]`` messages of each message type.

    With ``after_handling`` the message takes effect first and only the reply
    is lost, as when a process dies between doing something and saying so.
    """
    system = world.system
    props = system._props[kind]
    build: Callable[[], Actor] = props.factory

    def factory() -> Actor:
        instance = build()
        receive = instance.receive

        async def crashy(message: Any) -> Any:
            if crashes.get(type(message), 0) > 0:
                crashes[type(message)] -= 1
                if after_handling:
                    await receive(message)
                raise SimulatedActorCrash(f"scripted crash on {type(message).__name__}")
            return await receive(message)

        instance.receive = crashy  # type: ignore[method-assign]
        return instance

    system.register(
        kind, factory, supervision=props.supervision, passivate_after_s=props.passivate_after_s
    )
