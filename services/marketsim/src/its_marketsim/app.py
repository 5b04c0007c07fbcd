"""Wires the simulator: market source, clock, stream, WebSocket server, REST + admin server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from aiohttp import web

from its_common.simmarket import pattern, sessions
from its_common.simmarket.config import SimConfig
from its_common.simmarket.daydata import MarketSource
from its_common.simmarket.market import MarketGenerator
from its_common.simmarket.wholemarket import Tail, TailConfig
from its_marketsim import position
from its_marketsim.admin import AdminApi
from its_marketsim.clock import SimClock, parse_start
from its_marketsim.dayworker import DayWorker
from its_marketsim.faults import FaultState
from its_marketsim.replay import ReplaySource
from its_marketsim.rest import RestApi
from its_marketsim.stream import Stream
from its_marketsim.wsserver import MarketWebSocketServer

if TYPE_CHECKING:
    from its_common.runtime import ServiceContext
    from its_marketsim.config import MarketSimSettings

log = logging.getLogger("its.marketsim")


def whole_market_tail(config: SimConfig, taken: tuple[str, ...]) -> Tail | None:
    """The whole market's other tickers, when configured (``whole_market_symbols`` > 0)."""
    if config.whole_market_symbols <= 0:
        return None
    return Tail(
        TailConfig(
            symbols=config.whole_market_symbols,
            rate=config.whole_market_rate,
            zipf=config.whole_market_zipf,
            burst_rate=config.whole_market_burst_rate,
            burst_every_s=config.whole_market_burst_every_s,
            burst_s=config.whole_market_burst_s,
            seed=config.seed,
        ),
        taken,
    )


class Simulator:
    """The whole simulator in-process: ``async with Simulator(config) as sim: ...``."""

    def __init__(
        self, config: SimConfig, wall_ms: int | None = None, saved_ms: int | None = None
    ) -> None:
        """``saved_ms``: where a previous run's replay stopped (:mod:`its_marketsim.position`);
        used when it lies in the session ``start=auto`` replays (``self.resumed`` then)."""
        self.config = config
        self.resumed = False
        self.faults = FaultState()
        self.faults.update(config.faults)
        source: MarketSource
        self.generator: MarketGenerator | None = None
        self.day_worker: DayWorker | None = None
        if config.replay_file:
            replay = ReplaySource(config.replay_file, config)
            source = replay
            start = (
                replay.first_trade_ms
                if config.start.strip().lower() in ("auto", "")
                else parse_start(config.start, replay, wall_ms)
            )
        else:
            generator = MarketGenerator(config, anchor=date.today())
            source = generator
            start = parse_start(config.start, generator, wall_ms)
            if config.start.strip().lower() == "auto":
                wall = wall_ms if wall_ms is not None else int(time.time() * 1000)
                resumed = position.continue_from(saved_ms, start, generator, wall)
                if resumed is not None:
                    start, self.resumed = resumed, True
            generator.anchor = sessions.ny_date(start)
            self.generator = generator
        self.source = source
        self.clock = SimClock(start, config.speed)
        self.tail = whole_market_tail(config, tuple(source.symbols))
        self.stream = Stream(source, config, self.faults, self.clock, self.tail)
        self.ws = MarketWebSocketServer(config, self.faults, self.stream)
        self.rest = RestApi(config, source, self.clock)
        self.ws_port = 0
        self.rest_port = 0
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def build_http_app(self) -> web.Application:
        app = web.Application()
        self.rest.routes(app)
        if self.config.admin_enabled:
            AdminApi(self.faults, self.ws, self.stream, self.config.admin_token).routes(app)

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        app.router.add_get("/healthz", healthz)
        return app

    async def start(self) -> None:
        if self.generator is not None and self.stream.source is self.generator:
            # days are generated in a process of their own
            self.day_worker = DayWorker(self.generator)
            self.stream.days = self.day_worker.day
        self.ws_port = await self.ws.start(self.config.host, self.config.port)
        self._runner = web.AppRunner(self.build_http_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.rest_port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.rest_port = int(sockets[0].getsockname()[1])
        self._task = asyncio.create_task(self.stream.run(self._stopping), name="marketsim-stream")
        log.info(
            "market simulator listening",
            extra={
                "ws_url": f"ws://{self.config.host}:{self.ws_port}/stocks",
                "rest_url": f"http://{self.config.host}:{self.rest_port}",
                "symbols": list(self.source.symbols),
                "speed": "max" if self.clock.max_speed else self.clock.speed,
                "start_ms": self.clock.now_ms(),
                "demo_pattern": self.config.demo_pattern,
            },
        )
        if self.config.demo_pattern:
            log.warning(
                "DEMO market with a planted pattern (%s v%d): every hour each symbol's price "
                "rises %.1f %% over %d minutes and falls back over the rest of the hour; not a "
                "real market (its_common.simmarket.pattern)",
                pattern.DEMO_PATTERN_NAME, pattern.DEMO_PATTERN_VERSION,
                pattern.DEMO_PATTERN_MOVE * 100, pattern.DEMO_PATTERN_RISE_MIN,
            )  # fmt: skip

    async def stop(self) -> None:
        self._stopping.set()
        self.stream.stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.day_worker is not None:
            await asyncio.to_thread(self.day_worker.stop)
        await self.ws.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _ny(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=sessions.NEW_YORK).strftime("%a %Y-%m-%d %H:%M")


async def main(ctx: ServiceContext[MarketSimSettings]) -> None:
    """Service entry point under ``its_common.runtime.run_service``."""
    from prometheus_client import Gauge

    config = ctx.settings.to_config()
    path = Path(ctx.settings.position_path) if ctx.settings.position_path else None
    sim = Simulator(config, saved_ms=position.load(path) if path else None)
    _announce_start(sim, path)
    registry = ctx.registry
    Gauge("marketsim_connections", "Open WebSocket connections", registry=registry).set_function(
        lambda: len(sim.ws.connections)
    )
    Gauge("marketsim_events_sent", "Events encoded for sending", registry=registry).set_function(
        lambda: sim.stream.events_sent
    )
    Gauge("marketsim_frames_sent", "Frames encoded for sending", registry=registry).set_function(
        lambda: sim.stream.frames_sent
    )
    Gauge("marketsim_slow_reader_drops", "Connections closed 1011", registry=registry).set_function(
        lambda: sim.ws.slow_reader_drops
    )
    Gauge("marketsim_clock_ms", "Simulation clock (Unix ms)", registry=registry).set_function(
        sim.clock.now_ms
    )
    await sim.start()

    async def stream_running() -> None:
        if sim._task is None or sim._task.done():
            raise RuntimeError("stream not running")

    ctx.add_readiness_check("stream", stream_running)
    try:
        while not ctx.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.stopping.wait(), position.SAVE_EVERY_S)
            if path is not None:
                _save_position(path, sim.clock.now_ms())
    finally:
        await sim.stop()
        if path is not None:
            _save_position(path, sim.clock.now_ms())


def _save_position(path: Path, pos_ms: int) -> None:
    try:
        position.save(path, pos_ms)
    except OSError as exc:  # the stream goes on; the next run would start over
        log.warning("replay position not saved to %s: %s", path, exc)


def _announce_start(sim: Simulator, path: Path | None) -> None:
    """Say where the stream starts: live, a replay from the opening, or continuing one."""
    start = sim.clock.now_ms()
    when = _ny(start)
    if sim.resumed:
        log.info("continuing the replay where the last run stopped: %s ET (%s)", when, path)
    elif start < int(time.time() * 1000) - 60_000:
        note = f"; saved in {path}, the next run continues from there" if path else ""
        log.info("market closed now: replaying from %s ET%s", when, note)
