"""``python run.py simulate``: run one seed and print the figures, or the failure."""

from __future__ import annotations

import json

from penpay.sim.faults import parse_faults
from penpay.sim.findings import KNOWN_FINDINGS
from penpay.sim.runner import SimResult, run_simulation


def simulate_command(
    seed: int, transactions: int, faults: str, as_json: bool, strict: bool = False
) -> int:
    tolerate = () if strict else KNOWN_FINDINGS
    result = run_simulation(seed, transactions, parse_faults(faults), tolerate=tolerate)
    if as_json:
        print(json.dumps(result.summary()))
    else:
        _print_report(result)
    if not result.ok:
        print(f"simulation FAILED with seed {result.seed}; replay with: {result.replay_command()}")
        return 1
    return 0


def _print_report(result: SimResult) -> None:
    for key, value in result.summary().items():
        print(f"{key:>16}: {value}")
    print(f"{'faults':>16}: {','.join(sorted(result.faults)) or 'none'}")
    print(f"{'injected':>16}: {result.injected} actor crashes: {result.actor_crashes}, "
          f"generations: {result.generations}")
    print(f"{'statuses':>16}: {dict(sorted(result.statuses.items()))}")
    print(f"{'http':>16}: {dict(sorted(result.stats.by_status.items()))} "
          f"(lost to crashes: {result.stats.lost})")
    for finding in result.findings:
        print(f"known finding: {finding}")
    for violation in result.violations:
        print(f"VIOLATION {violation}")
    if result.error:
        print(result.error)
    if result.violations:
        print("last trace lines:")
        for line in result.tail[-25:]:
            print(f"  {line}")
