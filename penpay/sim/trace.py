"""The event trace of a run and its SHA-256: the proof that a seed replays exactly.

Every HTTP answer, every transaction status change and every sandbox money
record is appended as one line stamped with mock time. Two runs with the
same seed must produce the same lines, hence the same hash; the last lines
are kept so a failing run can show what led to it.
"""

from __future__ import annotations

import hashlib
from collections import deque

import trio


class Trace:
    def __init__(self, keep_last: int = 200) -> None:
        self._hash = hashlib.sha256()
        self.lines = 0
        self.tail: deque[str] = deque(maxlen=keep_last)

    def record(self, *parts: object) -> None:
        """Append one event; mock time (ms) is added so reorderings change the hash."""
        line = f"{int(trio.current_time() * 1000)} " + " ".join(str(p) for p in parts)
        self._hash.update(line.encode())
        self._hash.update(b"\n")
        self.lines += 1
        self.tail.append(line)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
