"""Known PenPay defects the simulation found, tolerated by default by name.

Each entry is a violation name from :mod:`penpay.sim.invariants` that is
reported as a *finding* (printed, not failing the run) until the defect is
fixed; ``--strict`` turns them back into violations. Remove an entry when
its fix lands, so the simulation guards the fix.
"""

from __future__ import annotations

KNOWN_FINDINGS: dict[str, str] = {
    "reserved_never_started": (
        "Payments._start reserves the index row (PENDING) before the actor persists Start; "
        "if the actor crashes or the journal refuses the write, the row stays PENDING for "
        "ever (resume_unfinished wakes an actor with no events, which does nothing) and "
        "still counts towards the user's daily cap"
    ),
    "read_model_stale": (
        "the read model is updated by a Notify command carried out after persist; a crash "
        "between the two loses the update and recovery never re-notifies, so "
        "GET /transactions/{id} shows an old status for ever"
    ),
    "hold_never_resolved": (
        "a transaction that reached a terminal status but crashed (actor crash, ledger or "
        "journal error, process crash) between persisting that status and carrying out its "
        "postings never makes them: deposit.recover and withdrawal.recover return nothing "
        "for terminal states (penpay/actors/deposit.py recover: `if not state.started or "
        "state.status in TERMINAL: return [], []`), so e.g. a COMPLETED deposit keeps its "
        "Deriv float hold pending and never books fx_conversion"
    ),
    "deriv_float_drift_from_unposted_holds": (
        "the consequence of hold_never_resolved on the Deriv float: the ledger shows more "
        "float than the agent account holds, by exactly the unposted holds (any other drift "
        "is still a violation)"
    ),
}
