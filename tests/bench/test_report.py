"""BENCHMARKS.md sections: a run rewrites its own benchmarks' sections and keeps the others."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from tests.bench.report import Figure, Machine, section, write

MACHINE = Machine(2, "test cpu", (1.5, 2.0, 2.5), datetime(2026, 11, 28, 12, 0, tzinfo=UTC))


def test_sections_are_replaced_in_place_and_others_kept(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    first = Figure("loader new trades", 200_000, "rows/s", 250_000, "COPY", ">= 150,000 rows/s")
    write({"loader_bench": section("loader_bench", MACHINE, "make bench", [first])}, path)
    write({"router_bench": section("router_bench", MACHINE, "make bench", [])}, path)
    second = Figure("loader new trades", 100_000, "rows/s", 400_000, "COPY")
    write({"loader_bench": section("loader_bench", MACHINE, "make bench", [second])}, path)

    text = path.read_text()
    assert text.startswith("# Benchmarks\n")
    assert text.count("<!-- bench:loader_bench -->") == 1
    assert text.index("loader_bench") < text.index("router_bench")
    assert "| loader new trades | 100,000 rows/s | 400,000 rows/s (COPY) | 0.25 | - |" in text
    assert "200,000" not in text
    assert "2 cores (test cpu); load average at start 1.50, 2.00, 2.50" in text
    assert "2026-11-28 12:00 UTC" in text
