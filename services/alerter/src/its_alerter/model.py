"""What rules report (conditions) and what notifiers send (notifications)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

Severity = Literal["info", "warning", "critical"]
State = Literal["firing", "resolved"]
SEVERITY_RANK: Final[dict[str, int]] = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True, slots=True)
class Condition:
    """One problem a rule sees now. ``fingerprint`` (rule + key) is the dedupe identity."""

    rule: str
    severity: Severity
    message: str
    key: str = ""
    labels: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return f"{self.rule}:{self.key}" if self.key else self.rule


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to the notifiers: an alert firing or resolved, or a one-shot event."""

    rule: str
    fingerprint: str
    severity: Severity
    state: State
    message: str
    labels: dict[str, Any]
    ts_ms: int
    environment: str
    event: bool = False

    @property
    def title(self) -> str:
        kind = "EVENT" if self.event else self.state.upper()
        return f"[ITS {self.environment}] {kind} {self.severity} {self.rule}"

    def text(self) -> str:
        lines = [f"{self.title}: {self.message}"]
        lines += [f"  {key}: {value}" for key, value in sorted(self.labels.items())]
        return "\n".join(lines)


ENGINE_GROUP: Final = "_engine"
RULE_GROUP: Final[dict[str, str]] = {
    "feed_disconnected": "feed",
    "feed_stale": "feed",
    "price_divergence": "price_divergence",
    "redis_memory": "redis_memory",
    "loader_lag": "loader_lag",
    "trading_halted": "trading_halted",
    "kill_switch": "trading_halted",
    "heartbeat_missing": "heartbeat",
    "model_stale": "model_age",
    "redis_unreachable": "redis",
    "database_unreachable": "database",
    "dead_letters": "dead_letters",
    "feed_overflow": "feed_overflow",
    "rule_failing": ENGINE_GROUP,
}
"""Alert name -> the configured rule (``ITS_ALERTER_RULES``) that raises and resolves it."""
