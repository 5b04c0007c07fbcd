"""run_essential: an essential task ending early ends the service; a stop drains them all."""

from __future__ import annotations

import asyncio

import pytest

from its_common.tasks import EssentialTaskEndedError, run_essential


async def _until(stopping: asyncio.Event, done: list[str], name: str) -> None:
    await stopping.wait()
    done.append(name)


async def test_a_task_that_raises_cancels_the_others_and_is_reported() -> None:
    stopping = asyncio.Event()
    cancelled = asyncio.Event()

    async def worker() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def broken() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(EssentialTaskEndedError, match="'broken' failed: ValueError: boom"):
        await run_essential(stopping, {"worker": worker(), "broken": broken()})
    assert cancelled.is_set()


async def test_a_task_that_returns_early_is_fatal_unless_finite() -> None:
    stopping = asyncio.Event()
    done: list[str] = []

    async def quits() -> None:
        return None

    with pytest.raises(EssentialTaskEndedError, match="'quits' returned"):
        await run_essential(stopping, {"quits": quits(), "loop": _until(stopping, done, "loop")})

    async def stop_soon() -> None:
        await asyncio.sleep(0.05)
        stopping.set()

    await run_essential(
        stopping,
        {"startup": quits(), "loop": _until(stopping, done, "loop"), "stopper": stop_soon()},
        finite=frozenset({"startup", "stopper"}),
    )
    assert done == ["loop"]


async def test_stop_lets_every_task_finish_its_work() -> None:
    stopping = asyncio.Event()
    done: list[str] = []
    ticks: list[int] = []
    stopping.set()
    await run_essential(
        stopping,
        {"a": _until(stopping, done, "a"), "b": _until(stopping, done, "b")},
        tick=lambda: ticks.append(1),
    )
    assert sorted(done) == ["a", "b"] and ticks
