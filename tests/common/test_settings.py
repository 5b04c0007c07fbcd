from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from pydantic import Field, SecretStr

from its_common.logs import JsonFormatter
from its_common.settings import BaseServiceSettings, SettingsError, load_settings


class DemoSettings(BaseServiceSettings):
    SERVICE = "demo"
    batch_size: int = Field(default=100, ge=1, description="events per batch")
    webhook_token: SecretStr | None = None


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("ITS_", "OTEL_")) or name in {
            "POLYGON_API_KEY",
            "POLYGON_API_KEY_FILE",
            "REDIS_URL",
            "REDIS_PASSWORD",
            "DATABASE_URL",
            "DATABASE_PASSWORD",
        }:
            monkeypatch.delenv(name)


def test_defaults_load() -> None:
    settings = load_settings(DemoSettings)
    assert settings.symbols == ["NVDA", "MSFT"]
    assert settings.batch_size == 100
    assert settings.effective_service_name() == "demo"


def test_environment_overrides_and_symbol_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITS_SYMBOLS", " aapl, nvda ,msft")
    monkeypatch.setenv("ITS_BATCH_SIZE", "250")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/2")
    settings = load_settings(DemoSettings)
    assert settings.symbols == ["AAPL", "NVDA", "MSFT"]
    assert settings.batch_size == 250
    assert settings.redis_url == "redis://cache:6379/2"


def test_every_bad_setting_is_named_with_what_is_expected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITS_HTTP_PORT", "eighty")
    monkeypatch.setenv("ITS_BATCH_SIZE", "0")
    monkeypatch.setenv("ITS_SYMBOLS", "NVDA,not a ticker")
    monkeypatch.setenv("DATABASE_URL", "mysql://x")
    with pytest.raises(SettingsError) as caught:
        load_settings(DemoSettings)
    message = str(caught.value)
    assert "ITS_HTTP_PORT='eighty'" in message and "valid integer" in message
    assert "ITS_BATCH_SIZE='0'" in message and "greater than or equal to 1" in message
    assert "ITS_SYMBOLS" in message and "NOT A TICKER" in message
    assert "DATABASE_URL='mysql://x'" in message and "postgres" in message
    assert message.startswith("invalid configuration for demo")


def test_secret_from_file_and_masked_in_repr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    secret_file = tmp_path / "key"
    secret_file.write_text("pk_live_abcdef123456\n")
    monkeypatch.setenv("POLYGON_API_KEY_FILE", str(secret_file))
    monkeypatch.setenv("ITS_WEBHOOK_TOKEN", "hook-secret-987")
    settings = load_settings(DemoSettings)
    assert settings.polygon_api_key is not None
    assert settings.polygon_api_key.get_secret_value() == "pk_live_abcdef123456"
    text = repr(settings) + str(settings) + settings.model_dump_json()
    assert "pk_live_abcdef123456" not in text
    assert "hook-secret-987" not in text


def test_missing_secret_file_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(SettingsError, match="DATABASE_PASSWORD_FILE: cannot read the file"):
        load_settings(DemoSettings)


def test_invalid_secret_value_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    class Strict(BaseServiceSettings):
        api_token: SecretStr = Field(min_length=40)

    monkeypatch.setenv("ITS_API_TOKEN", "short-but-secret-token")
    with pytest.raises(SettingsError) as caught:
        load_settings(Strict)
    assert "ITS_API_TOKEN" in str(caught.value)
    assert "short-but-secret-token" not in str(caught.value)


def test_secrets_are_redacted_from_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", "redis-pass-4242")
    settings = load_settings(DemoSettings)
    url = settings.redis_url_with_password()
    assert "redis-pass-4242" in url
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("demo"))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    try:
        logger.error("cannot connect to %s", url, extra={"detail": "password redis-pass-4242"})
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "redis-pass-4242" not in output
    assert "***" in output and "cannot connect" in output
