"""The transaction actor: the thin shell around a pure flow.

For every input it asks the flow what happened (``decide``), makes those
events durable (``persist``), and only then carries out what they call for
(``react``): ledger postings, calls through the gateway actors, timers,
notifications. Gateways answer with new inputs to this actor's mailbox, so
one transaction's steps are strictly serialised while thousands of
transactions run at once.

After a restart, ``recover`` tells the shell what was in flight; a
money-moving call whose answer was lost turns into a reconciliation query.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import msgspec

from penpay.actors import deposit, withdrawal
from penpay.actors.gateway import GatewayRequest
from penpay.actors.saga import (
    Alert,
    B2CResult,
    B2CUnknown,
    Command,
    Deadline,
    Input,
    Notify,
    Posting,
    PostLedger,
    ResolveRefused,
    SagaTimings,
    SetTimer,
    WithdrawFromDeriv,
)
from penpay.engine import (
    ActorRef,
    ActorSystem,
    EventCodec,
    EventSourcedActor,
    Rejection,
    SupervisionPolicy,
    Timer,
)

log = logging.getLogger(__name__)


class LedgerPort(Protocol):
    """What a transaction needs of the ledger; posting is idempotent by name."""

    async def post(self, transaction_id: str, posting: Posting) -> None: ...


class LedgerRefused(Rejection):
    """The ledger would not admit a posting (e.g. the float cannot cover it)."""


class PostingRefused(Exception):
    """The ledger refused a posting of a step the transaction already recorded.

    Not a refusal to pass on to a caller: the books and the transaction now
    disagree, and the step's later commands (a money call, its timer) were
    not carried out. The actor crashes; its recovery posts again and re-derives
    what was in flight. Refused every time, it is parked for an operator.
    """

    def __init__(self, kind: str, key: str, posting: str, refusal: LedgerRefused) -> None:
        super().__init__(f"{kind} {key}: the ledger refused {posting}: {refusal}")


class TransactionRefused(Rejection):
    """The request cannot become a transaction; nothing was created or held."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


class GetState(msgspec.Struct, frozen=True):
    """Ask for the transaction's current state."""


class AbandonIfNotStarted(msgspec.Struct, frozen=True):
    """Give back what a Start that never took effect may hold; reply: True if not started.

    Decided in the actor's mailbox, so a retried Start is either handled
    before it (the reply is False) or after it (and starts afresh).
    """


@dataclass(frozen=True)
class Flow:
    """A pure flow module, seen through the functions the shell calls."""

    kind: str
    state_type: type[msgspec.Struct]
    events: Sequence[type[msgspec.Struct]]
    decide: Callable[..., list[Any]]
    evolve: Callable[[Any, Any], Any]
    react: Callable[..., list[Command]]
    recover: Callable[..., tuple[list[Any], list[Command]]]
    #: The OriginatorConversationID of this transaction's B2C payout, if any.
    payout_originator: Callable[[Any], str | None]

    @classmethod
    def from_module(
        cls, module: Any, state_type: type[msgspec.Struct], payout_originator: str
    ) -> Flow:
        """The flow defined by ``module``'s ``decide``/``evolve``/``react``/``recover``."""
        return cls(
            kind=state_type.__name__.removesuffix("State").lower(),
            state_type=state_type,
            events=module.EVENT_TYPES,
            decide=module.decide,
            evolve=module.evolve,
            react=module.react,
            recover=module.recover,
            payout_originator=lambda state: getattr(state, payout_originator),
        )


async def _ignore(kind: str, state: Any) -> None:
    return None


@dataclass
class SagaDeps:
    """Everything a transaction actor talks to, injected by the server or a test."""

    ledger: LedgerPort
    #: The gateway actor that carries out a command (M-Pesa or Deriv).
    gateway_for: Callable[[Command], ActorRef]
    timings: SagaTimings = field(default_factory=SagaTimings)
    #: Awaited after every status change with (kind, state); feeds read models.
    observe: Callable[[str, Any], Awaitable[None]] = _ignore


class TransactionActor(EventSourcedActor[Any]):
    """Shared shell; :class:`DepositActor` and :class:`WithdrawalActor` pick the flow."""

    flow: ClassVar[Flow]

    def __init__(self, deps: SagaDeps) -> None:
        self.deps = deps
        self._timers: dict[str, Timer] = {}
        self._secret_for_first_call: str | None = None

    def initial_state(self) -> Any:
        return self.flow.state_type()

    def apply(self, state: Any, event: Any) -> Any:
        return self.flow.evolve(state, event)

    async def on_recovered(self) -> None:
        events, commands = self.flow.recover(
            self.state, self.clock.now_ms(), self.deps.timings
        )
        await self._commit(events)
        await self._carry_out(commands)
        if getattr(self.state, "started", False):
            # A crash may have come between a status change and its read-model update.
            await self.deps.observe(self.kind, self.state)

    async def receive(self, message: Any) -> Any:
        if isinstance(message, GetState):
            return self.state
        if isinstance(message, AbandonIfNotStarted):
            if self.state.started:
                return False
            await self.release_unstarted()
            return True
        if not isinstance(message, Input):
            raise TypeError(f"{self.ref.address} cannot handle {type(message).__name__}")
        message = self._addressed(message)
        await self.before_decide(message)
        try:
            events = self.flow.decide(
                self.state, message, self.clock.now_ms(), self.deps.timings
            )
        except ResolveRefused as exc:
            raise TransactionRefused("resolve_refused", str(exc)) from None
        await self._commit(events)
        return self.state

    async def release_unstarted(self) -> None:
        """Give back whatever a failed Start may have taken (nothing, by default)."""

    def _addressed(self, message: Input) -> Input:
        """Callbacks are routed by their URL token, which already names this
        transaction; the payout id they carry may not be ours (protocols.md
        1.5), so it is taken from state."""
        if isinstance(message, B2CResult | B2CUnknown) and not message.originator_conversation_id:
            originator = self.flow.payout_originator(self.state) or ""
            return msgspec.structs.replace(message, originator_conversation_id=originator)
        return message

    async def before_decide(self, message: Input) -> None:
        """A hook for work that must precede the first event (e.g. a ledger hold)."""

    async def _commit(self, events: list[Any]) -> None:
        """Persist ``events``, then carry out what each of them calls for."""
        if not events:
            return
        states = [self.state]
        for event in events:
            states.append(self.flow.evolve(states[-1], event))
        await self.persist(*events)
        commands: list[Command] = []
        for before, event, after in zip(states, events, states[1:], strict=False):
            commands += self.flow.react(before, event, after, self.deps.timings)
        await self._carry_out(commands)

    async def _carry_out(self, commands: list[Command]) -> None:
        for command in commands:
            match command:
                case PostLedger(posting):
                    try:
                        await self.deps.ledger.post(self.key, posting)
                    except LedgerRefused as exc:
                        raise PostingRefused(self.kind, self.key, posting.name, exc) from exc
                case SetTimer(name, at_ms):
                    self._arm(name, at_ms)
                case Notify():
                    await self.deps.observe(self.kind, self.state)
                case Alert(message):
                    log.error("%s %s: %s", self.kind, self.key, message)
                case _:
                    command = self.fill_secret(command)
                    user_id = getattr(self.state, "user_id", "")
                    request = GatewayRequest(command, self.kind, self.key, user_id)
                    await self.deps.gateway_for(command).tell(request)

    def fill_secret(self, command: Command) -> Command:
        """A hook to add a credential kept only in memory to an outgoing command."""
        return command

    def _arm(self, name: str, at_ms: int) -> None:
        previous = self._timers.pop(name, None)
        if previous is not None:
            previous.cancel()
        delay_s = max(at_ms - self.clock.now_ms(), 0) / 1000
        self._timers[name] = self.schedule(delay_s, Deadline(name))


class FloatUnavailable(TransactionRefused):
    def __init__(self, detail: str) -> None:
        super().__init__("temporarily_unavailable", detail)


class DepositActor(TransactionActor):
    """One deposit. Taking the Deriv float hold comes before the transaction exists."""

    kind = "deposit"
    flow = Flow.from_module(deposit, deposit.DepositState, "refund_originator_id")
    codec = EventCodec(*deposit.EVENT_TYPES)
    state_type = deposit.DepositState

    async def before_decide(self, message: Input) -> None:
        if isinstance(message, deposit.Start) and not self.state.started:
            hold = deposit.float_hold(message.quote, self.state.float_holds_released)
            try:
                await self.deps.ledger.post(self.key, hold)
            except LedgerRefused as exc:
                detail = f"the Deriv float cannot cover this deposit: {exc}"
                raise FloatUnavailable(detail) from None

    async def on_recovered(self) -> None:
        await super().on_recovered()
        if not self.state.started and self.state.float_holds_released:
            # A crash may have come between recording a release and making it.
            await self._release_hold(self.state.float_holds_released - 1)

    async def release_unstarted(self) -> None:
        """Give back the float hold a Start that never became a deposit may hold.

        Only once recovery has shown that no Start was recorded: a failed
        append may still have committed (its outcome is unknown), and then
        the deposit lives and needs its hold. The release is recorded first,
        so that a later Start of this transaction (the client's retry with
        the same Idempotency-Key) takes a new hold: a released one cannot be
        taken again under its name.
        """
        number = self.state.float_holds_released
        await self.persist(deposit.FloatHoldReleased(self.clock.now_ms()))
        await self._release_hold(number)

    async def _release_hold(self, number: int) -> None:
        with contextlib.suppress(LedgerRefused):  # that hold was never taken
            await self.deps.ledger.post(self.key, deposit.release_float_hold(number))


class WithdrawalActor(TransactionActor):
    """One withdrawal. The Deriv verification code is held in memory only.

    It is a credential, so no event records it: the code travels from the
    Start request into the ``paymentagent_withdraw`` call and leaves this
    actor. If Deriv refuses the call "for now" (a rate limit), the Deriv
    gateway actor keeps the code, in memory, for the resend (at most an
    hour, the code's own life). After a restart a call whose outcome was
    lost is looked up, never repeated.
    """

    kind = "withdrawal"
    flow = Flow.from_module(withdrawal, withdrawal.WithdrawalState, "payout_originator_id")
    codec = EventCodec(*withdrawal.EVENT_TYPES)
    state_type = withdrawal.WithdrawalState

    async def before_decide(self, message: Input) -> None:
        if isinstance(message, withdrawal.Start) and not self.state.started:
            self._secret_for_first_call = message.verification_code

    def fill_secret(self, command: Command) -> Command:
        if isinstance(command, WithdrawFromDeriv) and not command.verification_code:
            code, self._secret_for_first_call = self._secret_for_first_call, None
            return msgspec.structs.replace(command, verification_code=code or "")
        return command


def register_transactions(system: ActorSystem, deps: SagaDeps) -> None:
    """Both transaction kinds, supervised as the business needs.

    A storage outage makes a transaction fail on every message; parked, it
    would hold its customer's money until an operator stepped in. So it
    retries with back-off for as long as it takes (a corrupt journal still
    parks it at once).
    """
    resilient = SupervisionPolicy.persistent()
    system.register(DepositActor, lambda: DepositActor(deps), supervision=resilient)
    system.register(WithdrawalActor, lambda: WithdrawalActor(deps), supervision=resilient)
