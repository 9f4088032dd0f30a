"""Where the command line finds the hub and the token, what each failure exits with, and
that the ``token`` commands and the ``agentcom`` script still work."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agentcom.cli import EXIT_REFUSED, EXIT_UNAUTHORIZED, EXIT_UNREACHABLE
from agentcom.client import Client
from tests.cli.conftest import Cli
from tests.integration.conftest import LiveHub
from tests.integration.helpers import new_token

pytestmark = pytest.mark.stores("sqlite")  # over HTTP only: the store is not what is tested


def write_config(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_flags_win_over_the_environment(cli: Cli, hub: LiveHub) -> None:
    out = cli.ok(
        "stats", "--hub", hub.http_url, "--token", hub.token, AGENTCOM_HUB="http://127.0.0.1:1"
    )
    assert out.startswith("STATUS")
    before_command = cli.ok("--json", "--token", hub.token, "stats", AGENTCOM_TOKEN="wrong")
    assert '"by_status"' in before_command


def test_the_default_config_file_gives_hub_and_token(cli: Cli, hub: LiveHub) -> None:
    home = Path(cli.env["XDG_CONFIG_HOME"])
    write_config(
        home / "agentcom" / "client.toml", f'hub = "{hub.http_url}"\ntoken = "{hub.token}"\n'
    )
    env = {k: v for k, v in cli.env.items() if k not in ("AGENTCOM_HUB", "AGENTCOM_TOKEN")}
    done = subprocess.run(
        [sys.executable, "-m", "agentcom", "stats", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert '"by_status"' in done.stdout


def test_the_environment_wins_over_the_config_file(cli: Cli, hub: LiveHub, tmp_path: Path) -> None:
    config = write_config(tmp_path / "other.toml", 'hub = "http://127.0.0.1:1"\ntoken = "wrong"\n')
    assert cli.ok("stats", "--config", str(config)).startswith("STATUS")


def test_a_config_file_others_may_read_is_warned_about(
    cli: Cli, hub: LiveHub, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "open.toml", f'token = "{hub.token}"\n', mode=0o644)
    done = cli("stats", AGENTCOM_CONFIG=str(config), AGENTCOM_TOKEN="")
    assert done.returncode == 0
    assert done.stderr == (
        f"agentcom: warning: {config} holds a token and others may read it: chmod 600 {config}\n"
    )


def test_a_named_config_file_must_exist_and_be_toml(cli: Cli, tmp_path: Path) -> None:
    missing = cli("stats", "--config", str(tmp_path / "nope.toml"))
    assert missing.returncode == EXIT_REFUSED
    assert missing.stderr.startswith(f"agentcom: cannot read config file {tmp_path / 'nope.toml'}")
    broken = write_config(tmp_path / "broken.toml", "hub = \n")
    done = cli("stats", "--config", str(broken))
    assert done.returncode == EXIT_REFUSED and "is not valid TOML" in done.stderr
    wrong_type = write_config(tmp_path / "typed.toml", "token = 42\n")
    done = cli("stats", "--config", str(wrong_type))
    assert done.stderr == f"agentcom: config file {wrong_type}: token must be a string\n"


def test_a_wrong_or_missing_token_exits_unauthorized(cli: Cli) -> None:
    wrong = cli("stats", AGENTCOM_TOKEN="wrong")
    assert (wrong.returncode, wrong.stdout) == (EXIT_UNAUTHORIZED, "")
    assert wrong.stderr == (
        "agentcom: unauthorized: the hub refused the token"
        " (--token, AGENTCOM_TOKEN or the config file)\n"
    )
    missing = cli("stats", AGENTCOM_TOKEN="")
    assert missing.returncode == EXIT_UNAUTHORIZED and "no token given" in missing.stderr


def test_a_hub_not_listening_exits_unreachable(cli: Cli) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"
        done = cli("task", "list", AGENTCOM_HUB=url)
    assert (done.returncode, done.stdout) == (EXIT_UNREACHABLE, "")
    assert done.stderr.startswith(f"agentcom: hub unreachable at {url}: ")
    assert done.stderr.count("\n") == 1


def test_the_token_commands_work_as_before(tmp_path: Path) -> None:
    token = new_token(tmp_path / "data", "alice")
    listed = subprocess.run(
        [sys.executable, "-m", "agentcom", "token", "list", "--data-dir", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert listed.stdout == f"alice\tagent\t{token[:8]}…\n"


def test_the_agentcom_script_is_installed() -> None:
    script = Path(sys.executable).parent / "agentcom"
    assert script.exists() and os.stat(script).st_mode & stat.S_IXUSR
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "task" in done.stdout and "watch" in done.stdout


def test_a_reader_that_leaves_early_gets_no_traceback(cli: Cli, hub: LiveHub) -> None:
    with Client(hub.http_url, hub.token) as client:  # ~100 KB of table: more than a pipe holds
        client.submit_many([f"task {n} " + "x" * 60 for n in range(1_000)])
    done = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m agentcom task list --limit 1000 | head -1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli.env,
    )
    assert done.stdout.split() == ["TASK", "STATUS", "PRIORITY", "AGENT", "CREATED", "DESCRIPTION"]
    assert done.stderr == ""
