"""Where a replay stopped, so the next run continues there (``ITS_MARKETSIM_POSITION_PATH``).

On a weekend or holiday ``start=auto`` replays the latest session from its opening. `make run`
gives the simulator a file under ``var/``; the clock's position is saved there every few
seconds and on stop, and the next start continues from it when it lies inside the very session
``auto`` would replay again. Anything else (the market is open now: live; a later session is
the latest; the replay ran past its session; a file that cannot be read) starts as ``auto``
says, and the log says which.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from its_common.simmarket.daydata import MarketSource

log = logging.getLogger("its.marketsim.position")
SAVE_EVERY_S = 5.0


def load(path: Path) -> int | None:
    """The saved position (Unix ms), None when there is none or it cannot be read (logged)."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("replay position not read (%s: %s): starting as configured", path, exc)
        return None
    try:
        value = json.loads(raw)["pos_ms"]
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"pos_ms is {type(value).__name__}")
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("replay position in %s unreadable (%s): starting as configured", path, exc)
        return None
    return value


def save(path: Path, pos_ms: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pos_ms": pos_ms}) + "\n")
    os.replace(tmp, path)


def continue_from(
    saved_ms: int | None, auto_start_ms: int, source: MarketSource, wall_ms: int
) -> int | None:
    """``saved_ms`` when it lies inside the session that ``auto`` (``auto_start_ms``) replays."""
    if saved_ms is None or auto_start_ms >= wall_ms:  # live: the market is open now
        return None
    window = source.last_window_before(wall_ms)
    if window is None or window[1] != auto_start_ms:
        return None
    return saved_ms if window[1] < saved_ms < window[2] else None
