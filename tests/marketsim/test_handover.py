"""The handover folder of the generator process: a killed simulator's folder is removed by the
next one (a SIGKILL leaves no chance to clean up)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from its_marketsim import handover


def test_arrays_come_back_equal_and_their_files_are_gone() -> None:
    where = handover.folder()
    try:
        big = np.arange(1_000_000, dtype=np.int64)
        back = handover.loads(handover.dumps({"big": big, "small": big[:10].copy()}, where))
        assert np.array_equal(back["big"], big) and back["small"].tolist() == list(range(10))
        assert os.listdir(where) == []  # mapped, then unlinked at once
    finally:
        handover.remove(where)


def test_the_folder_of_a_killed_simulator_is_removed_by_the_next_one() -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(gone.stdout)
    mine = handover.folder()
    base = os.path.dirname(mine)
    orphan = os.path.join(base, f"{handover.PREFIX}{dead_pid}-leftover")
    os.makedirs(orphan)
    with open(os.path.join(orphan, "day.npy"), "wb") as f:
        f.write(b"x")
    try:
        again = handover.folder()
        assert not os.path.exists(orphan)
        assert os.path.isdir(mine)  # a live simulator's folder stays
        handover.remove(again)
    finally:
        handover.remove(mine)
        handover.remove(orphan)
