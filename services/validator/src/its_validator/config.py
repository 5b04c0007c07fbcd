"""Settings of the validator: environment variables ``ITS_VALIDATOR_*`` plus the shared ones."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field

from its_common.settings import BaseServiceSettings


def _env(name: str) -> AliasChoices:
    return AliasChoices(f"ITS_VALIDATOR_{name.upper()}")


class ValidatorSettings(BaseServiceSettings):
    SERVICE: ClassVar[str] = "validator"

    threshold_pct: float = Field(
        0.1, gt=0, validation_alias=_env("threshold_pct"), description="flag above this (%)"
    )
    interval_s: float = Field(5.0, gt=0, validation_alias=_env("interval_s"))
    max_age_s: float = Field(
        30.0,
        gt=0,
        validation_alias=_env("max_age_s"),
        description="a price received longer ago than this (wall clock) is stale: skipped",
    )
    max_skew_ms: int = Field(
        5_000,
        ge=0,
        validation_alias=_env("max_skew_ms"),
        description="skip when the two prices' trade times differ more (market time)",
    )
