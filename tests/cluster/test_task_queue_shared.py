"""Two TaskQueues (as two hubs would hold) on one PostgreSQL database, driven directly:
the races the hub tests can only provoke, made to happen in a known order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pykka
import pytest

from agentcom.actors.pubsub import PubSub
from agentcom.actors.task_queue import TaskQueue
from agentcom.messages import (
    QUEUE_TOPIC,
    RECLAIMS_TOPIC,
    IdleAgent,
    TaskCancelled,
    TaskChanged,
    TaskQueued,
    TaskSpec,
)
from agentcom.stores import open_stores
from tests.cluster.test_tasks_across_hubs import sql
from tests.unit.conftest import Recorder, next_of
from tests.waiting import wait_until


@pytest.fixture(autouse=True)
def stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


def start_queue(
    url: str, hub_id: str, tmp_path: Path, topic: str = RECLAIMS_TOPIC
) -> tuple[Any, Any]:
    """A TaskQueue for hub ``hub_id``, and what it publishes on ``topic``."""
    pubsub = PubSub.start()
    recorder = Recorder.start()
    pubsub.proxy().subscribe(topic, recorder).get(timeout=10)
    queue = TaskQueue.start(open_stores(url, tmp_path), pubsub, hub_id=hub_id).proxy()
    return queue, recorder.proxy().seen.get(timeout=10)


def test_the_second_hub_to_claim_a_task_gets_nothing(shared_db: str, tmp_path: Path) -> None:
    first, _ = start_queue(shared_db, "hub-first", tmp_path)
    second, _ = start_queue(shared_db, "hub-second", tmp_path)
    task_id = first.submit(TaskSpec("one of us", "alice")).get(timeout=10)["task_id"]
    second.changed_elsewhere([task_id]).get(timeout=10)  # both hold it as queued now
    claimed = first.assign_next([IdleAgent("a", frozenset())]).get(timeout=10)
    assert [assignment.task_id for assignment in claimed] == [task_id]
    assert second.assign_next([IdleAgent("b", frozenset())]).get(timeout=10) == []
    assert second.stats().get(timeout=10)["by_status"]["assigned"] == 1
    assert second.assign_next([IdleAgent("b", frozenset())]).get(timeout=10) == []


def test_a_holder_is_told_when_a_refused_report_shows_its_task_gone(
    shared_db: str, tmp_path: Path
) -> None:
    queue, reclaims = start_queue(shared_db, "hub-only", tmp_path)
    task_id = queue.submit(TaskSpec("taken away", "alice")).get(timeout=10)["task_id"]
    queue.assign_next([IdleAgent("holder", frozenset())]).get(timeout=10)
    with psycopg.connect(shared_db, autocommit=True) as conn:  # another hub's cancel
        conn.execute(
            "UPDATE tasks SET status = 'cancelled', hub_id = NULL WHERE id = %s", (task_id,)
        )
    with pytest.raises(TaskChanged):
        queue.accept(task_id, "holder").get(timeout=10)
    told = next_of(reclaims, TaskCancelled)
    assert (told.task_id, told.agent_id) == (task_id, "holder")


def test_a_task_another_hub_holds_locked_is_tried_again_once_it_is_free(
    shared_db: str, tmp_path: Path
) -> None:
    queue, _ = start_queue(shared_db, "hub-patient", tmp_path)
    task_id = queue.submit(TaskSpec("locked a moment", "alice")).get(timeout=10)["task_id"]
    with psycopg.connect(shared_db) as other_hub:  # a transaction of another hub's, open
        other_hub.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task_id,))
        assert queue.assign_next([IdleAgent("a", frozenset())]).get(timeout=10) == []
        other_hub.rollback()  # ... which in the end changed nothing
    claimed = queue.assign_next([IdleAgent("a", frozenset())]).get(timeout=10)
    assert [assignment.task_id for assignment in claimed] == [task_id]


def test_a_write_waits_for_a_lock_on_a_row_still_as_it_read_it(
    shared_db: str, tmp_path: Path
) -> None:
    queue, _ = start_queue(shared_db, "hub-waiting", tmp_path)
    task_id = queue.submit(TaskSpec("held a moment", "alice")).get(timeout=10)["task_id"]
    queue.assign_next([IdleAgent("holder", frozenset())]).get(timeout=10)
    with psycopg.connect(shared_db) as other_hub:  # a change elsewhere, not committed
        other_hub.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task_id,))
        accepted = queue.accept(task_id, "holder")
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        wait_until(lambda: sql(shared_db, waiting) == [(1,)], what="the accept waiting")
        other_hub.rollback()  # ... which in the end changed nothing
    accepted.get(timeout=10)  # done, not refused
    assert sql(shared_db, "SELECT accepted_at IS NOT NULL FROM tasks") == [(True,)]


def test_a_lost_claim_brings_another_round_while_work_is_queued(
    shared_db: str, tmp_path: Path
) -> None:
    first, _ = start_queue(shared_db, "hub-first", tmp_path)
    second, queued = start_queue(shared_db, "hub-second", tmp_path, QUEUE_TOPIC)
    taken, waiting = (
        first.submit(TaskSpec(name, "alice")).get(timeout=10)["task_id"] for name in "ab"
    )
    second.changed_elsewhere([taken, waiting]).get(timeout=10)
    first.assign_next([IdleAgent("x", frozenset())]).get(timeout=10)  # takes the older
    assert second.assign_next([IdleAgent("y", frozenset())]).get(timeout=10) == []
    # Past the wake-ups the notices made (they arrive when they do), the round's own.
    while next_of(queued, TaskQueued).cause != "claim_lost":
        pass
    claimed = second.assign_next([IdleAgent("y", frozenset())]).get(timeout=10)
    assert [assignment.task_id for assignment in claimed] == [waiting]


def test_a_late_report_of_another_agent_does_not_make_a_hub_watch_its_task(
    shared_db: str, tmp_path: Path
) -> None:
    """Agent x's stale progress on hub A for a task now held by y through hub B must
    not leave A a copy that A's sweep would take back from y."""
    hub_a, _ = start_queue(shared_db, "hub-a", tmp_path)
    hub_b, _ = start_queue(shared_db, "hub-b", tmp_path)
    task_id = hub_b.submit(TaskSpec("y's now", "alice")).get(timeout=10)["task_id"]
    hub_b.assign_next([IdleAgent("y", frozenset())]).get(timeout=10)
    hub_a.progress(task_id, "x").get(timeout=10)
    assert hub_a.sweep(10**9, 0).get(timeout=10) == 0
    assert sql(shared_db, "SELECT assigned_to FROM tasks") == [("y",)]
