"""Settings: flags over env vars over the config file over defaults, and clear errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agentcom.worker.config import OPTIONS, ConfigError, build_parser, load_config
from tests.worker.harness import REPO_ROOT

REQUIRED = ["--hub", "ws://127.0.0.1:4000/ws", "--agent-id", "alice", "--token", "t0k3n"]
IDENTITY = ["--agent-id", "alice", "--token", "t0k3n", "--exec", "true"]


def test_defaults_fill_what_nobody_set() -> None:
    config = load_config([*REQUIRED, "--exec", "true"], {})

    assert config.name == "alice"
    assert config.capabilities == ()
    assert config.state_dir == Path("agentcom-worker-state")
    assert config.workdir == Path(".")
    assert (config.task_timeout, config.drain_timeout, config.progress_interval) == (
        3600.0,
        30.0,
        30.0,
    )
    assert config.kill_grace == 5.0
    assert (config.log_format, config.log_level) == ("console", "info")


def test_flag_beats_env_beats_file(tmp_path: Path) -> None:
    config_file = tmp_path / "worker.toml"
    config_file.write_text(
        "task_timeout = 10\ndrain_timeout = 11\nprogress_interval = 12\nkill_grace = 13\n"
        'exec = "true"\n'
    )
    environ = {
        "AGENTCOM_WORKER_CONFIG": str(config_file),
        "AGENTCOM_WORKER_TASK_TIMEOUT": "20",
        "AGENTCOM_WORKER_DRAIN_TIMEOUT": "21",
    }

    config = load_config([*REQUIRED, "--task-timeout", "30"], environ)

    assert (config.task_timeout, config.drain_timeout, config.progress_interval) == (30, 21, 12)
    assert config.kill_grace == 13
    assert config.exec_command == "true"


def test_everything_can_come_from_a_json_file_and_paths_are_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    config_file = tmp_path / "worker.json"
    config_file.write_text(
        json.dumps(
            {
                "hub": "wss://hub/ws",
                "agent_id": "bob",
                "token": "secret",
                "capabilities": ["code", "python"],
                "wake-command": "wake ${TASK_ID}",
                "results_dir": "results",
                "workdir": "work",
                "task_timeout": 0,
            }
        )
    )

    config = load_config(["--config", str(config_file)], {})

    assert (config.hub, config.agent_id, config.token) == ("wss://hub/ws", "bob", "secret")
    assert config.capabilities == ("code", "python")
    assert config.results_dir == tmp_path / "results"
    assert config.workdir == tmp_path / "work"
    assert config.task_timeout is None  # 0: no limit
    assert "secret" not in repr(config)


def test_capabilities_from_a_comma_list() -> None:
    config = load_config([*REQUIRED, "--exec", "true", "--capabilities", "code, python,,"], {})

    assert config.capabilities == ("code", "python")


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--exec", "true"], {}, "missing --hub"),
        ([*REQUIRED], {}, "give either --exec, or both --wake-command and --results-dir"),
        ([*REQUIRED, "--wake-command", "x"], {}, "both --wake-command and --results-dir"),
        ([*REQUIRED, "--exec", "a", "--results-dir", "r"], {}, "cannot be combined"),
        ([*REQUIRED, "--exec", "a", "--task-timeout", "soon"], {}, "--task-timeout: expected"),
        (
            [*REQUIRED, "--exec", "a"],
            {"AGENTCOM_WORKER_PROGRESS_INTERVAL": "0"},
            "AGENTCOM_WORKER_PROGRESS_INTERVAL: expected a number of seconds > 0",
        ),
        ([*REQUIRED, "--exec", "a", "--log-format", "xml"], {}, "expected one of console, json"),
        ([*REQUIRED, "--exec", "a", "--kill-grace", "-1"], {}, "--kill-grace: expected a number"),
        (["--hub", "http://hub", "--agent-id", "a", "--token", "t", "--exec", "a"], {}, "ws://"),
        ([*REQUIRED, "--exec", "a", "--workdir", "/nonexistent/dir"], {}, "not a directory"),
    ],
)
def test_bad_settings_name_their_source(
    argv: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(argv, environ)


def test_config_file_errors(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"tokn": "x"}')
    broken = tmp_path / "broken.toml"
    broken.write_text("task_timeout = ")
    wrong_type = tmp_path / "wrong.toml"
    wrong_type.write_text("task_timeout = true")

    with pytest.raises(ConfigError, match="unknown settings tokn"):
        load_config(["--config", str(unknown)], {})
    with pytest.raises(ConfigError, match="is not valid"):
        load_config(["--config", str(broken)], {})
    with pytest.raises(ConfigError, match=r"wrong\.toml: task_timeout: expected a number"):
        load_config([*REQUIRED, "--exec", "a", "--config", str(wrong_type)], {})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(["--config", str(tmp_path / "missing.json")], {})


def test_help_explains_every_option_and_its_env_var(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())

    assert exit_info.value.code == 0
    for option in OPTIONS:
        assert option.flag in text
        assert option.env_var in text
    assert "--config FILE" in text


def test_pass_env_names_come_repeated_or_as_a_list(tmp_path: Path) -> None:
    config_file = tmp_path / "worker.toml"
    config_file.write_text('exec = "true"\npass_env = ["FROM_FILE", "OTHER"]\n')
    flags = ["--pass-env", "A", "--pass-env", "B,C", "--pass-env", "A"]

    assert load_config([*REQUIRED, "--exec", "true", *flags], {}).pass_env == ("A", "B", "C")
    assert load_config(
        [*REQUIRED, "--exec", "true"], {"AGENTCOM_WORKER_PASS_ENV": "X, Y"}
    ).pass_env == ("X", "Y")
    assert load_config([*REQUIRED, "--config", str(config_file)], {}).pass_env == (
        "FROM_FILE",
        "OTHER",
    )
    assert load_config([*REQUIRED, "--exec", "true"], {}).pass_env == ()


@pytest.mark.parametrize(
    ("argv", "environ"),
    [
        (["--pass-env", "AGENTCOM_WORKER_TOKEN"], {}),
        (["--pass-env", "HOME,AGENTCOM_WORKER_CONFIG"], {}),
        (["--pass-env", "agentcom_worker_token"], {}),
        ([], {"AGENTCOM_WORKER_PASS_ENV": "PATH,AGENTCOM_WORKER_TOKEN"}),
    ],
)
def test_pass_env_never_names_a_setting_of_the_worker(
    argv: list[str], environ: dict[str, str]
) -> None:
    with pytest.raises(ConfigError, match="is a setting of the worker itself and is never passed"):
        load_config([*REQUIRED, "--exec", "true", *argv], environ)


def test_pass_env_takes_only_variable_names() -> None:
    with pytest.raises(ConfigError, match=r"--pass-env: expected environment variable names"):
        load_config([*REQUIRED, "--exec", "true", "--pass-env", "A=1"], {})


def test_the_token_leaves_the_workers_environment_once_read(tmp_path: Path) -> None:
    # The state dir is a file, so main() stops right after the settings are read.
    (tmp_path / "not-a-dir").touch()
    program = (
        "import os; from agentcom.worker.__main__ import main; "
        f"code = main(['--hub', 'ws://127.0.0.1:1/ws', '--agent-id', 'a', '--exec', 'true', "
        f"'--state-dir', {str(tmp_path / 'not-a-dir')!r}]); "
        "print(code, 'AGENTCOM_WORKER_TOKEN' in os.environ)"
    )
    environ = {**os.environ, "AGENTCOM_WORKER_TOKEN": "s3cret-token", "PYTHONPATH": str(REPO_ROOT)}

    done = subprocess.run(
        [sys.executable, "-c", program], env=environ, capture_output=True, text=True, timeout=30
    )

    assert done.stdout.split() == ["2", "False"], done.stderr


@pytest.mark.parametrize(
    "hub",
    [
        "ws://hub:4000/ws",
        "ws://10.0.0.1:4000/ws",
        "ws://[2001:db8::1]:4000/ws",
        "ws://localhost.example.com/ws",
        "ws://127.0.0.1.example.com/ws",
        "ws://[::ffff:10.0.0.1]/ws",
        "ws:///ws",
    ],
)
def test_ws_to_another_machine_is_refused_without_insecure(hub: str) -> None:
    # Settings only: nothing connects anywhere.
    with pytest.raises(ConfigError) as refused:
        load_config(["--hub", hub, *IDENTITY], {})

    assert str(refused.value).startswith(f"--hub: {hub} is ws:// to another machine")
    assert "use wss://" in str(refused.value)
    assert "SSL_CERT_FILE" in str(refused.value)
    assert "--insecure" in str(refused.value)


@pytest.mark.parametrize(
    "hub",
    [
        "ws://127.0.0.1:4000/ws",
        "ws://127.8.9.10:4000/ws",
        "ws://[::1]:4000/ws",
        "ws://localhost:4000/ws",
        "ws://LocalHost/ws",
        "wss://hub.example.com/ws",
        "wss://10.0.0.1:4000/ws",
    ],
)
def test_ws_to_this_machine_and_wss_anywhere_need_no_insecure(hub: str) -> None:
    config = load_config(["--hub", hub, *IDENTITY], {})

    assert (config.hub, config.insecure) == (hub, False)


def test_insecure_allows_ws_to_another_machine(tmp_path: Path) -> None:
    config_file = tmp_path / "worker.toml"
    config_file.write_text("insecure = true\n")
    elsewhere = ["--hub", "ws://hub:4000/ws", *IDENTITY]

    assert load_config([*elsewhere, "--insecure"], {}).insecure is True
    assert load_config(elsewhere, {"AGENTCOM_WORKER_INSECURE": "yes"}).insecure is True
    assert load_config([*elsewhere, "--config", str(config_file)], {}).insecure is True
    with pytest.raises(ConfigError, match="is ws:// to another machine"):
        load_config(elsewhere, {"AGENTCOM_WORKER_INSECURE": "false"})
    with pytest.raises(ConfigError, match="AGENTCOM_WORKER_INSECURE: expected true or false"):
        load_config(elsewhere, {"AGENTCOM_WORKER_INSECURE": "maybe"})
