"""The edge's settings (limits, origins, TLS): flags, env vars and the checks on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentcom.config import HubConfig, config_from_args


def test_limits_default_to_the_documented_values() -> None:
    config = config_from_args([], {})
    assert (config.identify_timeout_ms, config.http_timeout_ms) == (10_000, 60_000)
    assert config.max_connections_per_ip == 256
    assert config.allowed_origins == ()
    assert not config.tls


def test_allowed_origins_repeat_as_flags_or_come_comma_separated_from_env() -> None:
    flags = ["--allowed-origin", "https://a.example", "--allowed-origin", "http://b.example:8080"]
    assert config_from_args(flags, {}).allowed_origins == (
        "https://a.example",
        "http://b.example:8080",
    )
    env = {"AGENTCOM_ALLOWED_ORIGINS": " https://a.example, ,http://b.example:8080"}
    assert config_from_args([], env).allowed_origins == (
        "https://a.example",
        "http://b.example:8080",
    )
    assert config_from_args(["--allowed-origin", "https://c.example"], env).allowed_origins == (
        "https://c.example",
    )


def test_tls_needs_both_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"AGENTCOM_CERTFILE": str(tmp_path / "c.pem"), "AGENTCOM_KEYFILE": str(tmp_path / "k")}
    config = config_from_args([], env)
    assert config.tls and config.certfile == tmp_path / "c.pem"
    with pytest.raises(SystemExit):
        config_from_args(["--certfile", str(tmp_path / "c.pem")], {})
    assert "--certfile and --keyfile go together" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--identify-timeout-ms", "0"], {}, "identify_timeout_ms must be a positive"),
        ([], {"AGENTCOM_HTTP_TIMEOUT_MS": "-5"}, "http_timeout_ms must be a positive"),
        (["--max-connections-per-ip", "-1"], {}, "max_connections_per_ip must be 0"),
        ([], {"AGENTCOM_MAX_CONNECTIONS_PER_IP": "many"}, "is not an integer"),
    ],
)
def test_bad_limits_are_refused_with_a_message(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        config_from_args(argv, env)
    assert message in capsys.readouterr().err


def test_zero_connections_per_ip_means_no_cap() -> None:
    assert config_from_args(["--max-connections-per-ip", "0"], {}) == HubConfig(
        max_connections_per_ip=0
    )
