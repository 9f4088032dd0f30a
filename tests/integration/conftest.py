"""A real hub per test (``HubThread`` on a free port) and clients that speak to it.

Every hub here keeps its tasks, tokens and messages in a store, so every test
that starts one runs twice: ``[sqlite]`` and ``[postgresql]`` (``store_url``,
tests/conftest.py). That is the whole integration suite but the few tests that
start no hub, or are about SQLite's files (``@pytest.mark.stores("sqlite")``).
On PostgreSQL each hub has a database of its own.

A hub run as a process (``processes``) and the token CLI (``token_cli``)
find the test's store in ``AGENTCOM_STORE`` (``store_in_env``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentcom.config import HubConfig
from agentcom.hub import HubThread
from tests.conftest import NewStoreUrl
from tests.integration.helpers import ClientLoop, HubProcess, Reply, WsAgent, http

# Long by default so that no timer fires in a test that is not about it.
QUIET_TIMING = {
    "acceptance_timeout_ms": 30_000,
    "stuck_threshold_ms": 60_000,
    "sweep_interval_ms": 30_000,
    "ping_timeout_ms": 30_000,
}

AS_SUBMITTER = object()


class LiveHub:
    """One running hub with a submitter token, an admin token and agent connections."""

    def __init__(self, data_dir: Path, clients: ClientLoop, **settings: Any) -> None:
        """``settings``: HubConfig's, ``store`` among them (default: SQLite in ``data_dir``)."""
        config = HubConfig(
            host="127.0.0.1", port=0, data_dir=data_dir, **{**QUIET_TIMING, **settings}
        )
        self.thread = HubThread(config)
        self.thread.start()
        self.data_dir = data_dir
        self.http_url, self.ws_url = self.thread.http_url, self.thread.ws_url
        self._clients = clients
        self._sockets: list[WsAgent] = []
        self.token = self.thread.create_token("submitter")
        self.admin_token = self.thread.create_token("operator", role="admin")

    def api(
        self, method: str, path: str, body: Any = None, *, token: Any = AS_SUBMITTER, **kw: Any
    ) -> Reply:
        """HTTP call as the submitter, unless ``token`` is given (None: no header)."""
        if token is AS_SUBMITTER:
            token = self.token
        return http(method, self.http_url + path, body, token=token, **kw)

    def submit(self, description: str = "do it", **fields: Any) -> str:
        reply = self.api("POST", "/api/tasks", {"description": description, **fields})
        assert reply.status == 201, reply
        task_id: str = reply.body["task_id"]
        return task_id

    def task(self, task_id: str) -> dict[str, Any]:
        """The task as TaskQueue holds it now (a barrier on every earlier queue message)."""
        task: dict[str, Any] = self.thread.task_queue.get(task_id).get(timeout=5)
        assert task is not None, task_id
        return task

    def socket(self) -> WsAgent:
        """An open, not yet identified WebSocket."""
        agent = WsAgent(self._clients, self.ws_url)
        self._sockets.append(agent)
        return agent

    def agent(self, agent_id: str, capabilities: list[Any] | None = None, **fields: Any) -> WsAgent:
        """A connected, identified agent (with a fresh token of its own)."""
        agent = self.socket()
        token = fields.pop("token", None) or self.thread.create_token(agent_id)
        answer = agent.identify(agent_id, token, capabilities=capabilities or [], **fields)
        assert answer == {"type": "identified", "agent_id": agent_id}, answer
        return agent

    def close(self) -> None:
        for agent in self._sockets:
            agent.close()
        self.thread.stop()


@pytest.fixture
def store_in_env(store_url: str | None, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The test's store, also in ``AGENTCOM_STORE`` for the processes it runs.

    A hub process and the token CLI find it there, as an operator points both
    at one store. SQLite needs nothing: it is the data dir they are given.
    """
    if store_url is not None:
        monkeypatch.setenv("AGENTCOM_STORE", store_url)
    return store_url


@pytest.fixture
def make_hub(
    tmp_path: Path, clients: ClientLoop, store_in_env: str | None, new_store_url: NewStoreUrl
) -> Iterator[Any]:
    """``make_hub(acceptance_timeout_ms=300, ...)``: a hub with other settings (HubConfig).

    The first hub is on the test's store (``token_cli`` reaches it), each other
    one on a store of its own.
    """
    hubs: list[LiveHub] = []

    def make(**settings: Any) -> LiveHub:
        store = new_store_url() if hubs else store_in_env
        hub = LiveHub(tmp_path / f"hub{len(hubs)}", clients, **{"store": store, **settings})
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.close()


@pytest.fixture
def hub(make_hub: Any) -> LiveHub:
    hub: LiveHub = make_hub()
    return hub


@pytest.fixture
def processes(store_in_env: str | None) -> Iterator[list[HubProcess]]:
    """Append each ``HubProcess`` a test starts: every one is killed at its end.

    They run on the test's store: a test's processes are one hub, restarted.
    """
    started: list[HubProcess] = []
    yield started
    for process in started:
        process.kill()
