"""Secrets that are generated on first run into the git-ignored ``var/keys/``.

Production supplies every key through a ``PENPAY_*`` environment variable;
a development checkout has none, so the first run creates them here (mode
0600) and later runs reuse them, which keeps sessions and encrypted columns
readable across restarts. Two processes racing to create a file both end up
with the winner's content (``O_EXCL`` create, then read back).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

#: Sub-directory of ``Settings.data_dir`` that holds generated keys.
KEYS_DIRNAME = "keys"


def keys_dir(data_dir: Path) -> Path:
    path = Path(data_dir) / KEYS_DIRNAME
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def load_or_create(path: Path, create: Callable[[], bytes]) -> bytes:
    """The content of ``path``; if it does not exist, write ``create()`` there first."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    content = create()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    return content
