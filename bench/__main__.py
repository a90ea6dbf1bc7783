"""Run every bench/*.py module's main() in turn (or only the ones named in argv)."""

from __future__ import annotations

import importlib
import os
import sys
import time
import traceback


def modules() -> list[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    return sorted(
        name[:-3]
        for name in os.listdir(here)
        if name.endswith(".py") and not name.startswith("_")
    )


def run(names: list[str]) -> int:
    failed = []
    for name in names:
        print(f"== bench.{name}", flush=True)
        started = time.monotonic()
        try:
            importlib.import_module(f"bench.{name}").main()
        except Exception:
            traceback.print_exc()
            failed.append(name)
        print(f"== bench.{name}: {time.monotonic() - started:.1f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    available = modules()
    unknown = [n for n in argv if n not in available]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available}", file=sys.stderr)
        return 2
    return run(argv or available)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
