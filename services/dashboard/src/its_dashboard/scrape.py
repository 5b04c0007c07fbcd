"""Router throughput and latency from its Prometheus ``/metrics`` (scraped every refresh).

Quantiles come from the latency histograms' bucket deltas over a sliding window (like PromQL's
``histogram_quantile(q, rate(...[window]))``); with no events in the window the cumulative
histogram since the router started is used and marked as such.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

LATENCIES = {
    "receive_to_stored": "router_receive_to_stored_seconds",
    "exchange_to_stored": "router_exchange_to_stored_seconds",
}
EVENTS = "router_events"  # counter router_events_total{type}


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    events: float
    buckets: dict[str, list[tuple[float, float]]]  # histogram -> [(le, cumulative count)]


def parse(text: str, t: float) -> Sample:
    events = 0.0
    buckets: dict[str, dict[float, float]] = {name: {} for name in LATENCIES.values()}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == f"{EVENTS}_total":
                events += sample.value
            elif sample.name.endswith("_bucket") and sample.name[:-7] in buckets:
                le = float(sample.labels["le"])
                target = buckets[sample.name[:-7]]
                target[le] = target.get(le, 0.0) + sample.value
    return Sample(t, events, {name: sorted(b.items()) for name, b in buckets.items()})


def quantile(q: float, cumulative: list[tuple[float, float]]) -> float | None:
    """histogram_quantile over cumulative ``(le, count)`` pairs (seconds); None without data.

    A quantile in the overflow bucket (above the largest finite bound) is ``math.inf``: the
    histogram only says "more than that bound", so no number is made up (PromQL would return
    the bound itself, which reads as an exact figure).
    """
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    total = cumulative[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in cumulative:
        if count >= rank:
            if math.isinf(le):
                return math.inf
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def quantiles_ms(cumulative: list[tuple[float, float]]) -> dict[str, Any]:
    """p50/p95/p99 in ms; one in the overflow bucket is ``None`` with ``pNN_above_ms`` set to
    the largest finite bound (shown as "> 5 s")."""
    top = max((le for le, _ in cumulative if not math.isinf(le)), default=0.0)
    out: dict[str, Any] = {}
    for q in (0.5, 0.95, 0.99):
        key = f"p{int(q * 100)}"
        value = quantile(q, cumulative)
        if value is not None and math.isinf(value):
            out[f"{key}_ms"], out[f"{key}_above_ms"] = None, top * 1000
        else:
            out[f"{key}_ms"] = None if value is None else value * 1000
    return out


def _delta(
    new: list[tuple[float, float]], old: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    before = dict(old)
    return [(le, max(0.0, count - before.get(le, 0.0))) for le, count in new]


@dataclass
class RouterScraper:
    url: str
    timeout_s: float
    window_s: float
    history: deque[Sample] = field(default_factory=lambda: deque(maxlen=600))
    last_error: str = ""

    async def scrape(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(
                self.url, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            ) as response:
                response.raise_for_status()
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.last_error = f"router metrics unreachable ({type(exc).__name__})"
            return
        self.last_error = ""
        sample = parse(text, time.monotonic())
        if self.history and sample.events < self.history[-1].events:
            self.history.clear()  # the router restarted: counters began again
        self.history.append(sample)
        while self.history and sample.t - self.history[0].t > self.window_s:
            self.history.popleft()

    def summary(self) -> dict[str, Any] | None:
        if not self.history:
            return None
        newest, oldest = self.history[-1], self.history[0]
        span = newest.t - oldest.t
        rate = (newest.events - oldest.events) / span if span > 0 else None
        out: dict[str, Any] = {
            "events_per_s": rate,
            "events_total": newest.events,
            "window_s": round(span, 1),
        }
        for key, name in LATENCIES.items():
            windowed = _delta(newest.buckets[name], oldest.buckets[name]) if span > 0 else []
            use = windowed if windowed and windowed[-1][1] > 0 else newest.buckets[name]
            out[key] = quantiles_ms(use)
            out[key]["scope"] = "window" if use is windowed else "since start"
            out[key]["count"] = use[-1][1] if use else 0
        return out
