"""BENCHMARKS.md at the repository root, written by ``make bench``.

One section per benchmark module, between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``,
so running some benchmarks (``python -m tests.bench loader``) rewrites their sections and keeps
the others. A module takes part by defining ``figures(result) -> list[Figure]``: every figure
with its ceiling or anchor and the ratio, under the machine (cores, CPU, load average when the
benchmark started) and the date it was measured.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[2] / "BENCHMARKS.md"
TITLE = "# Benchmarks"
INTRO = (
    "Written by `make bench` (`python -m tests.bench [NAME ...]` rewrites only the sections of "
    "the benchmarks it runs). Each figure stands beside its ceiling (the same work done the "
    "fastest raw way, measured in the same run) or anchor, and their ratio: the machine is "
    "shared, so compare ratios across runs rather than absolute numbers."
)


@dataclass(frozen=True)
class Figure:
    """One measured figure beside its ceiling (or anchor) and target."""

    name: str
    value: float
    unit: str
    ceiling: float | None = None
    ceiling_label: str = "ceiling"
    target: str = ""

    @property
    def ratio(self) -> float | None:
        return self.value / self.ceiling if self.ceiling else None


@dataclass(frozen=True)
class Machine:
    cores: int
    cpu: str
    load_average: tuple[float, float, float]
    date: datetime

    @staticmethod
    def now() -> Machine:
        return Machine(os.cpu_count() or 0, cpu_model(), os.getloadavg(), datetime.now(UTC))

    def describe(self) -> str:
        load = ", ".join(f"{x:.2f}" for x in self.load_average)
        return (
            f"{self.date:%Y-%m-%d %H:%M} UTC; {self.cores} cores ({self.cpu}); "
            f"load average at start {load} (1, 5, 15 min)"
        )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


def section(name: str, machine: Machine, command: str, figures: Sequence[Figure]) -> str:
    lines = [
        f"<!-- bench:{name} -->",
        f"## {name}",
        "",
        f"Measured {machine.describe()}. Command: `{command}`.",
        "",
        "| figure | value | ceiling / anchor | ratio | target |",
        "|---|---:|---:|---:|---|",
    ]
    for f in figures:
        ceiling = f"{_number(f.ceiling)} {f.unit} ({f.ceiling_label})" if f.ceiling else "-"
        ratio = f"{f.ratio:.2f}" if f.ratio is not None else "-"
        lines.append(
            f"| {f.name} | {_number(f.value)} {f.unit} | {ceiling} | {ratio} | {f.target or '-'} |"
        )
    lines.append(f"<!-- /bench:{name} -->")
    return "\n".join(lines)


def merge(existing: str, sections: dict[str, str]) -> str:
    """``existing`` with each named section replaced (or appended, in name order)."""
    body = existing if existing.startswith(TITLE) else f"{TITLE}\n\n{INTRO}\n"
    for name, text in sorted(sections.items()):
        pattern = re.compile(
            rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S
        )
        found = pattern.search(body)
        if found:
            body = body[: found.start()] + text + body[found.end() :]
        else:
            body = body.rstrip("\n") + "\n\n" + text + "\n"
    return body


def write(sections: dict[str, str], path: Path = BENCHMARKS_MD) -> Path:
    existing = path.read_text() if path.exists() else ""
    path.write_text(merge(existing, sections))
    return path
