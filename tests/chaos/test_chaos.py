"""The short chaos variant in the normal test run: a fault of each kind against the whole stack,
then everything compared with the simulator's REST truth (see tests/chaos/runner.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.runner import run


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_short_chaos_run_holds(tmp_path: Path) -> None:
    outcome = run("short", seed=1, work_dir=tmp_path, say=lambda line: print(line, flush=True))
    print(outcome.text)
    assert outcome.held, outcome.text
