"""Polygon's stocks WebSocket protocol (path ``/stocks``): status messages, auth, subscriptions,
the one-connection-per-key policy, a bounded send buffer per connection, and faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections import deque
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from its_common.events import Status, encode_frame
from its_common.simmarket.config import SimConfig
from its_marketsim.faults import FaultState
from its_marketsim.stream import Stream, Subscriptions

log = logging.getLogger("its.marketsim.ws")
EVENT_PREFIXES = ("T", "Q", "A", "AM")
SLOW_READER_CODE = 1011
SLOW_READER_REASON = "keepalive ping timeout"


def status_frame(status: str, message: str) -> bytes:
    return encode_frame([Status(status=status, message=message)])


class Connection:
    """One client: its auth state, subscriptions and outgoing queue (bounded in bytes)."""

    _ids = 0

    def __init__(self, ws: ServerConnection, server: MarketWebSocketServer) -> None:
        Connection._ids += 1
        self.id = Connection._ids
        self.ws = ws
        self.server = server
        self.key: str | None = None
        self.authenticated = False
        self.subs = Subscriptions()
        self.closing = False
        self.connected_at = time.monotonic()
        self._queue: deque[tuple[float, bytes]] = deque()
        self._buffered = 0
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._progress = asyncio.Event()
        self.sender: asyncio.Task[None] | None = None

    def mark_closed(self) -> None:
        self.closing = True
        self._progress.set()
        self._drained.set()

    def is_closing(self) -> bool:
        return self.closing

    @property
    def active(self) -> bool:
        return self.authenticated and not self.closing

    @property
    def buffered(self) -> int:
        return self._buffered

    def enqueue(self, frame: bytes, control: bool = False, bounded: bool = True) -> None:
        """Queue a frame; a data frame that would overflow the buffer closes with 1011."""
        if self.closing:
            return
        if self.server.faults.stall and not control:
            return  # a stalled feed loses what it would have sent
        limit = self.server.config.send_buffer_bytes
        if bounded and not control and self._buffered + len(frame) > limit:
            self.overflow()
            return
        self._queue.append((time.monotonic(), frame))
        self._buffered += len(frame)
        self._drained.clear()
        self._wakeup.set()

    def status(self, status: str, message: str) -> None:
        self.enqueue(status_frame(status, message), control=True)

    def overflow(self) -> None:
        """The client does not read fast enough: drop what is queued and close with 1011."""
        if self.closing:
            return
        log.warning("slow reader: closing connection %d with 1011", self.id)
        self.server.slow_reader_drops += 1
        self._queue.clear()
        self._buffered = 0
        self._drained.set()
        self._progress.set()
        self.closing = True
        asyncio.get_running_loop().create_task(
            self._close_now(SLOW_READER_CODE, SLOW_READER_REASON)
        )

    async def wait_buffered_below(self, limit: int, within_s: float) -> bool:
        deadline = time.monotonic() + within_s
        while self._buffered > limit and not self.closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                return False
        return True

    async def run_sender(self) -> None:
        faults = self.server.faults
        try:
            while True:
                while not self._queue:
                    self._drained.set()
                    self._wakeup.clear()
                    await self._wakeup.wait()
                if faults.stall:
                    await faults.unstalled().wait()
                queued_at, frame = self._queue[0]
                if faults.delay_ms > 0:
                    due = queued_at + faults.delay_ms / 1000 - time.monotonic()
                    if due > 0:
                        await asyncio.sleep(due)
                if not self._queue or self._queue[0][1] is not frame:
                    continue  # the queue was cleared meanwhile
                self._queue.popleft()
                self._buffered -= len(frame)
                await self.ws.send(frame, text=True)
                self._progress.set()
        except ConnectionClosed:
            pass

    async def close(self, code: int, reason: str = "") -> None:
        """Send what is queued (for at most a second), then close with ``code``."""
        self.closing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), 1.0)
        await self._close_now(code, reason)

    async def _close_now(self, code: int, reason: str) -> None:
        if self.sender is not None:
            self.sender.cancel()
        try:
            await self.ws.close(code, reason)
        except Exception:  # the peer may already be gone
            log.debug("close of connection %d failed", self.id, exc_info=True)

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (the client sees 1006)."""
        self.closing = True
        if self.sender is not None:
            self.sender.cancel()
        self.ws.transport.abort()


class MarketWebSocketServer:
    def __init__(self, config: SimConfig, faults: FaultState, stream: Stream) -> None:
        self.config = config
        self.faults = faults
        self.stream = stream
        self.connections: set[Connection] = set()
        self.by_key: dict[str, list[Connection]] = {}
        self.slow_reader_drops = 0
        self.server: Server | None = None

    async def start(self, host: str, port: int) -> int:
        self.server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            compression=None,
            max_size=1 << 20,
            write_limit=1 << 20,
        )
        sockets = list(self.server.sockets)
        return int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0].rstrip("/")
        if path != "/stocks":
            return connection.respond(HTTPStatus.NOT_FOUND, "not found: use /stocks\n")
        if self.faults.refusing_for() > 0:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "connections refused\n")
        return None

    def drop_all(self, code: int | None = None) -> int:
        """Fault: drop every connection now (abort, or close with ``code``)."""
        victims = list(self.connections)
        for conn in victims:
            if code is None:
                conn.abort()
            else:
                asyncio.get_running_loop().create_task(conn._close_now(code, "dropped"))
                conn.closing = True
        return len(victims)

    async def _handle(self, ws: ServerConnection) -> None:
        conn = Connection(ws, self)
        self.connections.add(conn)
        self.stream.subscribers.add(conn)
        conn.sender = asyncio.create_task(conn.run_sender())
        conn.status("connected", "Connected Successfully")
        try:
            await self._session(conn)
        except ConnectionClosed:
            pass
        finally:
            conn.mark_closed()
            self.connections.discard(conn)
            self.stream.subscribers.discard(conn)
            if conn.key is not None and conn in self.by_key.get(conn.key, []):
                self.by_key[conn.key].remove(conn)
                if not self.by_key[conn.key]:
                    del self.by_key[conn.key]
            if conn.sender is not None:
                conn.sender.cancel()

    async def _session(self, conn: Connection) -> None:
        deadline = time.monotonic() + self.config.auth_timeout_s
        while not conn.closing:
            if not conn.authenticated:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    conn.status("auth_timeout", "No authentication request received.")
                    await conn.close(self.config.auth_close_code, "auth timeout")
                    return
                try:
                    raw = await asyncio.wait_for(conn.ws.recv(), remaining)
                except TimeoutError:
                    continue
            else:
                raw = await conn.ws.recv()
            for message in _messages(raw):
                if message is None:
                    conn.status("error", "invalid message: expected JSON with action and params")
                    continue
                await self._on_message(conn, message)
                if conn.is_closing():
                    return

    async def _on_message(self, conn: Connection, message: dict[str, Any]) -> None:
        action = message.get("action")
        params = message.get("params", "")
        if not isinstance(params, str):
            params = ""
        if action == "auth":
            await self._auth(conn, params)
        elif action in ("subscribe", "unsubscribe"):
            if not conn.authenticated:
                conn.status("error", "not authorized: authenticate first")
                return
            self._subscribe(conn, params, action == "subscribe")
        else:
            conn.status("error", f"unknown action: {action!r}")

    async def _auth(self, conn: Connection, key: str) -> None:
        if conn.authenticated:
            conn.status("auth_success", "authenticated")
            return
        valid = any(hmac.compare_digest(key.encode(), k.encode()) for k in self.config.api_keys)
        if self.faults.reject_auth or not valid:
            conn.status("auth_failed", "authentication failed")
            await conn.close(self.config.auth_close_code, "authentication failed")
            return
        others = [c for c in self.by_key.get(key, []) if not c.closing]
        if len(others) >= self.config.max_connections_per_key:
            message = "Maximum number of connections exceeded."
            code = self.config.max_connections_close_code
            if self.config.max_connections_drop == "newest":
                conn.status("max_connections", message)
                await conn.close(code, "max connections")
                return
            excess = len(others) - self.config.max_connections_per_key + 1
            for old in sorted(others, key=lambda c: c.connected_at)[:excess]:
                old.status("max_connections", message)
                asyncio.get_running_loop().create_task(old.close(code, "max connections"))
                old.closing = True
        conn.key = key
        conn.authenticated = True
        self.by_key.setdefault(key, []).append(conn)
        conn.status("auth_success", "authenticated")

    def _subscribe(self, conn: Connection, params: str, add: bool) -> None:
        verb = "subscribed to" if add else "unsubscribed to"
        for topic in (p.strip() for p in params.split(",")):
            if not topic:
                continue
            kind, _, symbol = topic.partition(".")
            if kind not in EVENT_PREFIXES or not symbol:
                conn.status("error", f"invalid topic: {topic}")
                continue
            symbol = symbol.upper()
            if add:
                conn.subs.add(kind, symbol)
            else:
                conn.subs.remove(kind, symbol)
            conn.status("success", f"{verb}: {kind}.{symbol}")
        self.stream.subscriptions_changed()


def _messages(raw: str | bytes) -> list[dict[str, Any] | None]:
    try:
        parsed = json.loads(raw)
    except ValueError:
        return [None]
    items = parsed if isinstance(parsed, list) else [parsed]
    return [item if isinstance(item, dict) else None for item in items]
