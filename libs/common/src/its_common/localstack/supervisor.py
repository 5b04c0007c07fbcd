"""A small asyncio process supervisor for the local stack.

Why our own rather than honcho or supervisord: we need ordered start-up with readiness waits
(Redis, then PostgreSQL, then migrations, then services), restart of a crashed process with
backoff *and a visible report*, prefixed output, and a clean stop on Ctrl-C, all in-process with
no configuration files. That is ~150 lines; the alternatives either lack restarts (honcho) or need
a daemon and generated config (supervisord).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from its_common.backoff import Backoff
from its_common.localstack.console import Console


class StartError(RuntimeError):
    """A supervised process exited or never became ready during start-up."""


@dataclass
class ProcessSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], None] | None = None  # blocking check, raises until ready
    ready_timeout_s: float = 60.0
    popen_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. user/group to drop root
    stop_signal: int = signal.SIGTERM
    restart: bool = True


@dataclass
class ProcessState:
    spec: ProcessSpec
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    backoff: Backoff | None = None
    started_at: float = 0.0
    pump: asyncio.Task[None] | None = None


class Supervisor:
    """Starts processes in order, restarts crashed ones with backoff, stops all on request."""

    def __init__(self, log_dir: Path, out: TextIO = sys.stdout, max_backoff_s: float = 30.0):
        self.log_dir = log_dir
        self.console = Console(out, log_dir / "supervisor.log")
        self.max_backoff_s = max_backoff_s
        self.states: dict[str, ProcessState] = {}
        self.stopping = asyncio.Event()
        self._watchers: list[asyncio.Task[None]] = []
        self.events: list[str] = []
        width = 10
        self._width = width

    def say(self, name: str, line: str) -> None:
        """Print one prefixed line; a broken stdout never raises (see :class:`Console`)."""
        self.console.print(f"{name:<{self._width}} | {line}")

    def announce(self, name: str, line: str) -> None:
        """Printed and kept in ``supervisor.log`` (what runs where: needed when stdout is gone)."""
        self.console.record(f"{name}: {line}")
        self.say(name, line)

    def report(self, message: str) -> None:
        """A supervisor event: printed, kept in ``events`` and in ``supervisor.log``."""
        self.events.append(message)
        self.console.record(message)
        self.say("supervisor", message)

    async def start(self, spec: ProcessSpec) -> None:
        """Start one process and wait for its readiness check.

        Raises :class:`StartError` if the process exits or never gets ready.
        """
        self._width = max(self._width, len(spec.name))
        state = ProcessState(spec)
        self.states[spec.name] = state
        await self._spawn(state)
        if spec.ready is not None:
            assert state.process is not None
            give_up = threading.Event()
            ready = asyncio.create_task(asyncio.to_thread(_poll_ready, spec, give_up))
            exited = asyncio.create_task(state.process.wait())
            await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():
                give_up.set()
                await asyncio.gather(ready, return_exceptions=True)
                raise StartError(
                    f"{spec.name} exited with code {exited.result()} during start-up; "
                    f"see {self.log_dir / (spec.name + '.log')}"
                )
            exited.cancel()
            if ready.exception() is not None:
                raise StartError(str(ready.exception()))
        self._watchers.append(asyncio.create_task(self._watch(state), name=f"watch-{spec.name}"))

    async def _spawn(self, state: ProcessState) -> None:
        spec = state.spec
        env = {**os.environ, **spec.env}
        state.process = await asyncio.create_subprocess_exec(
            *spec.argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
            **spec.popen_kwargs,
        )
        state.started_at = time.monotonic()
        state.pump = asyncio.create_task(self._pump(state), name=f"pump-{spec.name}")

    async def _pump(self, state: ProcessState) -> None:
        process = state.process
        assert process is not None and process.stdout is not None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{state.spec.name}.log").open("a", encoding="utf-8") as log:
            async for raw in process.stdout:
                line = raw.decode(errors="replace").rstrip()
                log.write(line + "\n")
                log.flush()
                self.say(state.spec.name, line)

    async def _watch(self, state: ProcessState) -> None:
        while not self.stopping.is_set():
            assert state.process is not None
            code = await state.process.wait()
            if state.pump is not None:
                await asyncio.gather(state.pump, return_exceptions=True)
            if self.stopping.is_set():
                return
            if not state.spec.restart:
                self.report(f"{state.spec.name} exited with code {code}; not restarting")
                return
            uptime = time.monotonic() - state.started_at
            if state.backoff is None:
                state.backoff = Backoff(0.5, self.max_backoff_s)
            if uptime > 60:  # it ran long enough: a new crash starts a new series
                state.restarts = 0
                state.backoff.reset()
            delay = state.backoff.next_delay()
            state.restarts += 1
            self.report(
                f"{state.spec.name} exited with code {code} after {uptime:.1f}s; "
                f"restart #{state.restarts} in {delay:.1f}s"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if self.stopping.is_set():
                return
            await self._spawn(state)

    async def stop(self, timeout_s: float = 20.0) -> None:
        """Stop every process, the last started first; SIGKILL after ``timeout_s``."""
        self.stopping.set()
        for state in reversed(list(self.states.values())):
            process = state.process
            if process is None or process.returncode is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(state.spec.stop_signal)
            try:
                await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                self.report(f"{state.spec.name} did not stop in {timeout_s:.0f}s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            self.console.record(f"{state.spec.name} stopped (code {process.returncode})")
            self.say("supervisor", f"{state.spec.name} stopped (code {process.returncode})")
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)


def _poll_ready(spec: ProcessSpec, give_up: threading.Event) -> None:
    assert spec.ready is not None
    deadline = time.monotonic() + spec.ready_timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline and not give_up.is_set():
        try:
            spec.ready()
            return
        except Exception as exc:
            last = exc
            time.sleep(0.2)
    raise TimeoutError(f"{spec.name} not ready after {spec.ready_timeout_s:.0f}s: {last}")


def http_ok(url: str) -> Callable[[], None]:
    """A readiness check: GET ``url`` answers 2xx."""
    import urllib.request

    def check() -> None:
        with urllib.request.urlopen(url, timeout=2) as response:
            status: Any = response.status
            if not 200 <= int(status) < 300:
                raise RuntimeError(f"{url} answered {status}")

    return check
