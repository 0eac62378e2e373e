"""Entropy: reproducible when seeded; the kernel's CSPRNG, each byte given out once, when not."""

from __future__ import annotations

import os

from penpay.engine.clock import Entropy, _UrandomPool


def test_a_seed_reproduces_every_value() -> None:
    a, b = Entropy(7), Entropy(7)
    assert [a.token_bytes(10) for _ in range(3)] == [b.token_bytes(10) for _ in range(3)]
    assert a.uuid7(1_700_000_000_000) == b.uuid7(1_700_000_000_000)


def test_unseeded_bytes_are_never_handed_out_twice() -> None:
    pool = _UrandomPool()
    taken = [pool.take(10) for _ in range(2 * pool.PAGE_BYTES // 10)]  # crosses a page
    assert all(len(chunk) == 10 for chunk in taken)
    assert len(set(taken)) == len(taken)
    assert len(pool.take(pool.PAGE_BYTES + 1)) == pool.PAGE_BYTES + 1


def test_unseeded_uuid7_carries_the_time_and_version() -> None:
    made = Entropy().uuid7(1_700_000_000_123)
    assert made.version == 7
    assert made.int >> 80 == 1_700_000_000_123


def test_a_forked_child_does_not_reuse_the_parents_bytes() -> None:
    pool = _UrandomPool()
    pool.take(1)  # the parent now holds a page
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next bytes, then leave at once
        os.write(write_end, pool.take(32))
        os._exit(0)
    os.close(write_end)
    child = os.read(read_end, 32)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert pool.take(32) != child
