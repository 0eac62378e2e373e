"""Benchmarks, run as ``python run.py bench NAME [--json]``.

Each module ``penpay.bench.NAME`` exposes ``run() -> dict[str, object]``: it
measures the figure and its comparison baseline in the same run and returns
them; ``run.py`` prints the result. Benchmarks are never part of the tests.
"""
