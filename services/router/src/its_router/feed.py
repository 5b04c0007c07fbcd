"""The WebSocket session with Polygon (or the simulator): connect, auth, subscribe, read.

The read loop only stamps each frame with its receive time and puts it on a bounded queue; it
never parses market data and never touches Redis. A full queue drops the frame, counts it and
records a gap window. Around it: reconnect forever with capped exponential backoff and jitter,
resubscribe, a staleness watchdog, live symbol changes, and the gap published after every
reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from its_common import calendar
from its_common.backoff import Backoff
from its_common.events import CodecError, Status, decode_frame
from its_common.feed_status import SLOW_CONSUMER
from its_common.gaps import GapWindow
from its_common.streams import now_ms
from its_common.symbols import read_symbols
from its_router.batching import Frame
from its_router.config import RouterSettings
from its_router.metrics import RouterMetrics
from its_router.status import StatusPublisher
from its_router.subscriptions import diff, feed_topics, subscribe_message

log = logging.getLogger("its.router.feed")
SLOW_CONSUMER_CLOSE_CODE = 1011


class AuthFailedError(Exception):
    """The feed rejected the API key: a configuration error, not a network one."""


class MaxConnectionsError(Exception):
    """The feed allows one connection per key; another client holds it."""


class StaleFeedError(Exception):
    """Nothing arrived for too long during market hours."""


class FeedClient:
    def __init__(
        self,
        settings: RouterSettings,
        api_key: str,
        queue: asyncio.Queue[Frame],
        metrics: RouterMetrics,
        status: StatusPublisher,
        record_gap: Callable[[GapWindow], None],
        feed_clock: Callable[[], int | None] = lambda: None,
        symbols_source: Callable[[list[str]], Awaitable[list[str]]] | None = None,
    ) -> None:
        self.settings = settings
        self.api_key = api_key
        self.queue = queue
        self.metrics = metrics
        self.status = status
        self.record_gap = record_gap
        self.feed_clock = feed_clock
        self.gap_before = ""  # set on a drop or a reconnect; carried by the next queued frame
        self.symbols = list(settings.symbols)
        self.symbols_source = symbols_source or (
            lambda current: read_symbols(status.redis, settings.symbols_key, current)
        )
        self.backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self.last_message_ms: int | None = None
        self.subscribed = False
        self.fatal: str | None = None
        self._overflow_start: int | None = None
        self._overflow_end = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        self.symbols = await self.symbols_source(self.symbols)
        while not stopping.is_set():
            delay: float
            try:
                await self._session(stopping)
                delay = 0 if stopping.is_set() else self.backoff.next_delay()
                cause = "closed"
            except AuthFailedError as exc:
                self.fatal = f"auth_failed: {exc}"
                log.error(
                    "the feed rejected the API key (%s). Check POLYGON_API_KEY; "
                    "not retrying for %.0fs",
                    exc,
                    self.settings.auth_failed_retry_s,
                    extra={"alert": "feed_auth_failed"},
                )
                await self.status.publish("auth_failed", str(exc))
                delay, cause = self.settings.auth_failed_retry_s, "auth_failed"
            except MaxConnectionsError as exc:
                log.error(
                    "max_connections: another client uses this API key (%s); backing off %.0fs",
                    exc,
                    self.settings.max_connections_backoff_s,
                    extra={"alert": "feed_max_connections"},
                )
                await self.status.publish("max_connections", str(exc))
                delay, cause = self.settings.max_connections_backoff_s, "max_connections"
            except StaleFeedError as exc:
                await self.status.publish("stale", str(exc))
                delay, cause = 0.0, "stale"
            except (OSError, TimeoutError, websockets.WebSocketException, CodecError) as exc:
                delay, cause = self.backoff.next_delay(), "error"
                state = "disconnected"
                if closed_as_slow_consumer(exc):
                    # The feed gave up on us: we read too slowly (a frozen or overloaded
                    # process). The alerter's feed_overflow rule reads this state.
                    state = cause = SLOW_CONSUMER
                    log.error(
                        "the feed closed the connection as a slow consumer (%s)",
                        exc,
                        extra={"alert": "feed_overflow"},
                    )
                log.warning(
                    "feed connection lost (%s: %s); reconnecting in %.1fs",
                    type(exc).__name__,
                    exc,
                    delay,
                )
                # Not "subscribed" any more: the alerter's feed_disconnected rule reads this.
                await self.status.publish(state, f"{type(exc).__name__}: {exc}")
            self._disconnected(cause)
            if stopping.is_set():
                return
            self.metrics.reconnects.labels(cause).inc()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)

    def _disconnected(self, cause: str) -> None:
        if self.subscribed:
            log.warning("feed disconnected (%s)", cause)
        self.subscribed = False
        self.metrics.connected.set(0)

    async def _session(self, stopping: asyncio.Event) -> None:
        async with websockets.connect(
            self.settings.polygon_ws_url,
            open_timeout=10,
            ping_interval=20,
            ping_timeout=20,
            max_size=None,
            max_queue=64,
            compression=None,
            close_timeout=2,
        ) as ws:
            await self._handshake(ws)
            self.fatal = None
            self.backoff.reset()
            self._publish_reconnect_gap()
            await self.status.publish("subscribed", ",".join(self.symbols))
            tasks = [
                asyncio.create_task(self._read(ws), name="feed-read"),
                asyncio.create_task(self._watchdog(), name="feed-watchdog"),
                asyncio.create_task(self._watch_symbols(ws), name="feed-symbols"),
                asyncio.create_task(stopping.wait(), name="feed-stop"),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await cancel_until_done(tasks)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]

    async def _handshake(self, ws: ClientConnection) -> None:
        timeout = self.settings.auth_timeout_s
        await self._expect(ws, {"connected"}, timeout)
        await ws.send(json.dumps({"action": "auth", "params": self.api_key}))
        await self._expect(ws, {"auth_success"}, timeout)
        wanted = feed_topics(self.symbols, self.settings.channels, self.settings.subscribe_all)
        await ws.send(json.dumps(subscribe_message("subscribe", wanted)))
        self.subscribed = True
        self.metrics.connected.set(1)
        log.info("subscribed", extra={"topics": wanted, "url": self.settings.polygon_ws_url})

    async def _expect(self, ws: ClientConnection, wanted: set[str], within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {'/'.join(sorted(wanted))} status within {within_s:.0f}s")
            raw = await asyncio.wait_for(ws.recv(decode=False), remaining)
            for event in decode_frame(raw):
                if isinstance(event, Status):
                    self._check_status(event)
                    if event.status in wanted:
                        return

    def _check_status(self, status: Status) -> None:
        self.metrics.feed_status.labels(status.status).inc()
        if status.status == "auth_failed":
            raise AuthFailedError(status.message or "authentication failed")
        if status.status == "max_connections":
            raise MaxConnectionsError(status.message)
        if status.status in {"auth_timeout", "error"}:
            log.warning("feed status %s: %s", status.status, status.message)

    # -- the hot loop ------------------------------------------------------------------------

    async def _read(self, ws: ClientConnection) -> None:
        queue, metrics = self.queue, self.metrics
        frames = metrics.frames
        while True:
            payload = await ws.recv(decode=False)
            received = now_ms()
            self.last_message_ms = received
            frames.inc()
            if may_hold_status(payload):
                self._statuses(payload)
            try:
                queue.put_nowait(Frame(received, payload, "ws", self.gap_before))
                self.gap_before = ""
            except asyncio.QueueFull:
                self._overflow(received)
                self.gap_before = "queue_overflow"

    def _statuses(self, payload: bytes) -> None:
        try:
            events = decode_frame(payload)
        except CodecError:
            return  # a malformed frame: the writer dead-letters it
        for event in events:
            if isinstance(event, Status):
                self._check_status(event)

    def _overflow(self, received_ms: int) -> None:
        self.metrics.queue_dropped_frames.inc()
        if self._overflow_start is None:
            self._overflow_start = received_ms
            log.error(
                "read queue full (%d frames): dropping frames, recording the window as a gap",
                self.queue.maxsize,
                extra={"alert": "router_queue_overflow"},
            )
        self._overflow_end = received_ms
        if self.queue.qsize() < self.queue.maxsize // 2:
            self._close_overflow()

    def _close_overflow(self) -> None:
        if self._overflow_start is None:
            return
        # The gap itself is exact: the next queued frame carries gap_before (feed clock).
        log.warning(
            "read queue recovered after dropping frames for %.1fs",
            (self._overflow_end - self._overflow_start) / 1000,
        )
        self._overflow_start = None

    # -- around the loop ---------------------------------------------------------------------

    async def _watchdog(self) -> None:
        stale_ms = int(self.settings.stale_after_s * 1000)
        started = now_ms()
        tick_s = min(1.0, self.settings.stale_after_s / 4)
        while True:
            ticked = time.monotonic()
            await asyncio.sleep(tick_s)
            if time.monotonic() - ticked > tick_s + self.settings.stale_after_s / 2:
                # This process did not run for a while (frozen, starved): the silence is its
                # own, not the feed's. Judge the feed from now on, after the read loop has seen
                # what arrived meanwhile (a close for falling behind is reported as such).
                started = now_ms()
            if self._overflow_start is not None and self.queue.qsize() < self.queue.maxsize // 2:
                self._close_overflow()
            last = self.last_message_ms or started
            if self.last_message_ms:
                self.metrics.last_message_ts.set(self.last_message_ms / 1000)
            await self.status.retry()  # a state Redis did not take (paused, restarting)
            silent = now_ms() - max(last, started)
            if silent < stale_ms:
                continue
            if self.settings.watchdog_always or calendar.is_open(datetime.now(UTC)):
                log.warning(
                    "no data for %.1fs during market hours; reconnecting",
                    silent / 1000,
                    extra={"alert": "feed_stale"},
                )
                raise StaleFeedError(f"no data for {silent / 1000:.1f}s")

    async def _watch_symbols(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.settings.symbols_poll_s)
            wanted = await self.symbols_source(self.symbols)
            if wanted == self.symbols:
                continue
            add, remove = diff(self.symbols, wanted, self.settings.channels)
            if self.settings.subscribe_all:  # every ticker already: the list names the gaps
                add, remove = [], []
            if remove:
                await ws.send(json.dumps(subscribe_message("unsubscribe", remove)))
            if add:
                await ws.send(json.dumps(subscribe_message("subscribe", add)))
            log.info("symbols changed", extra={"old": self.symbols, "new": wanted})
            if add:
                # Newly added symbols have no history here: let storage backfill today.
                market_now = self.feed_clock() or now_ms()
                self.record_gap(
                    GapWindow(
                        tuple(s for s in wanted if s not in self.symbols),
                        market_now - 3_600_000,
                        market_now,
                        "symbol_added",
                    )
                )
            self.symbols = wanted
            await self.status.publish("subscribed", ",".join(self.symbols))

    def _publish_reconnect_gap(self) -> None:
        """After a reconnect, the first frame carries the gap: the writer bounds it by the
        newest event before the drop and the first event after it (the feed's clock)."""
        if self.last_message_ms is None:
            return
        self.gap_before = "reconnect"

    async def ready(self) -> None:
        """Readiness: authenticated and subscribed."""
        if self.fatal:
            raise RuntimeError(self.fatal)
        if not self.subscribed:
            raise RuntimeError("feed not connected")


def may_hold_status(payload: bytes) -> bool:
    """Whether a frame may hold a status message (``auth_failed``, ``max_connections``, ...).

    First a one-byte search (memchr) for ``u``, which every status has (``"status"``) and no
    market event's keys, numbers or upper-case tickers do: 30 times cheaper on a data frame
    than the pattern search alone, which cost 5-7 % of the router on Polygon-like frames.
    A frame with a ``u`` elsewhere (a new field) is searched as before.
    """
    return b"u" in payload and b'"ev":"status"' in payload


def closed_as_slow_consumer(exc: BaseException) -> bool:
    """Whether the feed closed the connection with 1011, as Polygon closes a reader whose
    buffer on its side overflowed ("keepalive ping timeout")."""
    received = getattr(exc, "rcvd", None) if isinstance(exc, websockets.ConnectionClosed) else None
    return received is not None and received.code == SLOW_CONSUMER_CLOSE_CODE


async def cancel_until_done(tasks: list[asyncio.Task[Any]], every_s: float = 1.0) -> None:
    """Cancel ``tasks`` and wait until all have ended, cancelling again the ones still running.

    One cancellation is not always enough: on Python 3.11 a cancellation that races with the
    completion of an inner ``wait_for`` (a Redis reply arriving at the same moment, as after a
    SIGSTOP) is lost, and the task carries on. Awaiting it unbounded left the router connected
    to nothing, for good (found by the chaos suite's slow-reader fault)."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every_s)
    await asyncio.gather(*tasks, return_exceptions=True)
