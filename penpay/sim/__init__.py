"""Deterministic whole-system simulation of PenPay (``python run.py simulate``).

One seed fixes everything: trio's scheduler, the mock clock, PenPay's
entropy, the sandboxes, the customers and the faults. See doc/testing.md.
"""

from penpay.sim.faults import ALL, Fault, parse_faults
from penpay.sim.invariants import Violation
from penpay.sim.runner import SimResult, run_simulation

__all__ = ["ALL", "Fault", "SimResult", "Violation", "parse_faults", "run_simulation"]
