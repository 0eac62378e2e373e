"""The configuration table of ``doc/operations.md``, generated from :class:`Settings`."""

from __future__ import annotations

import msgspec

from penpay.config.settings import ENV_PREFIX, Settings


def settings_table() -> str:
    rows = ["| variable | default |", "|---|---|"]
    for field in msgspec.structs.fields(Settings):
        default = field.default
        shown = "*(unset)*" if default is None else f"`{default}`"
        rows.append(f"| `{ENV_PREFIX}{field.name.upper()}` | {shown} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
