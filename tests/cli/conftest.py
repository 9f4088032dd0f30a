"""The command line against a real hub: ``python -m agentcom …`` in a subprocess, with the
hub fixtures of tests/integration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# Every fixture of tests/integration (the hubs and what they ask for), shared
# rather than copied; a star import keeps up as that conftest grows fixtures.
from tests.integration.conftest import *  # noqa: F403
from tests.integration.conftest import LiveHub


class Cli:
    """Runs ``python -m agentcom ARGS`` with the hub and a token in the environment, and a
    config dir of the test's own (so no config file of the machine is read)."""

    def __init__(self, hub: LiveHub, home: Path) -> None:
        self.hub = hub
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AGENTCOM_")},
            "XDG_CONFIG_HOME": str(home),
            "AGENTCOM_HUB": hub.http_url,
            "AGENTCOM_TOKEN": hub.token,
        }

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agentcom", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**self.env, **env},
        )

    def ok(self, *args: str, **env: str) -> str:
        """stdout of a run that must succeed."""
        done = self(*args, **env)
        assert done.returncode == 0, (done.returncode, done.stderr)
        assert done.stderr == "", done.stderr
        return done.stdout

    def json(self, *args: str, **env: str) -> Any:
        return json.loads(self.ok(*args, "--json", **env))


@pytest.fixture
def cli(hub: LiveHub, tmp_path: Path) -> Cli:
    return Cli(hub, tmp_path / "config-home")
