"""A full store, in-process: SQLite's SQLITE_FULL injected where WAL mode meets it.

The real thing (a filled tmpfs under a hub process) is in
tests/integration/test_storage_full.py; here each path is driven on purpose.
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

import pykka
import pytest
import structlog.testing

from agentcom.actors.task_queue import TaskQueue
from agentcom.messages import (
    QUEUE_TOPIC,
    AgentStopped,
    IdleAgent,
    StorageFull,
    TaskQueued,
    TaskSpec,
)
from agentcom.store import TaskStore, open_tasks_db

from .conftest import ManualClock, next_of
from .full_disk import FillableDisk, OnFillableDisk


class FillableQueue(OnFillableDisk, TaskQueue):
    """A TaskQueue on a disk the test fills."""


@pytest.fixture
def fillable(
    tmp_path: Path, pubsub_ref: pykka.ActorRef[Any], clock: ManualClock
) -> tuple[Any, FillableDisk]:
    ref = FillableQueue.start(tmp_path, pubsub_ref, clock)
    disk = ref.proxy().disk.get(timeout=5)
    return ref.proxy(), disk


def submit(task_queue: Any, description: str = "work", **fields: Any) -> str:
    spec = TaskSpec(description, "tester", **fields)
    return str(task_queue.submit(spec).get(timeout=5)["task_id"])


def episode_logs(logs: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    events = [e["event"] for e in logs if e["event"].startswith("storage_")]
    tracebacks = [e for e in logs if e.get("exc_info")]
    return events, tracebacks


def test_a_full_store_refuses_writes_reads_go_on_and_it_recovers_by_itself(
    fillable: tuple[Any, FillableDisk],
) -> None:
    task_queue, disk = fillable
    kept = submit(task_queue, "before")
    with structlog.testing.capture_logs() as logs:
        disk.full = "commit"
        for n in range(5):
            with pytest.raises(StorageFull):
                submit(task_queue, f"refused {n}")

        # Memory is what the store holds: nothing of the refused tasks.
        stats = task_queue.stats().get(timeout=5)
        assert stats["by_status"]["queued"] == 1
        assert [t["id"] for t in task_queue.list_tasks(limit=10).get(timeout=5)["tasks"]] == [kept]
        assert task_queue.get(kept).get(timeout=5)["status"] == "queued"

        disk.full = None
        again = submit(task_queue, "after")
        assert task_queue.get(again).get(timeout=5)["status"] == "queued"
        submit(task_queue, "and more")

    events, tracebacks = episode_logs(logs)
    assert events == ["storage_full", "storage_writable_again"], "once per episode"
    # The first refusal fails a whole group commit, which BatchingActor logs with
    # its traceback; every later one is refused on its own, quietly.
    assert len(tracebacks) <= 1, tracebacks


def test_an_agents_report_is_refused_as_storage_full_and_changes_nothing(
    fillable: tuple[Any, FillableDisk],
) -> None:
    task_queue, disk = fillable
    task_id = submit(task_queue)
    (assignment,) = task_queue.assign_next([IdleAgent("a1", frozenset())]).get(timeout=5)
    disk.full = "commit"

    for _ in range(2):  # the first fails a group commit, the second alone
        with pytest.raises(StorageFull) as refused:
            task_queue.complete(task_id, "a1", assignment.generation, "ok", None).get(timeout=5)
        assert refused.value.reason == "storage_full"  # what the agent's FSM tells it
    assert task_queue.get(task_id).get(timeout=5)["status"] == "assigned"
    assert task_queue.held_by("a1").get(timeout=5).task_id == task_id

    disk.full = None
    task_queue.complete(task_id, "a1", assignment.generation, "ok", None).get(timeout=5)
    assert task_queue.get(task_id).get(timeout=5)["status"] == "completed"


def test_while_full_a_round_assigns_nothing_and_notices_are_dropped_quietly(
    fillable: tuple[Any, FillableDisk],
    pubsub_ref: pykka.ActorRef[Any],
    recorder: tuple[pykka.ActorRef[Any], queue.Queue[object]],
    clock: ManualClock,
) -> None:
    task_queue, disk = fillable
    held = submit(task_queue, "held")
    (assignment,) = task_queue.assign_next([IdleAgent("a1", frozenset())]).get(timeout=5)
    waiting = submit(task_queue, "waiting")
    disk.full = "commit"
    with pytest.raises(StorageFull):
        submit(task_queue, "starts the episode")
    ref, seen = recorder
    pubsub_ref.proxy().subscribe(QUEUE_TOPIC, ref).get(timeout=5)

    with structlog.testing.capture_logs() as logs:
        # The Scheduler must get an answer it can use, not an error.
        assert task_queue.assign_next([IdleAgent("a2", frozenset())]).get(timeout=5) == []
        task_queue.actor_ref.tell(AgentStopped("a1", "urn:x", held, assignment.generation, "x"))
        task_queue.progress.defer(held, "a1")
        task_queue.sweep.defer(60_000, 60_000)
        assert task_queue.get(waiting).get(timeout=5)["status"] == "queued"
    assert task_queue.get(held).get(timeout=5)["assigned_to"] == "a1", "reclaim waits"
    assert task_queue.actor_ref.is_alive()
    assert [e for e in logs if e.get("exc_info")] == []

    # Space again: the next sweep's probe ends the episode and nudges the Scheduler.
    disk.full = None
    with structlog.testing.capture_logs() as logs:
        task_queue.sweep(60_000, 60_000).get(timeout=5)
    assert [e["event"] for e in logs if e["event"].startswith("storage_")] == [
        "storage_writable_again"
    ]
    assert next_of(seen, TaskQueued).cause == "storage_writable"
    (later,) = task_queue.assign_next([IdleAgent("a2", frozenset())]).get(timeout=5)
    assert later.task_id == waiting


def test_a_write_that_loses_the_transaction_fails_the_whole_batch(tmp_path: Path) -> None:
    """SQLite may roll back everything on SQLITE_FULL, earlier messages' writes too:
    the store must then refuse the batch's further writes and fail its commit."""
    conn = open_tasks_db(tmp_path)
    disk = FillableDisk(conn)
    store = TaskStore(disk)  # type: ignore[arg-type]
    store.probe(1)
    store.end_message(keep=True)  # an earlier message of the batch, kept

    disk.full = "write"
    with pytest.raises(StorageFull):
        store.probe(2)
    store.end_message(keep=False)
    disk.full = None
    with pytest.raises(StorageFull):
        store.probe(3)  # the batch is lost: nothing more may join it
    with pytest.raises(StorageFull):
        store.commit()  # so its replies fail, and none claims a change that is gone

    store.probe(4)  # the next batch starts clean
    store.end_message(keep=True)
    assert store.commit() is True
    assert conn.execute("SELECT probed_at FROM storage_probe").fetchone() == (4,)
