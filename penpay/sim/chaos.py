"""Actor crashes on purpose: FoundationDB's "buggify" for PenPay's actors.

:meth:`Chaos.wrap_kind` registers an actor kind with a factory whose
instances sometimes raise :class:`SimulatedActorCrash` just before or just
after handling a message. "After" is the nasty one: the events are durable
and some commands have gone out, but the sender hears of a crash, and the
supervisor restarts the actor from the journal. The engine itself is not
changed; only the factory the simulation registers is.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from penpay.engine import Actor, ActorSystem


class SimulatedActorCrash(Exception):
    """Raised by a wrapped actor; an ordinary exception, so the supervisor handles it."""


class Chaos:
    def __init__(self, rng: random.Random, probability: float = 0.0) -> None:
        self.rng = rng
        #: Chance per handled message of a crash before it, and again after it.
        self.probability = probability
        self.enabled = probability > 0
        self.crashes = 0

    def maybe_crash(self, where: str, kind: str) -> None:
        if self.enabled and self.rng.random() < self.probability:
            self.crashes += 1
            raise SimulatedActorCrash(f"simulated crash {where} a message to {kind}")

    def wrap_kind(self, system: ActorSystem, kind: type[Actor], build: Callable[[], Any]) -> None:
        """Register ``kind`` so each new instance is wrapped (a no-op wrapper when off)."""
        chaos = self

        def factory() -> Any:
            instance = build()
            receive, receive_batch = instance.receive, instance.receive_batch

            async def crashy_receive(message: Any) -> Any:
                chaos.maybe_crash("before", kind.kind)
                result = await receive(message)
                chaos.maybe_crash("after", kind.kind)
                return result

            async def crashy_batch(messages: list[Any]) -> list[Any]:
                chaos.maybe_crash("before", kind.kind)
                results: list[Any] = await receive_batch(messages)
                chaos.maybe_crash("after", kind.kind)
                return results

            instance.receive = crashy_receive
            instance.receive_batch = crashy_batch
            return instance

        props = system._props.get(kind)  # keep the kind's own settings, chaos aside
        system.register(
            kind,
            factory,
            passivate_after_s=_passivation_of(system, kind),
            supervision=props.supervision if props is not None else None,
            mailbox_capacity=props.mailbox_capacity if props is not None else None,
        )


def _passivation_of(system: ActorSystem, kind: type[Actor]) -> float | bool | None:
    props = system._props.get(kind)
    return True if props is None else props.passivate_after_s
