"""``python -m agentcom store copy``: a hub's data moved to the other store, row for row.

A hub runs on SQLite and is given some of everything (tasks worked through,
an idempotency key, tokens, a message waiting in a mailbox, a channel with a
subscriber and a history, analytics); then it stops, its store is copied to
PostgreSQL and back, and each copy holds the same rows. A hub started on the
copy serves what the first one stored. A target that holds anything is
refused.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentcom.stores import stores_at
from agentcom.stores.copy import TABLES
from simulator.scratch_database import scratch_database
from tests.integration.helpers import ClientLoop, WsAgent, http, work_through
from tests.stores.helpers import hub_on, new_store_token


def store_copy(source: str, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentcom", "store", "copy", "--from", source, "--to", target],
        capture_output=True,
        text=True,
        timeout=120,
    )


def rows_of(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table a hub keeps, sorted: what a copy must reproduce."""
    stores = stores_at(url, Path())
    rows = {}
    for part, tables in TABLES.items():
        conn = stores.connect(part)
        try:
            for table in tables:
                rows[table] = sorted(tuple(row) for row in conn.execute(f"SELECT * FROM {table}"))
        finally:
            conn.close()
    return rows


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    with scratch_database(postgres_server, "copy") as url:
        yield url


@pytest.fixture
def filled(tmp_path: Path, clients: ClientLoop) -> dict[str, Any]:
    """A SQLite store a hub wrote some of everything to, the hub stopped; what it holds."""
    url = f"sqlite://{tmp_path / 'sqlite'}"
    with hub_on(url, tmp_path / "sqlite") as hub:
        alice = new_store_token(url, "alice", "admin")
        bob = new_store_token(url, "bob")

        def api(method: str, path: str, body: Any = None, **kw: Any) -> Any:
            reply = http(method, hub.http_url + path, body, **kw)
            assert reply.status in (200, 201), reply
            return reply.body

        done = [api("POST", "/api/tasks", {"description": f"t{n}"}, token=alice) for n in range(3)]
        worker = WsAgent(clients, hub.ws_url)
        worker.identify("bob", bob, capabilities=[])
        work_through(worker, 3)
        worker.close()
        api(
            "POST",
            "/api/tasks",
            {"description": "once"},
            token=alice,
            headers={"Idempotency-Key": "k1"},
        )
        api("POST", "/api/message", {"to": "bob", "payload": {"hi": 1}}, token=alice)
        api("POST", "/api/channels", {"name": "ops"}, token=alice)
        api("POST", "/api/channels/ops/subscribe", token=bob)
        api("POST", "/api/channels/ops/publish", {"payload": {"deploy": True}}, token=alice)
        hub.signal(signal.SIGTERM)
        assert hub.wait() == 0
    rows = rows_of(url)
    for table, found in rows.items():
        assert found or table in ("settings",), f"the hub wrote nothing to {table}"
    return {"url": url, "rows": rows, "done": [t["task_id"] for t in done], "bob": bob}


def test_sqlite_to_postgresql_and_back_copies_every_row(
    filled: dict[str, Any], postgres_url: str, tmp_path: Path
) -> None:
    there = store_copy(filled["url"], postgres_url)
    assert there.returncode == 0, there.stderr
    assert "tasks: 4 rows" in there.stderr  # progress, per table
    assert rows_of(postgres_url) == filled["rows"]

    back = f"sqlite://{tmp_path / 'back'}"
    again = store_copy(postgres_url, back)
    assert again.returncode == 0, again.stderr
    assert rows_of(back) == filled["rows"]


def test_a_hub_on_the_copy_serves_what_the_first_one_stored(
    filled: dict[str, Any], postgres_url: str, tmp_path: Path
) -> None:
    assert store_copy(filled["url"], postgres_url).returncode == 0
    bob = filled["bob"]
    with hub_on(postgres_url, tmp_path / "unused") as hub:
        for task_id in filled["done"]:
            task = http("GET", f"{hub.http_url}/api/tasks/{task_id}", token=bob).body
            assert task["status"] == "completed"
            assert [e["event"] for e in task["history"]][-1] == "completed"
        mailbox = http("GET", f"{hub.http_url}/api/mailbox/bob", token=bob).body
        # The direct message, and the channel's, which went to its subscriber's mailbox.
        assert [m["payload"] for m in mailbox["messages"]] == [{"hi": 1}, {"deploy": True}]
        history = http("GET", f"{hub.http_url}/api/channels/ops/history", token=bob).body
        assert [m["message"]["payload"] for m in history["messages"]] == [{"deploy": True}]
        new = http("POST", hub.http_url + "/api/tasks", {"description": "new"}, token=bob)
        assert new.status == 201, "the copied seqs do not collide with new ones"
    assert not (tmp_path / "unused").exists(), "a data dir given beside the URL holds nothing"


def test_a_target_that_holds_anything_is_refused(filled: dict[str, Any], postgres_url: str) -> None:
    assert store_copy(filled["url"], postgres_url).returncode == 0
    before = rows_of(postgres_url)

    refused = store_copy(filled["url"], postgres_url)

    assert refused.returncode == 2
    assert "is not empty" in refused.stderr and "copy only into a new store" in refused.stderr
    assert rows_of(postgres_url) == before
    back_into_the_source = store_copy(postgres_url, filled["url"])
    assert back_into_the_source.returncode == 2
