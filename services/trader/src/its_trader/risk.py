"""The risk engine's rules: the one implementation lives in :mod:`its_common.risk` (shared with
the trainer's backtest); this module re-exports it under the trader's historical name."""

from __future__ import annotations

from its_common.risk import (
    HALT_REASONS,
    Denial,
    Exposure,
    Halt,
    RiskLimits,
    RiskReason,
    RiskState,
    check_decision,
    check_order,
    check_portfolio,
    in_closing_window,
)

__all__ = [
    "HALT_REASONS",
    "Denial",
    "Exposure",
    "Halt",
    "RiskLimits",
    "RiskReason",
    "RiskState",
    "check_decision",
    "check_order",
    "check_portfolio",
    "in_closing_window",
]
