"""HubLease on its own, against a real database: the lease, and rejoining after a fence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from agentcom.actors.hub_lease import HubLease
from agentcom.cluster import Cluster, ClusterListener
from agentcom.stores import open_stores
from agentcom.stores.interface import StoreUnavailable
from agentcom.timers import Timers
from tests.cluster.test_tasks_across_hubs import sql
from tests.unit.conftest import Recorder
from tests.waiting import wait_until


class FlakyTaskQueue(pykka.ThreadingActor):
    """Answers ``rejoin`` as a TaskQueue whose store is still reconnecting would, once."""

    def __init__(self) -> None:
        super().__init__()
        self.rejoined: list[str] = []

    def rejoin(self, hub_id: str) -> None:
        self.rejoined.append(hub_id)
        if len(self.rejoined) == 1:
            raise StoreUnavailable("reconnecting to the database")

    def poll(self) -> int:
        return 0


@pytest.fixture
def timers() -> Iterator[Timers]:
    running = Timers()
    yield running
    running.stop()
    pykka.ActorRegistry.stop_all()


def test_a_fenced_hub_whose_first_rejoin_fails_rejoins_at_the_next_tick(
    shared_db: str, tmp_path: Path, timers: Timers
) -> None:
    cluster = Cluster("hub-first", shared_db, ClusterListener(shared_db, "hub-first"))
    lease = HubLease.start(
        cluster, open_stores(shared_db, tmp_path), "http://x", 300, 60_000, timers, lambda: None
    )
    task_queue = FlakyTaskQueue.start()
    lease.proxy().attach(task_queue, Recorder.start()).get(timeout=10)
    sql(shared_db, "UPDATE hubs SET lease_expires_at = now() - interval '1 second'")
    wait_until(lambda: cluster.hub_id != "hub-first" and not cluster.fenced, what="rejoined")
    rejoined: Any = task_queue.proxy().rejoined.get(timeout=10)
    assert len(rejoined) == 2 and rejoined[-1] == cluster.hub_id
    assert lease.is_alive()
