"""A notifier that keeps what it was sent (the alerter's engine and event tests)."""

from __future__ import annotations

from its_alerter.model import Notification


class Recorder:
    name = "recorder"
    min_severity = "info"

    def __init__(self) -> None:
        self.sent: list[Notification] = []

    async def send(self, notification: Notification) -> None:
        self.sent.append(notification)

    async def close(self) -> None:
        return None
