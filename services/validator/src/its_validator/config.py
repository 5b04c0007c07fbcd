"""Settings of the validator: environment variables ``ITS_VALIDATOR_*`` plus the shared ones."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from its_common.settings import BaseServiceSettings


class ValidatorSettings(BaseServiceSettings):
    SERVICE: ClassVar[str] = "validator"
    model_config = SettingsConfigDict(env_prefix="ITS_VALIDATOR_")

    threshold_pct: float = Field(0.1, gt=0, description="flag above this (%)")
    interval_s: float = Field(5.0, gt=0)
    max_age_s: float = Field(
        30.0,
        gt=0,
        description="a price received longer ago than this (wall clock) is stale: skipped",
    )
    max_skew_ms: int = Field(
        5_000,
        ge=0,
        description="skip when the two prices' trade times differ more (market time)",
    )
