"""Settings of the inference service: ``ITS_INFERENCE_*`` plus the shared ones."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from its_common.settings import BaseServiceSettings


class InferenceSettings(BaseServiceSettings):
    """``ITS_INFERENCE_*`` (and ``REDIS_URL``, ``DATABASE_URL``...)."""

    SERVICE: ClassVar[str] = "inference"
    model_config = SettingsConfigDict(env_prefix="ITS_INFERENCE_")

    bundle_dir: str = Field(
        "models/demo",
        min_length=1,
        description="a bundle directory, or a directory of bundles (the newest is used)",
    )
    bundle_version: str = Field(
        "",
        description="pin a bundle: the name of a subdirectory of the bundle dir; empty = newest",
    )
    bundle_version_file: str = Field(
        "",
        description="a file naming the promoted bundle (its-ops promote; its_common.promotion); "
        "its content, when there is one, overrides bundle_version, read at every bundle check",
    )
    reload_interval_s: float = Field(
        30.0,
        gt=0,
        description="how often the bundle dir is checked for a newer bundle (used from the next "
        "session open)",
    )
    group: str = Field("inference", min_length=1)
    consumer: str = Field(
        "",
        description="consumer name in the group; empty = pod name / host-pid",
    )
    batch_entries: int = Field(100, ge=1, le=10_000)
    block_ms: int = Field(1000, ge=1, le=5_000)
    write_signals: bool = Field(True, description="insert into the signals table")
    torch_threads: int = Field(1, ge=1, le=64)
    warm_up: bool = Field(
        True,
        description="at start, replay the current session's features entries (no decisions) "
        "to rebuild the LSTM state and the shadow portfolio",
    )
