"""The command line and the environment variables."""

from __future__ import annotations

import math

import pytest

from its_common.settings import SettingsError, load_settings
from its_marketsim.__main__ import FLAGS, build_parser, main
from its_marketsim.config import MarketSimSettings, parse_mapping, parse_speed


def test_every_flag_is_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[2] / "services/marketsim/README.md").read_text()
    for flag, _, _ in FLAGS:
        assert f"`{flag}" in readme, flag
    help_text = build_parser().format_help()
    assert "--rest-port" in help_text and "--speed" in help_text


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITS_MARKETSIM_PORT", "9001")
    monkeypatch.setenv("ITS_MARKETSIM_SPEED", "max")
    monkeypatch.setenv("ITS_MARKETSIM_SYMBOLS", "NVDA,AAPL")
    monkeypatch.setenv("ITS_MARKETSIM_API_KEYS", "a,b")
    monkeypatch.setenv("ITS_MARKETSIM_START_PRICES", "NVDA=100")
    monkeypatch.setenv("ITS_MARKETSIM_FAULTS", '{"duplicate_rate": 0.5}')
    cfg = load_settings(MarketSimSettings, rest_port=9002).to_config()
    assert (cfg.port, cfg.rest_port) == (9001, 9002)
    assert math.isinf(cfg.speed) and cfg.symbols == ("NVDA", "AAPL")
    assert cfg.api_keys == ("a", "b") and cfg.start_price("NVDA") == 100.0
    assert cfg.faults == {"duplicate_rate": 0.5}
    assert cfg.tape("AAPL") == 3 and cfg.tape("IBM") == 1


def test_bad_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITS_MARKETSIM_SPEED", "fast-ish")
    with pytest.raises(SettingsError) as info:
        load_settings(MarketSimSettings)
    assert "ITS_MARKETSIM_SPEED" in str(info.value)
    monkeypatch.setenv("ITS_MARKETSIM_SPEED", "1")
    monkeypatch.setenv("ITS_MARKETSIM_FAULTS", '{"stall": "yes"}')
    with pytest.raises(SettingsError) as info:
        load_settings(MarketSimSettings)
    assert "ITS_MARKETSIM_FAULTS" in str(info.value)


def test_api_keys_are_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITS_MARKETSIM_API_KEYS", "very-secret-key")
    settings = load_settings(MarketSimSettings)
    assert "very-secret-key" not in repr(settings)
    assert "very-secret-key" in settings.secret_values()


def test_cli_rejects_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--speed", "-3"]) == 2
    assert "ITS_MARKETSIM_SPEED" in capsys.readouterr().err


def test_parsers() -> None:
    assert parse_speed("60") == 60.0 and parse_speed("60x") == 60.0
    assert math.isinf(parse_speed("max")) and math.isinf(parse_speed("0"))
    assert parse_mapping("nvda=1.5, MSFT=2") == {"NVDA": 1.5, "MSFT": 2.0}
    with pytest.raises(ValueError):
        parse_mapping("NVDA")
