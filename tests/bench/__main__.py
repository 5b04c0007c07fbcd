"""Run every benchmark module in this package and print its figures."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time

import tests.bench as package


def main() -> int:
    names = sorted(
        info.name for info in pkgutil.iter_modules(package.__path__) if info.name.endswith("_bench")
    )
    if not names:
        print("no benchmarks found", file=sys.stderr)
        return 1
    results: dict[str, object] = {}
    for name in names:
        module = importlib.import_module(f"tests.bench.{name}")
        started = time.monotonic()
        print(f"== {name}", flush=True)
        results[name] = module.run()
        print(f"   ({time.monotonic() - started:.1f}s)", flush=True)
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
