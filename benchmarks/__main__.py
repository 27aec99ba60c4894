"""``python -m benchmarks [NAME [ARGS...]]``: print the benchmark tables."""

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


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("suites:", ", ".join(SUITES))
        return 0
    if argv and argv[0] in SUITES:
        return int(importlib.import_module(SUITES[argv[0]]).main(argv[1:]))
    if argv:
        print(f"unknown suite {argv[0]!r}; known: {', '.join(SUITES)}", file=sys.stderr)
        return 2
    status = 0
    for name, module in SUITES.items():
        print(f"\n===== {name} =====", flush=True)
        status |= int(importlib.import_module(module).main([]))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
