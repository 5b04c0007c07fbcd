"""Resident memory of every service, sampled in the background while the run goes on."""

from __future__ import annotations

import threading
from typing import Final

from tests.chaos.stack import ChaosStack

# Stated bounds (MiB of resident memory). Inference loads torch and the model; the loader and
# the router hold batches; the rest are small asyncio services.
BOUNDS_MIB: Final = {"inference": 1200, "default": 500}


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


class MemorySampler:
    """Peak RSS per service name (across restarts) every ``interval_s`` until stopped."""

    def __init__(self, stack: ChaosStack, interval_s: float = 1.0) -> None:
        self.stack = stack
        self.interval_s = interval_s
        self.peaks: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-memory", daemon=True)

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join(10)
        return dict(self.peaks)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            for name, handle in list(self.stack.services.items()):
                rss = rss_bytes(handle.process.pid)
                self.peaks[name] = max(self.peaks.get(name, 0), rss)
