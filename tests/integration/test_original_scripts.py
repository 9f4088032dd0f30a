"""The original AgentCom hub's scripts, unchanged, against this hub (issue 14, item 6).

``scripts/connect.js``, ``send.js`` and ``poll.js`` of notno/AgentCom at
64c38d0 are read at test time from a git copy of that repository named by
``AGENTCOM_ORIGINAL_REPO`` (a git directory; ``.ci/run`` sets it when the
machine has one), with ``ws`` from the npm registry. Nothing of the original
is kept in this repository. Without the copy, Node.js or npm the tests skip
and say why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.helpers import HubProcess, token_cli
from tests.waiting import wait_until

ORIGINAL_COMMIT = "64c38d0"
SCRIPTS = ("connect.js", "send.js", "poll.js")


@pytest.fixture(scope="module")
def scripts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = os.environ.get("AGENTCOM_ORIGINAL_REPO")
    if not repo or not Path(repo).exists():
        pytest.skip("AGENTCOM_ORIGINAL_REPO names no git copy of notno/AgentCom")
    for tool in ("node", "npm", "git"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    directory = tmp_path_factory.mktemp("original")
    for name in SCRIPTS:
        shown = subprocess.run(
            ["git", "--git-dir", repo, "show", f"{ORIGINAL_COMMIT}:scripts/{name}"],
            capture_output=True,
            check=True,
            timeout=30,
        )
        (directory / name).write_bytes(shown.stdout)
    installed = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent", "ws@8"],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if installed.returncode != 0:
        pytest.skip(f"npm install ws failed: {installed.stderr.strip()[-300:]}")
    return directory


class NodeScript:
    """A long-running script (connect.js) whose stdout lines are collected."""

    def __init__(self, directory: Path, name: str, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            ["node", str(directory / name)],
            cwd=directory,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str) -> str:
        def seen() -> bool | str:
            return any(text in line for line in self.lines) or "\n".join(self.lines[-20:])

        wait_until(seen, what=f"{text!r} from the script")
        return next(line for line in self.lines if text in line)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[HubProcess, dict[str, str]]]:
    data_dir = tmp_path / "data"
    tokens = {
        agent: token_cli(data_dir, "create", agent).stdout.strip()
        for agent in ("alice", "bob", "carol")
    }
    process = HubProcess(data_dir)
    yield process, tokens
    process.kill()


def run(directory: Path, name: str, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        ["node", str(directory / name), *args],
        cwd=directory,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def agent_env(hub: HubProcess, tokens: dict[str, str], agent: str, *, ws: bool) -> dict[str, str]:
    return {
        "AGENT_ID": agent,
        "AGENT_TOKEN": tokens[agent],
        "HUB_URL": hub.ws_url if ws else hub.http_url,
    }


def test_connect_js_hears_presence_and_direct_and_broadcast_messages_from_send_js(
    scripts: Path, hub: tuple[HubProcess, dict[str, str]]
) -> None:
    process, tokens = hub
    bob = NodeScript(scripts, "connect.js", agent_env(process, tokens, "bob", ws=True))
    try:
        bob.wait_for("Identified as bob")
        alice = NodeScript(scripts, "connect.js", agent_env(process, tokens, "alice", ws=True))
        try:
            alice.wait_for("Identified as alice")
            assert '"agent_id":"alice"' in bob.wait_for("agent_joined:")
        finally:
            alice.stop()
        assert '"agent_id":"alice"' in bob.wait_for("agent_left:")

        sent = run(
            scripts, "send.js", agent_env(process, tokens, "alice", ws=False), "bob", "hi bob"
        )
        assert "✓ Sent:" in sent
        bob.wait_for("alice: hi bob")
        run(
            scripts,
            "send.js",
            agent_env(process, tokens, "alice", ws=False),
            "--broadcast",
            "all hands",
        )
        bob.wait_for("alice: all hands")
    finally:
        bob.stop()


def test_poll_js_reads_and_acks_the_mailbox_of_an_agent_that_only_polls(
    scripts: Path, hub: tuple[HubProcess, dict[str, str]]
) -> None:
    process, tokens = hub
    alice: dict[str, Any] = agent_env(process, tokens, "alice", ws=False)
    carol = agent_env(process, tokens, "carol", ws=False)
    run(scripts, "send.js", alice, "carol", "first")
    run(scripts, "send.js", alice, "carol", "second")

    polled = run(scripts, "poll.js", carol, "--ack")
    assert "Mailbox: 2 message(s), last_seq: 2" in polled
    assert "[seq:1] alice: first" in polled and "[seq:2] alice: second" in polled
    assert "Acked through seq 2" in polled

    assert "Mailbox: 0 message(s), last_seq: 0" in run(scripts, "poll.js", carol)
    run(scripts, "send.js", alice, "carol", "third")
    assert "[seq:3] alice: third" in run(scripts, "poll.js", carol, "--since", "2")


def test_send_js_to_nobody_is_refused(
    scripts: Path, hub: tuple[HubProcess, dict[str, str]]
) -> None:
    process, tokens = hub
    out = run(scripts, "send.js", agent_env(process, tokens, "alice", ws=False), "nobody", "hello?")
    assert "✗ 404" in out and "unknown_recipient" in out
