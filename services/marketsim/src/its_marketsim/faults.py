"""Fault injection: a mutable state read by the stream and the WebSocket server.

Set at start (``ITS_MARKETSIM_FAULTS`` / ``--faults``) and changed at run time through the admin
endpoint. Frame faults (duplicate, reorder, malformed) are applied once per distinct
subscription set, so every client with the same subscriptions sees the same faults.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from dataclasses import dataclass, field, fields
from typing import Any, Final

import msgspec

from its_common.simmarket.wire import encoder

MALFORMED_KINDS: Final = (
    "invalid_json",
    "wrong_type",
    "missing_field",
    "nan_price",
    "negative_price",
    "negative_size",
)
# Upper bounds of the numeric faults: a value past them is a mistake, not a test scenario.
MAX_DELAY_MS: Final = 60_000.0
MAX_REFUSE_S: Final = 86_400.0
MAX_SKIP_BARS: Final = 1_000_000
MAX_SEED: Final = 2**63 - 1
_PRICE_FIELD: Final = {"T": "p", "Q": "bp", "A": "c", "AM": "c"}
_SIZE_FIELD: Final = {"T": "s", "Q": "bs", "A": "v", "AM": "v"}


@dataclass
class FaultState:
    """Current faults; every field is also a key of the admin JSON."""

    stall: bool = False
    delay_ms: float = 0.0
    duplicate_rate: float = 0.0
    reorder_rate: float = 0.0
    malformed_rate: float = 0.0
    malformed_kinds: list[str] = field(default_factory=lambda: list(MALFORMED_KINDS))
    skip_bar_rate: float = 0.0
    skip_next_bars: int = 0
    reject_auth: bool = False
    refuse_connections_s: float = 0.0
    seed: int = 0
    _refuse_until: float = field(default=0.0, repr=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _unstalled: asyncio.Event | None = field(default=None, repr=False)

    def unstalled(self) -> asyncio.Event:
        """An event set while the feed is not stalled."""
        if self._unstalled is None:
            self._unstalled = asyncio.Event()
        self._sync_stall()
        return self._unstalled

    def _sync_stall(self) -> None:
        if self._unstalled is not None:
            if self.stall:
                self._unstalled.clear()
            else:
                self._unstalled.set()

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update; unknown keys or bad values raise ``ValueError``."""
        known = {f.name: f for f in fields(self) if not f.name.startswith("_")}
        staged: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in known:
                raise ValueError(f"unknown fault {key!r}; known: {', '.join(sorted(known))}")
            staged[key] = _check(key, value)
        for key, value in staged.items():
            setattr(self, key, value)
        if "refuse_connections_s" in staged:
            self._refuse_until = time.monotonic() + float(staged["refuse_connections_s"])
        if "seed" in staged:
            self._rng.seed(int(staged["seed"]))
        self._sync_stall()

    def reset(self) -> None:
        fresh = FaultState()
        for f in fields(self):
            if not f.name.startswith("_"):
                setattr(self, f.name, getattr(fresh, f.name))
        self._refuse_until = 0.0
        self._sync_stall()

    def snapshot(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        data["malformed_kinds"] = list(self.malformed_kinds)
        data["refuse_connections_s"] = round(self.refusing_for(), 3)
        return data

    def refusing_for(self) -> float:
        return max(0.0, self._refuse_until - time.monotonic())

    @property
    def frame_faults(self) -> bool:
        return bool(self.duplicate_rate or self.reorder_rate or self.malformed_rate)

    def skip_bar(self) -> bool:
        """Whether to drop the next minute bar (one-shot count first, then the rate)."""
        if self.skip_next_bars > 0:
            self.skip_next_bars -= 1
            return True
        return self.skip_bar_rate > 0 and self._rng.random() < self.skip_bar_rate

    def mangle(self, events: list[Any]) -> list[Any]:
        """Duplicate and reorder events."""
        rng = self._rng
        if self.duplicate_rate > 0:
            out: list[Any] = []
            for event in events:
                out.append(event)
                if rng.random() < self.duplicate_rate:
                    out.append(event)
            events = out
        if self.reorder_rate > 0 and len(events) > 1:
            events = list(events)
            i = 0
            while i < len(events) - 1:
                if rng.random() < self.reorder_rate:
                    events[i], events[i + 1] = events[i + 1], events[i]
                    i += 2
                else:
                    i += 1
        return events

    def encode(self, events: list[Any]) -> bytes:
        """Encode a frame, malformed with probability ``malformed_rate``."""
        if self.malformed_rate > 0 and events and self._rng.random() < self.malformed_rate:
            kinds = self.malformed_kinds or list(MALFORMED_KINDS)
            return malformed_frame(events, self._rng.choice(kinds), self._rng)
        return encoder.encode(events)


def malformed_frame(events: list[Any], kind: str, rng: random.Random) -> bytes:
    """A frame with one bad event (or invalid JSON altogether)."""
    if kind == "invalid_json":
        good = encoder.encode(events)
        return good[: max(2, len(good) // 2)]
    index = rng.randrange(len(events))
    bad = msgspec.to_builtins(events[index])
    assert isinstance(bad, dict)
    ev = str(bad.get("ev", "T"))
    price, size = _PRICE_FIELD.get(ev, "p"), _SIZE_FIELD.get(ev, "s")
    if kind == "wrong_type":
        bad[price] = str(bad.get(price, "1.0"))
    elif kind == "missing_field":
        bad.pop(price, None)
    elif kind == "nan_price":
        bad[price] = float("nan")
    elif kind == "negative_price":
        bad[price] = -abs(float(bad.get(price, 1.0))) or -1.0
    elif kind == "negative_size":
        bad[size] = -abs(int(bad.get(size, 1))) or -1
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    parts = [encoder.encode(e) for e in events]
    parts[index] = json.dumps(bad, allow_nan=True, separators=(",", ":")).encode()
    return b"[" + b",".join(parts) + b"]"


def _check(key: str, value: Any) -> Any:
    if key in {"stall", "reject_auth"}:
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false")
        return value
    if key == "malformed_kinds":
        if not isinstance(value, list) or any(k not in MALFORMED_KINDS for k in value):
            raise ValueError(f"malformed_kinds must be a list of {', '.join(MALFORMED_KINDS)}")
        return list(value)
    if key in {"skip_next_bars", "seed"}:
        most = MAX_SKIP_BARS if key == "skip_next_bars" else MAX_SEED
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
            raise ValueError(f"{key} must be an integer from 0 to {most}")
        return value
    top = 1.0 if key.endswith("_rate") else MAX_DELAY_MS if key == "delay_ms" else MAX_REFUSE_S
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number from 0 to {top:g}")
    if not math.isfinite(value) or not 0 <= value <= top:
        raise ValueError(f"{key} must be a number from 0 to {top:g}")
    return float(value)
