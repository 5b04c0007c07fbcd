"""Settings of the inference service: ``ITS_INFERENCE_*`` plus the shared ones."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AliasChoices, Field

from its_common.settings import BaseServiceSettings


def _env(name: str) -> AliasChoices:
    return AliasChoices(f"ITS_INFERENCE_{name.upper()}")


class InferenceSettings(BaseServiceSettings):
    """``ITS_INFERENCE_*`` (and ``REDIS_URL``, ``DATABASE_URL``...)."""

    SERVICE: ClassVar[str] = "inference"

    bundle_dir: str = Field(
        "models/demo",
        validation_alias=_env("bundle_dir"),
        min_length=1,
        description="a bundle directory, or a directory of bundles (the newest is used)",
    )
    bundle_version: str = Field(
        "",
        validation_alias=_env("bundle_version"),
        description="pin a bundle: the name of a subdirectory of the bundle dir; empty = newest",
    )
    reload_interval_s: float = Field(
        30.0,
        gt=0,
        validation_alias=_env("reload_interval_s"),
        description="how often the bundle dir is checked for a newer bundle (used from the next "
        "session open)",
    )
    group: str = Field("inference", validation_alias=_env("group"), min_length=1)
    consumer: str = Field(
        "",
        validation_alias=_env("consumer"),
        description="consumer name in the group; empty = pod name / host-pid",
    )
    batch_entries: int = Field(100, ge=1, le=10_000, validation_alias=_env("batch_entries"))
    block_ms: int = Field(1000, ge=1, le=5_000, validation_alias=_env("block_ms"))
    write_signals: bool = Field(
        True, validation_alias=_env("write_signals"), description="insert into the signals table"
    )
    torch_threads: int = Field(1, ge=1, le=64, validation_alias=_env("torch_threads"))
    warm_up: bool = Field(
        True,
        validation_alias=_env("warm_up"),
        description="at start, replay the current session's features entries (no decisions) "
        "to rebuild the LSTM state and the shadow portfolio",
    )
