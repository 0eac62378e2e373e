"""Known PenPay defects the simulation found, tolerated by default by name.

Each entry is a violation name from :mod:`penpay.sim.invariants` that is
reported as a *finding* (printed, not failing the run) until the defect is
fixed; ``--strict`` turns them back into violations. Remove an entry when
its fix lands, so the simulation guards the fix.
"""

from __future__ import annotations

KNOWN_FINDINGS: dict[str, str] = {}
