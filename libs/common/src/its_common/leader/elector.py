"""Keeps one lease: standby until it can take it, then renews it; says who leads, with which
fencing token.

``is_leader()`` is judged on the local monotonic clock: true only within ``renew_deadline_s`` of
the start of the last successful acquire/renew call. The deadline is shorter than the lease, so
a leader stops acting before any standby can take over; a process that was paused (SIGSTOP, a
long GC, a frozen VM) finds its deadline passed the moment it resumes, before its next renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from its_common.leader.lease import Lease, LeaseTiming, NotLeaderError

log = logging.getLogger("its.leader")


class LeaderElector:
    def __init__(self, lease: Lease, timing: LeaseTiming) -> None:
        self.lease = lease
        self.timing = timing
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()
        self.renew_failures = 0
        self._token: int | None = None
        self._valid_until = 0.0

    @property
    def name(self) -> str:
        return self.lease.name

    def is_leader(self) -> bool:
        return self._token is not None and time.monotonic() < self._valid_until

    def fence_token(self) -> int:
        """The fencing token of the current holding; NotLeaderError when not (or no longer)
        leading."""
        token = self._token
        if token is None or time.monotonic() >= self._valid_until:
            raise NotLeaderError(f"not the leader of {self.name}")
        return token

    async def run(self, stopping: asyncio.Event) -> None:
        """Until ``stopping``: try to take the lease every ``retry_s``; once leading, renew every
        ``renew_s``. Losing the lease sets ``lost`` (and the loop ends: a process that lost its
        lease restarts as a standby). Releases the lease on a clean stop."""
        try:
            while not stopping.is_set():
                leading = self._token is not None
                started = time.monotonic()
                try:
                    token = await self.lease.acquire_or_renew()
                except Exception as exc:  # the store is unreachable: keep trying, count it
                    self.renew_failures += 1
                    log.warning("lease %s not renewed: %s", self.name, exc)
                    token = self._token if leading else None
                else:
                    if token is not None:
                        self._valid_until = started + self.timing.renew_deadline_s
                if leading and (token is None or time.monotonic() >= self._valid_until):
                    self._lose()
                    return
                if not leading and token is not None:
                    self._token = token
                    self.leading.set()
                    log.info("leading %s (fencing token %d)", self.name, token)
                interval = self.timing.renew_s if self._token is not None else self.timing.retry_s
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), interval)
        finally:
            if self._token is not None and not self.lost.is_set():
                self._token = None
                self.leading.clear()
                try:
                    await asyncio.shield(self.lease.release())
                except Exception as exc:
                    log.warning("lease %s not released (it expires): %s", self.name, exc)

    def _lose(self) -> None:
        self._token = None
        self.leading.clear()
        self.lost.set()
        log.error("lost the lease %s", self.name, extra={"alert": "leadership_lost"})
