"""TaskQueue: who sees which task, and pages."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from agentcom.messages import IdleAgent, TaskSpec, TaskStatus
from agentcom.store import TaskStore, open_tasks_db


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


def test_an_agents_listing_reads_only_its_own_index_ranges(tmp_path: Path) -> None:
    """The filter is SQL through indexes (submitter, assignee), never a scan of every task."""
    conn = open_tasks_db(tmp_path)
    issued: list[tuple[str, list[object]]] = []

    class Recording:
        def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
            issued.append((sql, list(params)))
            return conn.execute(sql, params)

    store = TaskStore(Recording())  # type: ignore[arg-type]
    for status in (None, TaskStatus.DEAD_LETTER):
        issued.clear()
        store.select(status, limit=101, after=0, visible_to="alice")
        ((sql, params),) = issued
        plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        assert "USING COVERING INDEX tasks_by_submitter" in plan or (
            "USING INDEX tasks_by_submitter" in plan
        ), plan
        assert "tasks_by_assignee" in plan, plan
        assert "SCAN tasks" not in plan, plan
