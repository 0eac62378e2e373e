#!/usr/bin/env python3
"""PenPay's one entry point: ``serve``, ``migrate``, ``bench``, …

Run ``python run.py --help`` for the commands.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence


def _cmd_bench(args: argparse.Namespace) -> int:
    try:
        module = importlib.import_module(f"penpay.bench.{args.name}")
    except ModuleNotFoundError:
        print(f"no benchmark named {args.name!r}", file=sys.stderr)
        return 2
    result = module.run()
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from penpay.server import main as serve_main

    return serve_main()


def _cmd_migrate(args: argparse.Namespace) -> int:
    from penpay.config import load_settings
    from penpay.storage.migrations import migrate_command

    return migrate_command(load_settings().database_url)


def _cmd_admin_create(args: argparse.Namespace) -> int:
    from penpay.admin_cli import create_admin_command

    return create_admin_command(args.email)


def _cmd_demo(args: argparse.Namespace) -> int:
    from penpay.demo import main as demo_main

    return demo_main()


def _cmd_simulate(args: argparse.Namespace) -> int:
    from penpay.sim.cli import simulate_command

    return simulate_command(args.seed, args.transactions, args.faults, args.json, args.strict)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start PenPay (embedded databases and sandboxes)")
    serve.set_defaults(func=_cmd_serve)

    migrate = commands.add_parser("migrate", help="apply database migrations and exit")
    migrate.set_defaults(func=_cmd_migrate)

    demo = commands.add_parser("demo", help="a deposit and a withdrawal against a running server")
    demo.set_defaults(func=_cmd_demo)

    admin = commands.add_parser("admin", help="operator accounts")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)
    create = admin_commands.add_parser("create", help="create an operator (role admin)")
    create.add_argument("--email", required=True)
    create.set_defaults(func=_cmd_admin_create)

    bench = commands.add_parser("bench", help="run a benchmark and print its figures")
    bench.add_argument("name", help="engine, journal, ledger, deriv, e2e")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(func=_cmd_bench)

    simulate = commands.add_parser(
        "simulate", help="deterministic whole-system simulation of one seed (doc/testing.md)"
    )
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument("--transactions", type=int, default=100)
    simulate.add_argument(
        "--faults", default="all",
        help="all, none, or a comma-separated list: actor_crash, system_crash, deriv_drop, "
             "daraja_error, callbacks, storage, clock",
    )
    simulate.add_argument("--json", action="store_true", help="print one JSON object")
    simulate.add_argument(
        "--strict", action="store_true", help="known findings (penpay/sim/findings.py) fail too"
    )
    simulate.set_defaults(func=_cmd_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from penpay.errors import ConfigurationError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigurationError as exc:  # a setting to fix, not a bug: one line, no traceback
        print(f"penpay: {exc}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:  # the same, raised inside trio's nurseries
        matched, rest = group.split(ConfigurationError)
        if matched is None or rest is not None:
            raise
        while isinstance(matched, BaseExceptionGroup):
            matched = matched.exceptions[0]
        print(f"penpay: {matched}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
