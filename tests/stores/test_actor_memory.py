"""An actor's memory while its database is away: never ahead of, nor behind, what is stored.

A refused request makes TaskQueue rebuild its memory from the store, which
it cannot read while the server is down: memory is then marked stale, every
request is refused (``StoreUnavailable``), and once the server is back the
first request rebuilds it, so it holds exactly what was committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from agentcom.actors.pubsub import PubSub
from agentcom.actors.task_queue import TaskQueue
from agentcom.messages import IdleAgent, TaskSpec
from agentcom.stores import open_stores
from agentcom.stores.interface import StoreUnavailable
from simulator.scratch_database import scratch_database
from tests.pg_server import PostgresServer
from tests.waiting import wait_until


@pytest.fixture
def task_queue(private_postgres: PostgresServer, tmp_path: Path) -> Iterator[Any]:
    with scratch_database(private_postgres.dsn, "memory") as url:
        yield TaskQueue.start(open_stores(url, tmp_path), PubSub.start()).proxy()
        pykka.ActorRegistry.stop_all()


def test_memory_is_rebuilt_from_the_store_once_the_server_is_back(
    private_postgres: PostgresServer, task_queue: Any
) -> None:
    kept = [task_queue.submit(TaskSpec(f"kept {n}", "alice")).get(timeout=10) for n in range(2)]

    private_postgres.halt()
    with pytest.raises(StoreUnavailable):
        task_queue.submit(TaskSpec("refused", "alice")).get(timeout=10)
    with pytest.raises(StoreUnavailable):
        task_queue.stats().get(timeout=10)  # memory cannot be trusted, nor rebuilt yet
    assert task_queue.assign_next([IdleAgent("a1", frozenset())]).get(timeout=10) == []

    private_postgres.launch()

    def queued() -> object:
        try:
            return task_queue.stats().get(timeout=10)["by_status"]["queued"]
        except StoreUnavailable as refused:  # until the backoff lets it reconnect
            return refused

    wait_until(lambda: queued() == 2, what="memory rebuilt from what was committed")
    (assigned,) = task_queue.assign_next([IdleAgent("a1", frozenset())]).get(timeout=10)
    assert assigned.task_id == kept[0]["task_id"]
