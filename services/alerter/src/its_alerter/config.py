"""Settings of the alerter: ``ITS_ALERTER_*`` plus the shared ones (``REDIS_URL``, ...)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from its_common.settings import BaseServiceSettings
from its_common.symbols import ACTIVE_MODEL_KEY

RULE_NAMES = (
    "feed",
    "price_divergence",
    "redis_memory",
    "loader_lag",
    "trading_halted",
    "heartbeat",
    "model_age",
    "gaps",
    "redis",
    "database",
    "dead_letters",
    "feed_overflow",
)
Severity = Literal["info", "warning", "critical"]


def _csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class AlerterSettings(BaseServiceSettings):
    """``ITS_ALERTER_*``: rule thresholds, dedupe/cooldown and the notifiers."""

    SERVICE: ClassVar[str] = "alerter"
    model_config = SettingsConfigDict(env_prefix="ITS_ALERTER_")

    interval_s: float = Field(15.0, gt=0)
    rules: Annotated[list[str], NoDecode] = Field(
        default=list(RULE_NAMES),
        description=f"enabled rules, comma separated: {','.join(RULE_NAMES)}",
    )
    cooldown_s: float = Field(
        300.0,
        ge=0,
        description="min seconds between two notifications of one alert (flapping, gap summaries)",
    )
    repeat_s: float = Field(
        3600.0,
        ge=0,
        description="re-notify an alert still firing after this many seconds (0 = never)",
    )
    rule_failures_alert: int = Field(
        3,
        ge=1,
        description="consecutive failed evaluations of a rule that raise a rule_failing alert",
    )
    # feed
    feed_always: bool = Field(False, description="feed rules outside market hours")
    feed_stale_after_s: float = Field(60.0, gt=0, description="no trade this long")
    # price divergence (price_checks rows of the validator)
    price_divergence_pct: float = Field(0.1, gt=0)
    price_check_max_age_s: float = Field(
        300.0,
        gt=0,
        description="only price_checks rows younger than this count",
    )
    # Redis
    redis_memory_bytes: int = Field(180 * 1024 * 1024, gt=0)
    redis_timeout_s: float = Field(3.0, gt=0, description="a PING not answered this fast fires")
    # PostgreSQL
    database_timeout_s: float = Field(
        5.0, gt=0, description="a SELECT 1 not answered this fast fires"
    )
    # input set aside and feed overflow: events within a window (resolved once it passed)
    dead_letter_window_s: float = Field(
        300.0, gt=0, description="dead-lettered entries this recent fire dead_letters"
    )
    feed_overflow_window_s: float = Field(
        300.0, gt=0, description="slow-consumer closes this recent fire feed_overflow"
    )
    # loader lag
    loader_group: str = Field("loader", min_length=1)
    loader_streams: Annotated[list[str], NoDecode] = Field(
        default=["its:stream:bars:1m", "its:stream:trades"],
    )
    loader_lag_s: float = Field(
        120.0,
        gt=0,
        description="oldest pending or undelivered entry older than this",
    )
    # heartbeats
    expected_services: Annotated[list[str], NoDecode] = Field(
        default=["router", "loader", "collector"],
        description="services that must have a live heartbeat",
    )
    heartbeat_max_age_s: float = Field(30.0, gt=0)
    # trading halted
    trader_service: str = Field("trader")
    # model bundle age
    model_max_age_s: float = Field(7 * 24 * 3600.0, gt=0)
    model_key: str = Field(
        ACTIVE_MODEL_KEY,
        description="Redis hash of the loaded bundle (created_at ISO or ms, name)",
    )
    model_bundle_dir: str = Field(
        "",
        description="bundle directory (newest bundle.json) when the Redis key is absent",
    )
    # events
    events_group: str = Field("alerter", min_length=1)
    # notifiers
    notify_min_severity: Severity = Field(
        "info",
        description="lowest severity sent to Slack and e-mail (the log gets everything)",
    )
    slack_webhook_url: SecretStr | None = Field(None)
    slack_timeout_s: float = Field(10.0, gt=0)
    smtp_host: str = Field("")
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_starttls: bool = Field(True)
    smtp_ssl: bool = Field(False, description="implicit TLS (port 465)")
    smtp_ca_file: str = Field("", description="extra CA bundle to trust")
    smtp_username: str = Field("")
    smtp_password: SecretStr | None = Field(None)
    smtp_from: str = Field("its-alerter@localhost")
    smtp_to: Annotated[list[str], NoDecode] = Field(default_factory=list)
    smtp_timeout_s: float = Field(15.0, gt=0)

    @field_validator("rules", "loader_streams", "expected_services", "smtp_to", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _csv(value)

    @field_validator("rules")
    @classmethod
    def _known_rules(cls, value: list[str]) -> list[str]:
        unknown = [rule for rule in value if rule not in RULE_NAMES]
        if unknown:
            raise ValueError(f"rules among {','.join(RULE_NAMES)}; not {','.join(unknown)}")
        return value

    @field_validator("smtp_to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        bad = [address for address in value if "@" not in address]
        if bad:
            raise ValueError(f"e-mail addresses; not {','.join(bad)}")
        return value
