"""Run the benchmark modules of this package, print their figures and write BENCHMARKS.md.

``python -m tests.bench`` runs every ``*_bench`` module; ``python -m tests.bench loader router``
runs only those (names with or without ``_bench``). Modules defining ``figures(result)`` get
their section of BENCHMARKS.md rewritten (see :mod:`tests.bench.report`).
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time

import tests.bench as package
from tests.bench import report


def main(argv: list[str]) -> int:
    available = sorted(
        info.name for info in pkgutil.iter_modules(package.__path__) if info.name.endswith("_bench")
    )
    wanted = [a if a.endswith("_bench") else f"{a}_bench" for a in argv]
    unknown = [name for name in wanted if name not in available]
    if unknown:
        print(f"unknown benchmarks {unknown}; available: {available}", file=sys.stderr)
        return 2
    names = wanted or available
    if not names:
        print("no benchmarks found", file=sys.stderr)
        return 1
    results: dict[str, object] = {}
    sections: dict[str, str] = {}
    for name in names:
        module = importlib.import_module(f"tests.bench.{name}")
        machine = report.Machine.now()
        started = time.monotonic()
        print(f"== {name}", flush=True)
        results[name] = module.run()
        print(f"   ({time.monotonic() - started:.1f}s)", flush=True)
        figures = getattr(module, "figures", None)
        if figures is not None:
            command = f"make bench BENCH={name.removesuffix('_bench')}"
            sections[name] = report.section(name, machine, command, figures(results[name]))
    print(json.dumps(results, indent=2, default=str))
    if sections:
        print(f"wrote {report.write(sections)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
