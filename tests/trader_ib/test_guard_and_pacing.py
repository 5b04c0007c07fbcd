"""The paper-only guard and the request pacer of the IB adapter."""

from __future__ import annotations

import time

import pytest

from its_ibsim.server import SimOptions
from its_trader.ib_guard import (
    LiveTradingRefusedError,
    TokenBucket,
    ensure_paper,
    live_trading_allowed,
    paper_violations,
)
from its_trader.ibbroker import IbBroker, IbConfig
from tests.ibsim.support import running_sim


def test_paper_guard_is_a_pure_function() -> None:
    assert paper_violations(4002, ["DU123"]) == []
    assert paper_violations(7497, []) == []
    assert len(paper_violations(4001, ["DU123"])) == 1
    assert len(paper_violations(7496, ["U123"])) == 2
    assert "not a paper account" in paper_violations(4002, ["U9999"])[0]
    assert paper_violations(4001, ["U9999"], allow_live=True) == []
    with pytest.raises(LiveTradingRefusedError, match="ITS_ALLOW_LIVE_TRADING"):
        ensure_paper(4001)
    ensure_paper(4002, ["DU1"])


def test_live_trading_needs_the_explicit_flag() -> None:
    assert not live_trading_allowed({})
    assert not live_trading_allowed({"ITS_ALLOW_LIVE_TRADING": "no"})
    assert live_trading_allowed({"ITS_ALLOW_LIVE_TRADING": "true"})
    assert live_trading_allowed({"ITS_ALLOW_LIVE_TRADING": "TRUE"})


async def test_adapter_refuses_a_live_port_before_connecting() -> None:
    for port in (4001, 7496):
        broker = IbBroker(IbConfig(port=port, connect_attempts=1))
        started = time.monotonic()
        with pytest.raises(LiveTradingRefusedError):
            await broker.connect()
        assert time.monotonic() - started < 0.5
        assert not broker.connected
        await broker.close()


async def test_adapter_refuses_a_live_account_reported_by_the_gateway() -> None:
    async with running_sim(SimOptions(account="U7654321", tick_interval_s=0.05)) as sim:
        broker = IbBroker(IbConfig(port=sim.port, client_id=21, connect_attempts=1))
        with pytest.raises(LiveTradingRefusedError, match="U7654321"):
            await broker.connect()
        assert not broker.connected
        await broker.close()
        # A configured live account is refused before any connection is made.
        configured = IbBroker(IbConfig(port=sim.port, account="U7654321", connect_attempts=1))
        with pytest.raises(LiveTradingRefusedError):
            await configured.connect()
        assert sim.server.connections == 1
        # With the explicit opt-in the same account connects.
        allowed = IbBroker(
            IbConfig(port=sim.port, client_id=22, allow_live=True, connect_attempts=1)
        )
        await allowed.connect()
        try:
            assert allowed.account == "U7654321"
        finally:
            await allowed.close()


async def test_token_bucket_paces_under_fifty_per_second() -> None:
    bucket = TokenBucket()
    n = 100
    started = time.monotonic()
    for _ in range(n):
        await bucket.acquire()
    assert time.monotonic() - started >= n / 50


async def test_adapter_requests_are_paced_on_the_wire() -> None:
    async with running_sim(SimOptions(tick_interval_s=0.05)) as sim:
        broker = IbBroker(IbConfig(port=sim.port, client_id=23, connect_attempts=1))
        await broker.connect()
        try:
            sim.server.request_times.clear()
            n = 70
            started = time.monotonic()
            for _ in range(n):
                assert await broker.open_orders() == []
            elapsed = time.monotonic() - started
            assert elapsed >= n / 50
            assert len(sim.server.request_times) >= n
            assert sim.server.message_rate(1.0) < 50
        finally:
            await broker.close()
