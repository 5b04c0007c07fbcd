"""Variable names: the service prefixes, typos caught with a suggestion, names in use accepted."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import pytest

from its_common.localstack.cli import marketsim_env
from its_common.localstack.services import Ports, local_services
from its_common.localstack.token import dashboard_token
from its_common.settings import BaseServiceSettings, SettingsError, load_settings
from its_trader.config import TraderSettings

ROOT = Path(__file__).parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists())


def settings_class(service: str) -> type[BaseServiceSettings]:
    module = importlib.import_module(f"its_{service}.config")
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, BaseServiceSettings)
        and value.__module__ == module.__name__
    ]
    assert len(classes) == 1, classes
    return classes[0]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("ITS_", "OTEL_", "POLYGON_", "REDIS_", "DATABASE_")):
            monkeypatch.delenv(name)


def test_a_typo_stops_the_start_naming_it_and_the_closest_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ITS_TRADER_MIN_CONFIDENSE", "0.3")
    with pytest.raises(SettingsError) as caught:
        load_settings(TraderSettings)
    message = str(caught.value)
    assert message.startswith("invalid configuration for trader:")
    assert "ITS_TRADER_MIN_CONFIDENSE" in message
    assert "did you mean ITS_TRADER_MIN_CONFIDENCE?" in message


def test_every_bad_variable_in_one_message_and_values_never_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ITS_TRADER_MIN_CONFIDENSE", "0.3")
    monkeypatch.setenv("ITS_IB_PROT", "4002")
    monkeypatch.setenv("ITS_TRADER_SIM_INITIAL_CASH_FIEL", "/run/secret-path-1234")
    monkeypatch.setenv("ITS_TRADER_MAX_DRAWDOWN_PCT", "7")
    with pytest.raises(SettingsError) as caught:
        load_settings(TraderSettings)
    message = str(caught.value)
    assert "ITS_IB_PROT: not a setting of trader; did you mean ITS_IB_PORT?" in message
    assert "ITS_TRADER_MIN_CONFIDENSE" in message
    assert "ITS_TRADER_SIM_INITIAL_CASH_FIEL" in message
    assert "ITS_TRADER_MAX_DRAWDOWN_PCT='7'" in message  # a value error, as before
    assert "secret-path-1234" not in message and "0.3" not in message
    assert len(message.splitlines()) == 5


def test_valid_names_load_and_other_services_variables_are_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ITS_TRADER_MIN_CONFIDENCE", "0.3")
    monkeypatch.setenv("ITS_TRADER_BROKER", "ib")
    monkeypatch.setenv("ITS_IB_PORT", "14002")
    monkeypatch.setenv("ITS_ALLOW_LIVE_TRADING", "false")
    monkeypatch.setenv("ITS_SYMBOLS", "AAPL,NVDA")
    monkeypatch.setenv("ITS_LOG_LEVEL", "debug")
    monkeypatch.setenv("ITS_HTTP_PORT", "18086")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/1")
    # One environment for many processes: others' names (even wrong ones) are not the trader's.
    monkeypatch.setenv("ITS_LOADER_GROUP", "loader-2")
    monkeypatch.setenv("ITS_FEATURES_NOT_A_SETTING", "1")
    monkeypatch.setenv("ITS_IBSIM_PORT", "14002")
    monkeypatch.setenv("ITS_POLYGON_WS_URL", "ws://127.0.0.1:18765/stocks")
    settings = load_settings(TraderSettings)
    assert settings.min_confidence == 0.3 and settings.broker == "ib"
    assert settings.ib_port == 14002 and settings.symbols == ["AAPL", "NVDA"]
    assert settings.log_level == "DEBUG" and settings.http_port == 18086
    assert settings.redis_url == "redis://cache:6379/1"


def test_secrets_from_files_under_the_service_prefix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from its_alerter.config import AlerterSettings

    (tmp_path / "smtp").write_text("smtp-pass-5555\n")
    (tmp_path / "db").write_text("db-pass-6666\n")
    monkeypatch.setenv("ITS_ALERTER_SMTP_PASSWORD_FILE", str(tmp_path / "smtp"))
    monkeypatch.setenv("DATABASE_PASSWORD_FILE", str(tmp_path / "db"))
    settings = load_settings(AlerterSettings)
    assert settings.smtp_password is not None
    assert settings.smtp_password.get_secret_value() == "smtp-pass-5555"
    assert settings.database_password is not None
    assert settings.database_password.get_secret_value() == "db-pass-6666"

    monkeypatch.delenv("ITS_ALERTER_SMTP_PASSWORD_FILE")
    monkeypatch.setenv("ITS_ALERTER_SMTP_PASWORD_FILE", str(tmp_path / "smtp"))
    with pytest.raises(SettingsError, match="did you mean ITS_ALERTER_SMTP_PASSWORD_FILE"):
        load_settings(AlerterSettings)


def test_the_router_keeps_its_names_and_claims_its_own_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from its_router.config import RouterSettings

    monkeypatch.setenv("ITS_REST_REQUESTS_PER_MINUTE", "60")
    monkeypatch.setenv("USE_POLYGON_WS", "false")
    settings = load_settings(RouterSettings)
    assert settings.rest_requests_per_minute == 60 and not settings.use_polygon_ws
    monkeypatch.setenv("ITS_ROUTER_REST_REQUESTS_PER_MINUTE", "60")
    with pytest.raises(SettingsError, match="did you mean ITS_REST_REQUESTS_PER_MINUTE"):
        load_settings(RouterSettings)


@pytest.mark.parametrize("broker", ["sim", "ib-sim", "ib"])
def test_the_local_stack_environment_is_accepted_by_every_service(
    monkeypatch: pytest.MonkeyPatch, broker: str, tmp_path: Path
) -> None:
    token_env, _ = dashboard_token(tmp_path, environ={})
    services = local_services(
        polygon_key_set=False,
        broker=broker,
        ports=Ports(20000),
        dashboard_env=token_env,
        marketsim_env=marketsim_env(tmp_path),
    )
    # make run gives every process the union of the environments plus its own.
    for service in services:
        for name, value in service.env.items():
            monkeypatch.setenv(name, value)
    for service in services:
        load_settings(settings_class(service.name))


@pytest.mark.parametrize("service", SERVICES)
def test_every_name_a_readme_documents_is_read(service: str) -> None:
    """The names in the first two columns of the README's tables (flag, variable): all read."""
    cls = settings_class(service)
    text = (ROOT / "services" / service / "README.md").read_text()
    first_cells = [
        cell
        for line in text.splitlines()
        if line.startswith("| `")
        for cell in line.split("|")[1:3]
    ]
    documented = {
        name
        for cell in first_cells
        for name in re.findall(
            r"\b((?:ITS|USE|REDIS|DATABASE|POLYGON)_[A-Z0-9_]*[A-Z0-9])(?![A-Z0-9_])", cell
        )
    }
    assert documented, f"services/{service}/README.md has no settings table"
    assert documented <= cls.known_env_names(), documented - cls.known_env_names()
