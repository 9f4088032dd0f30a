"""``python -m agentcom token …`` on either store, named by ``--store`` or ``AGENTCOM_STORE``.

A hub runs on the same store as a process; what the CLI does counts there at
once (a revoked agent's socket is closed), as it does with SQLite's file.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.helpers import ClientLoop, WsAgent, http, token_cli
from tests.stores.helpers import hub_on, new_store_token


@pytest.fixture
def url(store_url: str | None, tmp_path: Path) -> str:
    """The store as a URL on both: SQLite's is its data dir."""
    return store_url or f"sqlite://{tmp_path / 'store'}"


def test_create_list_and_revoke_on_the_store_the_url_names(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unused = tmp_path / "unused-data-dir"
    made = token_cli(unused, "create", "alice", "--role", "admin", "--store", url)
    assert made.returncode == 0, made.stderr

    monkeypatch.setenv("AGENTCOM_STORE", url)  # the same store, named the other way
    listed = token_cli(unused, "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == f"alice\tadmin\t{made.stdout[:8]}…\n"
    revoked = token_cli(unused, "revoke", "alice")
    assert (revoked.returncode, revoked.stdout) == (0, "revoked 1 token(s) of alice\n")
    assert token_cli(unused, "list").stdout == ""
    assert not unused.exists(), "the data dir holds nothing when the URL names the store"


def test_a_revocation_from_the_command_line_closes_the_socket_of_a_running_hub(
    url: str, tmp_path: Path, clients: ClientLoop
) -> None:
    with hub_on(url, tmp_path / "data") as hub:
        token = new_store_token(url, "a1")
        agent = WsAgent(clients, hub.ws_url)
        assert agent.identify("a1", token, capabilities=[])["type"] == "identified"
        assert http("GET", hub.http_url + "/api/tasks", token=token).status == 200

        revoked = token_cli(tmp_path / "data", "revoke", "a1", "--store", url)
        assert revoked.returncode == 0, revoked.stderr

        assert agent.wait_closed() == 4001
        assert http("GET", hub.http_url + "/api/tasks", token=token).status == 401


@pytest.mark.stores("postgresql")
def test_an_unreachable_server_is_one_line_and_exit_1(tmp_path: Path) -> None:
    nobody = "postgresql://agentcom@127.0.0.1:1/agentcom"
    done = token_cli(tmp_path, "list", "--store", nobody)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("cannot reach the store:"), line
    assert os.listdir(tmp_path) == []
