"""The database going away under a running hub: 503 while it cannot commit, then on.

A real hub process on a PostgreSQL server of the test's own: the server is
stopped and started mid-run, or the hub's connections are killed with
``pg_terminate_backend``. Submitters keep submitting throughout; every task
the hub acknowledged (201) must be there afterwards, and the hub must take
work again by itself, without a restart.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.scratch_database import scratch_database
from tests.integration.helpers import ClientLoop, HubProcess, WsAgent, http
from tests.pg_server import PostgresServer
from tests.stores.helpers import hub_on, new_store_token
from tests.waiting import wait_until

# The hubs here run on a server of the test's own (``private_postgres``), which
# the test stops and kills connections on; SQLite has nothing to go away.
pytestmark = pytest.mark.stores("postgresql")

SUBMITTERS = 3


class Submitters:
    """Threads that submit tasks until stopped; what was acknowledged, and what refused."""

    def __init__(self, hub: HubProcess, token: str) -> None:
        self._hub, self._token = hub, token
        self.acknowledged: list[str] = []
        self.refusals: list[tuple[int, Any]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(SUBMITTERS)]
        for thread in self._threads:
            thread.start()

    def _run(self, n: int) -> None:
        count = 0
        while not self._stop.is_set():
            count += 1
            reply = http(
                "POST",
                self._hub.http_url + "/api/tasks",
                {"description": f"submitter {n} task {count}"},
                token=self._token,
            )
            if reply.status == 201:
                self.acknowledged.append(reply.body["task_id"])
            else:
                self.refusals.append((reply.status, reply.body))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


@pytest.fixture
def database(private_postgres: PostgresServer) -> Iterator[str]:
    with scratch_database(private_postgres.dsn, "outage") as url:
        yield url


@pytest.fixture
def hub(tmp_path: Path, database: str) -> Iterator[HubProcess]:
    with hub_on(database, tmp_path / "data", "--sweep-interval-ms", "200") as hub:
        yield hub


def assert_all_stored(hub: HubProcess, token: str, task_ids: list[str]) -> None:
    missing = [
        task_id
        for task_id in task_ids
        if http("GET", f"{hub.http_url}/api/tasks/{task_id}", token=token).status != 200
    ]
    assert missing == [], f"{len(missing)} of {len(task_ids)} acknowledged tasks lost"


def submit(hub: HubProcess, token: str) -> Any:
    return http("POST", hub.http_url + "/api/tasks", {"description": "probe"}, token=token)


def test_a_server_restart_is_503_while_down_then_work_goes_on_with_nothing_lost(
    tmp_path: Path,
    private_postgres: PostgresServer,
    database: str,
    hub: HubProcess,
    clients: ClientLoop,
) -> None:
    token = new_store_token(database, "submitter")
    agent_token = new_store_token(database, "talker")
    talker = WsAgent(clients, hub.ws_url)
    assert talker.identify("talker", agent_token, capabilities=[])["type"] == "identified"
    submitters = Submitters(hub, token)
    try:
        wait_until(lambda: len(submitters.acknowledged) >= 30, what="tasks acknowledged")
        private_postgres.halt()

        wait_until(lambda: submit(hub, token).status == 503, what="503 while the server is down")
        refused = submit(hub, token)
        assert (refused.status, refused.body) == (503, {"error": "store_unavailable"})
        # A frame that needs a commit gets an error frame with the same code.
        talker.send({"type": "message", "to": "talker", "message_type": "note", "payload": {}})
        assert talker.recv("error")["error"] == "store_unavailable"
        acknowledged_while_down = len(submitters.acknowledged)

        private_postgres.launch()
        wait_until(lambda: submit(hub, token).status == 201, timeout=20, what="201 once back")
        wait_until(
            lambda: len(submitters.acknowledged) >= acknowledged_while_down + 30,
            what="submitters served again",
        )
    finally:
        submitters.stop()
    assert {status for status, _ in submitters.refusals} <= {503}, submitters.refusals[:5]
    assert submitters.refusals, "the submitters saw the outage"
    assert_all_stored(hub, token, submitters.acknowledged)
    talker.send({"type": "message", "to": "talker", "message_type": "note", "payload": {}})
    assert talker.recv("message_sent")["id"]
    assert hub.proc.poll() is None, "no restart needed"


def test_killed_connections_are_replaced_and_nothing_acknowledged_is_lost(
    database: str, hub: HubProcess
) -> None:
    import psycopg

    token = new_store_token(database, "submitter")
    submitters = Submitters(hub, token)
    with psycopg.connect(database, autocommit=True) as admin:

        def hub_backends() -> set[int]:
            rows = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = 'agentcom'"
            ).fetchall()
            return {pid for (pid,) in rows}

        try:
            wait_until(lambda: len(submitters.acknowledged) >= 30, what="tasks acknowledged")
            killed = hub_backends()
            assert killed, "the hub's connections are visible"
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = 'agentcom'"
            )
            before = len(submitters.acknowledged)
            wait_until(
                lambda: len(submitters.acknowledged) >= before + 30, what="submitters served again"
            )
            assert hub_backends().isdisjoint(killed), "every killed connection was replaced"
        finally:
            submitters.stop()
    assert {status for status, _ in submitters.refusals} <= {503}, submitters.refusals[:5]
    assert_all_stored(hub, token, submitters.acknowledged)
