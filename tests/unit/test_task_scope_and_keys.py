"""TaskQueue: who sees which task, pages, and Idempotency-Keys (with a hand-moved clock)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pykka
import pytest

from agentcom.actors.task_queue import IDEMPOTENCY_TTL_MS, TaskQueue
from agentcom.messages import IdempotencyKeyReused, IdleAgent, TaskSpec, TaskStatus
from agentcom.store import TaskStore
from agentcom.stores import open_stores

from .conftest import ManualClock


def submit(task_queue: Any, by: str, description: str = "work", **fields: Any) -> str:
    return str(task_queue.submit(TaskSpec(description, by, **fields)).get(timeout=5)["task_id"])


def ids(page: dict[str, Any]) -> list[str]:
    return [task["id"] for task in page["tasks"]]


def test_an_agent_sees_what_it_submitted_or_holds_and_nothing_else(task_queue: Any) -> None:
    mine = submit(task_queue, "alice")
    theirs = submit(task_queue, "bob")
    (held,) = task_queue.assign_next([IdleAgent("alice", frozenset())]).get(timeout=5)
    assert held.task_id == mine
    (assignment,) = task_queue.assign_next([IdleAgent("carol", frozenset())]).get(timeout=5)
    assert assignment.task_id == theirs

    assert task_queue.get(mine, "alice").get(timeout=5)["id"] == mine
    assert task_queue.get(theirs, "alice").get(timeout=5) is None
    assert task_queue.get(theirs, "carol").get(timeout=5)["id"] == theirs  # it holds it
    assert task_queue.get(theirs, None).get(timeout=5)["id"] == theirs  # viewer, admin
    assert ids(task_queue.list_tasks(limit=10, visible_to="alice").get(timeout=5)) == [mine]
    assert ids(task_queue.list_tasks(limit=10, visible_to="carol").get(timeout=5)) == [theirs]
    assert ids(task_queue.list_tasks(limit=10, visible_to="bob").get(timeout=5)) == [theirs]
    assert ids(task_queue.list_tasks(limit=10, visible_to="dave").get(timeout=5)) == []
    assert ids(task_queue.list_tasks(limit=10).get(timeout=5)) == [mine, theirs]


def test_only_the_submitter_may_retry_its_dead_letter_task(task_queue: Any) -> None:
    doomed = submit(task_queue, "alice", max_retries=0)
    (assignment,) = task_queue.assign_next([IdleAgent("w", frozenset())]).get(timeout=5)
    task_queue.fail(doomed, "w", assignment.generation, "boom").get(timeout=5)

    assert ids(task_queue.dead_letter(limit=10, visible_to="bob").get(timeout=5)) == []
    assert task_queue.retry(doomed, "bob").get(timeout=5) is None
    assert task_queue.get(doomed).get(timeout=5)["status"] == "dead_letter"
    assert ids(task_queue.dead_letter(limit=10, visible_to="alice").get(timeout=5)) == [doomed]
    assert task_queue.retry(doomed, "alice").get(timeout=5)["status"] == "requeued"


def test_pages_follow_the_cursor_to_the_end(task_queue: Any) -> None:
    submitted = [submit(task_queue, "alice" if n % 3 else "bob", f"t{n}") for n in range(10)]
    alices = [t for n, t in enumerate(submitted) if n % 3]

    for scope, expected in ((None, submitted), ("alice", alices)):
        seen: list[str] = []
        cursor = 0
        while True:
            page = task_queue.list_tasks(limit=3, cursor=cursor, visible_to=scope).get(timeout=5)
            seen += ids(page)
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        assert seen == expected


def test_an_agents_listing_reads_only_its_own_index_ranges(
    store_url: str | None, tmp_path: Path
) -> None:
    """The filter is SQL through indexes (submitter, assignee), never a scan of every task."""
    conn = open_stores(store_url, tmp_path).connect("tasks")
    issued: list[tuple[str, list[object]]] = []

    class Recording:
        def execute(self, sql: str, params: Any = ()) -> Any:
            issued.append((sql, list(params)))
            return conn.execute(sql, params)

    store = TaskStore(Recording())  # type: ignore[arg-type]
    for status in (None, TaskStatus.DEAD_LETTER):
        issued.clear()
        store.select(status, limit=101, after=0, visible_to="alice")
        ((sql, params),) = issued
        if isinstance(conn, sqlite3.Connection):
            plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            assert "USING COVERING INDEX tasks_by_submitter" in plan or (
                "USING INDEX tasks_by_submitter" in plan
            ), plan
            assert "SCAN tasks" not in plan, plan
        else:  # PostgreSQL: a table is read whole only when no index serves
            conn.execute("SET enable_seqscan = off")
            plan = " | ".join(row[0] for row in conn.execute(f"EXPLAIN {sql}", params))
            assert "tasks_by_submitter" in plan, plan
            assert "Seq Scan" not in plan, plan
        assert "tasks_by_assignee" in plan, plan


# --- Idempotency-Key -------------------------------------------------------------------------


def once(task_queue: Any, by: str, key: str, description: str = "work") -> Any:
    return task_queue.submit_once(TaskSpec(description, by), key).get(timeout=5)


def test_a_key_returns_the_first_reply_for_its_agent_only(task_queue: Any) -> None:
    first = once(task_queue, "alice", "k1")
    again = once(task_queue, "alice", "k1")
    other_agent = once(task_queue, "bob", "k1")

    assert not first.replayed and again.replayed and not other_agent.replayed
    assert again.reply == first.reply
    assert other_agent.reply["task_id"] != first.reply["task_id"]
    assert task_queue.stats().get(timeout=5)["by_status"]["queued"] == 2


def test_a_key_used_for_another_task_is_refused(task_queue: Any) -> None:
    once(task_queue, "alice", "k1", "first")
    with pytest.raises(IdempotencyKeyReused):
        once(task_queue, "alice", "k1", "something else")
    assert task_queue.stats().get(timeout=5)["by_status"]["queued"] == 1


def test_keys_expire_after_a_day_and_are_pruned(
    tmp_path: Path, pubsub_ref: pykka.ActorRef[Any], clock: ManualClock
) -> None:
    task_queue = TaskQueue.start(tmp_path, pubsub_ref, clock).proxy()
    first = once(task_queue, "alice", "old")
    clock.advance(IDEMPOTENCY_TTL_MS - 1)
    assert once(task_queue, "alice", "old").replayed, "still within 24 h"
    for n in range(3):
        once(task_queue, "alice", f"also-old-{n}")
    clock.advance(1)

    renewed = once(task_queue, "alice", "old")
    assert not renewed.replayed
    assert renewed.reply["task_id"] != first.reply["task_id"]

    def keys() -> set[str]:
        with sqlite3.connect(tmp_path / "tasks.sqlite3") as reader:
            return {row[0] for row in reader.execute("SELECT key FROM idempotency_keys")}

    assert keys() == {"old", "also-old-0", "also-old-1", "also-old-2"}
    clock.advance(IDEMPOTENCY_TTL_MS)
    task_queue.sweep(60_000, 60_000).get(timeout=5)
    assert keys() == set(), "the sweep prunes what expired"


def test_keys_survive_a_restart(
    tmp_path: Path, pubsub_ref: pykka.ActorRef[Any], clock: ManualClock
) -> None:
    first_queue = TaskQueue.start(tmp_path, pubsub_ref, clock)
    first = once(first_queue.proxy(), "alice", "k")
    first_queue.stop()

    again = once(TaskQueue.start(tmp_path, pubsub_ref, clock).proxy(), "alice", "k")
    assert again.replayed and again.reply == first.reply
