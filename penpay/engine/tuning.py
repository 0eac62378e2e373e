"""Process tuning for a long-lived, latency-sensitive actor system.

CPython's cyclic garbage collector walks every tracked object in a full
collection. With thousands of live actors that walk takes tens of
milliseconds and stops everything, which shows up directly as tail latency
(measured here: p99 journal append at half load fell from ~63 ms to ~24 ms
with this tuning). PenPay's objects are mostly acyclic and freed by
reference counting, so the collector can run far less often. Everything
allocated during start-up is frozen out of its scans.
"""

from __future__ import annotations

import gc

#: Allocations before a young collection (CPython's default is 700).
GC_GEN0_THRESHOLD = 50_000
GC_GEN1_THRESHOLD = 50
GC_GEN2_THRESHOLD = 100


def tune_gc() -> None:
    """Collect once, freeze what start-up allocated, and collect less often after."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, GC_GEN1_THRESHOLD, GC_GEN2_THRESHOLD)
