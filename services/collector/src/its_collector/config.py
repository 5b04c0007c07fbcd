"""Settings of the collector: ``ITS_COLLECTOR_*`` plus the shared ones."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from its_common.settings import BaseServiceSettings


def parse_targets(value: str) -> dict[str, str]:
    """``"router=http://h:8080/metrics,loader=http://h2:8080/metrics"`` to a dict."""
    targets: dict[str, str] = {}
    for raw in value.split(","):
        part = raw.strip()
        if not part:
            continue
        name, sep, url = part.partition("=")
        if not sep or not name.strip() or not url.strip().startswith(("http://", "https://")):
            raise ValueError(f"expected service=http://host:port/metrics pairs, got {part!r}")
        targets[name.strip()] = url.strip()
    return targets


class CollectorSettings(BaseServiceSettings):
    SERVICE: ClassVar[str] = "collector"
    model_config = SettingsConfigDict(env_prefix="ITS_COLLECTOR_")

    interval_s: float = Field(30.0, gt=0, description="sampling period")
    targets: str = Field(
        "",
        description="service=URL pairs of /metrics endpoints to scrape, comma separated",
    )
    scrape_timeout_s: float = Field(5.0, gt=0)
    include_prefixes: str = Field(
        "its_,router_,loader_,marketsim_,collector_,process_resident_memory_bytes,"
        "process_cpu_seconds_total,up",
        description="metric name prefixes kept from scrapes (comma separated; empty = all)",
    )
    heartbeats: bool = Field(
        True,
        description="also store the counters every service publishes in its heartbeat",
    )
    retention_days: float = Field(
        30.0,
        gt=0,
        description="plain PostgreSQL only: rows older than this are deleted hourly "
        "(TimescaleDB uses its retention policy instead)",
    )

    @field_validator("targets")
    @classmethod
    def _check_targets(cls, value: str) -> str:
        parse_targets(value)
        return value

    def target_map(self) -> dict[str, str]:
        return parse_targets(self.targets)

    def prefixes(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.include_prefixes.split(",") if p.strip())
