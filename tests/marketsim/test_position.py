"""A replay continues where the previous run stopped (``--position-path``, `make run`)."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from its_common.localstack.servers import free_port
from its_common.simmarket.sessions import NEW_YORK
from its_marketsim import position
from its_marketsim.app import Simulator
from tests.marketsim.support import config
from tests.processes import service


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=NEW_YORK).timestamp() * 1000)


SATURDAY = ms("2026-11-21T11:00")
FRIDAY_OPEN = ms("2026-11-20T09:30")
FRIDAY_1305 = ms("2026-11-20T13:05")


def test_a_weekend_replay_continues_from_the_saved_position() -> None:
    cfg = config(start="auto")
    fresh = Simulator(cfg, wall_ms=SATURDAY)
    assert fresh.clock.now_ms() == FRIDAY_OPEN and not fresh.resumed
    again = Simulator(cfg, wall_ms=SATURDAY, saved_ms=FRIDAY_1305)
    assert again.clock.now_ms() == FRIDAY_1305 and again.resumed


def test_a_position_outside_the_replayed_session_starts_over_and_live_stays_live() -> None:
    cfg = config(start="auto")
    thursday = ms("2026-11-19T13:05")  # an older session: Friday is the latest now
    assert Simulator(cfg, wall_ms=SATURDAY, saved_ms=thursday).clock.now_ms() == FRIDAY_OPEN
    monday_open_now = ms("2026-11-23T10:00")  # the market is open: live, whatever was saved
    live = Simulator(cfg, wall_ms=monday_open_now, saved_ms=FRIDAY_1305)
    assert live.clock.now_ms() == monday_open_now and not live.resumed
    explicit = Simulator(config(start="2026-11-20"), wall_ms=SATURDAY, saved_ms=FRIDAY_1305)
    assert explicit.clock.now_ms() == FRIDAY_OPEN  # a start the user chose is kept


def test_the_position_file_round_trips_and_bad_content_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "marketsim" / "position.json"
    assert position.load(path) is None
    position.save(path, FRIDAY_1305)
    assert position.load(path) == FRIDAY_1305
    path.write_text('{"pos_ms": "soon"}')
    assert position.load(path) is None
    path.write_text("not json")
    assert position.load(path) is None


def test_the_service_saves_its_position_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "position.json"
    env = {
        "ITS_MARKETSIM_PORT": str(free_port()),
        "ITS_MARKETSIM_REST_PORT": str(free_port()),
        "ITS_MARKETSIM_POSITION_PATH": str(path),
    }
    with service("marketsim", tmp_path, env):
        pass  # started (healthy), then SIGTERM
    saved = position.load(path)
    assert saved is not None and abs(saved - int(time.time() * 1000)) < 8 * 86_400_000
