"""Crash-only task supervision: a service's essential tasks run until the service stops.

A service whose essential work stopped must not stay up looking healthy. :func:`run_essential`
runs a service's long-lived tasks (a feed reader, a stream writer, consumers, control loops) and,
when any of them ends before the stop signal (by returning or by raising), cancels the others and
raises :class:`EssentialTaskEndedError`: ``run_service`` then marks the service not alive and exits
non-zero, so the local supervisor or Kubernetes restarts it. Transient errors (a Redis or
PostgreSQL outage) are the tasks' own business: they retry with :class:`its_common.backoff.Backoff`
and never end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

log = logging.getLogger("its.tasks")


class EssentialTaskEndedError(RuntimeError):
    """An essential task ended while the service was meant to keep running."""

    def __init__(self, name: str, error: BaseException | None) -> None:
        self.task_name = name
        self.error = error
        how = f"failed: {type(error).__name__}: {error}" if error is not None else "returned"
        super().__init__(f"essential task {name!r} {how}; stopping the service")


async def run_essential(
    stopping: asyncio.Event,
    tasks: Mapping[str, Coroutine[Any, Any, Any]],
    *,
    finite: frozenset[str] = frozenset(),
    tick: Callable[[], None] | None = None,
    tick_s: float = 1.0,
) -> None:
    """Run ``tasks`` until ``stopping`` is set, then wait for them to finish.

    Tasks named in ``finite`` may return (a start-up job); raising is still fatal for them.
    ``tick`` is called every ``tick_s`` while running (counters for the heartbeat).
    On an early end the other tasks are cancelled and :class:`EssentialTaskEndedError` is raised.
    """
    running = {asyncio.create_task(coro, name=name): name for name, coro in tasks.items()}
    stop_task = asyncio.create_task(stopping.wait(), name="stop-signal")
    try:
        while True:
            waiting: set[asyncio.Future[Any]] = {stop_task, *running}
            done, _ = await asyncio.wait(
                waiting, timeout=tick_s if tick is not None else None, return_when="FIRST_COMPLETED"
            )
            if tick is not None:
                tick()
            if stop_task in done:
                break
            for task in [t for t in running if t in done]:
                name = running.pop(task)
                error = None if task.cancelled() else task.exception()
                if error is None and name in finite and not task.cancelled():
                    continue
                log.error("essential task %s ended", name, exc_info=error)
                raise EssentialTaskEndedError(name, error) from error
        results = await asyncio.gather(*running, return_exceptions=True)
        for task, result in zip(list(running), results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise EssentialTaskEndedError(running[task], result) from result
    finally:
        stop_task.cancel()
        for task in running:
            task.cancel()
        await asyncio.gather(stop_task, *running, return_exceptions=True)
        if tick is not None:
            tick()
