"""The parity proof: simulated days through the live path (features service logic + inference
logic, over real Redis streams and consumer groups, decisions into the signals table) and the
offline path (batch features + the same bundle, one sequence) give identical feature vectors and
identical actions."""

from __future__ import annotations

from datetime import date

import numpy as np
import psycopg
import pytest

from its_common.db.migrate import apply_migrations
from its_common.decisions import decode_decision
from its_common.features import FEATURE_NAMES
from its_common.streams import Stream
from its_inference.bundles import load
from its_trainer.simdata import simulator_bars
from tests.inference.helpers import DEMO, PAIR, drop_bars, run_live, run_offline

# Held-out days (the demo model trained on 2025-03-03..14); two sessions: the LSTM reset and the
# capital carried across the boundary are part of the proof.
FIRST, LAST = date(2025, 3, 17), date(2025, 3, 18)


@pytest.fixture(scope="module")
def frame():
    full = simulator_bars(PAIR, FIRST, LAST, seed=42, trades_per_day=20_000)
    # Missing bars: forward-filled live and offline by the same rule.
    return drop_bars(full, [("NVDA", 37), ("MSFT", 120), ("MSFT", 121), ("NVDA", 500)])


async def test_live_and_offline_paths_agree(frame, redis_client, database_url):
    with psycopg.connect(database_url) as sync_conn:
        apply_migrations(sync_conn)
    bundle_live = load(DEMO)
    bundle_offline = load(DEMO)
    offline = run_offline(frame, bundle_offline, FIRST, LAST)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        live = await run_live(redis_client, frame, bundle_live, conn)
        cur = await conn.execute(
            "SELECT count(*), min(model_version), max(model_version) FROM signals"
        )
        count, low, high = await cur.fetchone()  # type: ignore[misc]

    data = offline.data
    assert data.episodes == 2
    # Every minute of both sessions was announced, and its vectors are the batch ones.
    worst = 0.0
    for row, ts in enumerate(data.ts.tolist()):
        fs = live.feature_sets[ts]
        for i, symbol in enumerate(PAIR):
            values = fs.symbols[symbol].values
            assert values is not None
            diff = np.max(np.abs(np.asarray(values) - data.features[row, i]))
            worst = max(worst, float(diff))
            assert fs.symbols[symbol].close == pytest.approx(data.close[row, i], abs=0, rel=0)
            assert fs.symbols[symbol].open == data.open[row, i]
            assert fs.symbols[symbol].filled == bool(data.filled[row, i])
    assert worst <= 1e-9, worst
    assert len(live.feature_sets) == len(data.ts)
    assert live.features.assembler.counters.filled == {"NVDA": 2, "MSFT": 2}
    assert int(data.filled.sum()) == 4
    assert len(FEATURE_NAMES) == 12

    # Identical actions on every minute the environment decides on (all but each session's
    # last), with the LSTM state kept across bars and reset at the second session's open.
    decided = {d.ts_ms: d for d in live.decisions}
    assert len(live.decisions) == len(data.ts)  # one decision per completed minute
    compared = 0
    for ts, action in offline.actions.items():
        assert decided[ts].action == action, (ts, decided[ts].action, action)
        compared += 1
    assert compared == len(data.ts) - data.episodes
    starts = [d.ts_ms for d in live.decisions if d.session_start]
    assert starts == [int(data.ts[b]) for b in data.bounds[:-1]]
    assert sum(d.session_last for d in live.decisions) == 2
    # The shadow portfolio is the environment: same equity after both sessions.
    assert live.inference.policy.equity == pytest.approx(offline.equity, rel=0, abs=1e-9)
    # The policy did trade (positions fed back into the observations matter).
    assert len({d.action for d in live.decisions}) > 1

    # Decisions on the stream decode (v1) and match; the signals table holds each once.
    entries = await redis_client.xrange(Stream.DECISIONS)
    assert [decode_decision(i, f) for i, f in entries] == live.decisions
    first = live.decisions[0]
    assert first.model_version == "demo" and first.demo
    assert 0 < first.confidence <= 1 and first.symbols == PAIR
    assert (count, low, high) == (len(live.decisions), "demo", "demo")
