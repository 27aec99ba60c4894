"""``python -m benchmarks [NAME [ARGS...]]``: print the benchmark tables.

``python -m benchmarks fetch-traces`` downloads and converts public traces that the
hit-ratio benchmark then replays too (not run by the bare command: it uses the network).
"""

from __future__ import annotations

import importlib
import sys

#: name -> module; each module exposes ``main(argv: list[str]) -> int``.
SUITES = {
    "hitratio": "benchmarks.hitratio",
    "latency": "benchmarks.latency",
    "memory": "benchmarks.memory",
    "persistent": "benchmarks.persistent",
    "multilevel": "benchmarks.multilevel",
    "tags": "benchmarks.tags",
    "memoize": "benchmarks.memoize",
}

#: Commands that are not suites (not run by the bare ``python -m benchmarks``).
COMMANDS = {"fetch-traces": "benchmarks.fetch_traces"}


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("suites:", ", ".join(SUITES))
        print("commands:", ", ".join(COMMANDS))
        return 0
    modules = {**SUITES, **COMMANDS}
    if argv and argv[0] in modules:
        return int(importlib.import_module(modules[argv[0]]).main(argv[1:]))
    if argv:
        known = ", ".join(modules)
        print(f"unknown suite {argv[0]!r}; known: {known}", file=sys.stderr)
        return 2
    status = 0
    for name, module in SUITES.items():
        print(f"\n===== {name} =====", flush=True)
        status |= int(importlib.import_module(module).main([]))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
