"""Settings of the trainer: environment variables ``ITS_TRAINER_*`` plus the shared ones
(``DATABASE_URL``, ``DATABASE_PASSWORD``, ``ITS_LOG_LEVEL``). Every one has a CLI flag that wins
over it (see the README)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from its_common.settings import SYMBOL_PATTERN, BaseServiceSettings


class TrainerSettings(BaseServiceSettings):
    """``ITS_TRAINER_*``."""

    SERVICE: ClassVar[str] = "trainer"
    model_config = SettingsConfigDict(env_prefix="ITS_TRAINER_")

    pair: str = Field(
        "NVDA,MSFT",
        description="the two tickers, first,second (the first takes the NVDA slot of the actions)",
    )
    bundle_dir: str = Field("var/models", description="where bundles are written")
    data_file: str | None = Field(
        None,
        description="Parquet/CSV bars file; unset = the database (market_data)",
    )
    timesteps: int = Field(200_000, ge=1)
    seed: int = Field(42, ge=0)
    n_envs: int = Field(8, ge=1, le=256)
    vec_env: Literal["dummy", "subproc"] = Field(
        "dummy",
        description="dummy (one process; fastest here) or subproc (one process per env)",
    )
    n_steps: int = Field(256, ge=2)
    batch_size: int = Field(512, ge=2)
    n_epochs: int = Field(4, ge=1)
    learning_rate: float = Field(3e-4, gt=0)
    gamma: float = Field(0.99, gt=0, le=1)
    ent_coef: float = Field(0.01, ge=0)
    lstm_hidden: int = Field(64, ge=1)
    hidden: int = Field(64, ge=1)
    checkpoint_every: int = Field(50_000, ge=0, description="0 = no checkpoints")
    torch_threads: int = Field(1, ge=1)
    initial_capital: float = Field(100_000.0, gt=0)
    commission_per_share: float = Field(0.005, ge=0)
    commission_min: float = Field(1.0, ge=0)
    slippage_bps: float = Field(1.0, ge=0)
    max_position_fraction: float | None = Field(None, gt=0)
    risk_penalty: float = Field(0.0, ge=0)

    @field_validator("pair")
    @classmethod
    def _check_pair(cls, value: str) -> str:
        return ",".join(parse_pair(value))


def parse_pair(value: str) -> tuple[str, str]:
    parts = [p.strip().upper() for p in value.split(",") if p.strip()]
    if len(parts) != 2 or parts[0] == parts[1]:
        raise ValueError(f"two different tickers like NVDA,MSFT; not {value!r}")
    bad = [p for p in parts if not SYMBOL_PATTERN.match(p)]
    if bad:
        raise ValueError(f"ticker symbols like NVDA,MSFT; not {', '.join(bad)}")
    return parts[0], parts[1]
