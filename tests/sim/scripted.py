"""Scripted faults for simulated-world tests: an actor that crashes on cue."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from penpay.engine import Actor
from penpay.sim.chaos import SimulatedActorCrash
from penpay.sim.world import SimWorld


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
