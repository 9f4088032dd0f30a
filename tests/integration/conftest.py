"""A real hub per test (``HubThread`` on a free port) and clients that speak to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentcom.config import HubConfig
from agentcom.hub import HubThread
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
def make_hub(tmp_path: Path, clients: ClientLoop) -> Iterator[Any]:
    """``make_hub(acceptance_timeout_ms=300, ...)``: a hub with other settings (HubConfig)."""
    hubs: list[LiveHub] = []

    def make(**settings: Any) -> LiveHub:
        hub = LiveHub(tmp_path / f"hub{len(hubs)}", clients, **settings)
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
def processes() -> Iterator[list[HubProcess]]:
    """Append each ``HubProcess`` a test starts: every one is killed at its end."""
    started: list[HubProcess] = []
    yield started
    for process in started:
        process.kill()
