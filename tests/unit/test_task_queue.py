from pathlib import Path
from typing import Any

import pykka
import pytest

from agentcom.actors.task_queue import TaskQueue
from agentcom.messages import (
    QUEUE_TOPIC,
    AgentStopped,
    IdleAgent,
    Priority,
    ReclaimCause,
    TaskQueued,
    TaskRefused,
    TaskSpec,
    TaskStatus,
)
from agentcom.store import TaskRecord, TaskStore, open_tasks_db

from .conftest import ManualClock, next_of

ANY_AGENT = IdleAgent("a1", frozenset())


def submit(task_queue: Any, description: str = "work", **fields: Any) -> str:
    spec = TaskSpec(description=description, submitted_by="tester", **fields)
    return str(task_queue.submit(spec).get(timeout=5)["task_id"])


def assign(task_queue: Any, agent_id: str = "a1", *caps: str) -> Any:
    (assignment,) = task_queue.assign_next([IdleAgent(agent_id, frozenset(caps))]).get(timeout=5)
    return assignment


def events(task: dict[str, Any]) -> list[str]:
    return [entry["event"] for entry in task["history"]]


def test_submit_stores_the_task_as_queued(task_queue: Any) -> None:
    task_id = submit(task_queue, "hello", priority=Priority.HIGH, metadata={"k": 1})

    task = task_queue.get(task_id).get(timeout=5)
    assert task["status"] == "queued"
    assert task["priority"] == "high"
    assert task["metadata"] == {"k": 1}
    assert task["generation"] == 0
    assert events(task) == ["queued"]


def test_assignment_bumps_the_generation_each_time(task_queue: Any) -> None:
    task_id = submit(task_queue)
    first = assign(task_queue)
    task_queue.reject(task_id, "a1", "busy").get(timeout=5)
    second = assign(task_queue, "a2")

    assert (first.generation, second.generation) == (1, 2)
    task = task_queue.get(task_id).get(timeout=5)
    assert task["assigned_to"] == "a2"
    assert task["retry_count"] == 0, "a rejection spends no retry"
    assert events(task) == ["queued", "assigned", "rejected", "assigned"]


def test_completion_is_fenced_by_agent_and_generation(task_queue: Any) -> None:
    task_id = submit(task_queue)
    assignment = assign(task_queue)

    with pytest.raises(TaskRefused, match="not_found"):
        task_queue.complete("task-missing", "a1", 1, None, None).get(timeout=5)
    with pytest.raises(TaskRefused, match="not_assigned"):
        task_queue.complete(task_id, "someone-else", 1, None, None).get(timeout=5)
    with pytest.raises(TaskRefused, match="stale_generation"):
        task_queue.complete(task_id, "a1", assignment.generation + 1, None, None).get(timeout=5)

    task_queue.complete(task_id, "a1", assignment.generation, {"ok": True}, 42).get(timeout=5)
    with pytest.raises(TaskRefused, match="not_assigned"):
        task_queue.complete(task_id, "a1", assignment.generation, None, None).get(timeout=5)

    task = task_queue.get(task_id).get(timeout=5)
    assert task["status"] == "completed"
    assert task["assigned_to"] == "a1"
    assert (task["result"], task["tokens_used"]) == ({"ok": True}, 42)
    assert events(task).count("completed") == 1


def test_failures_retry_until_max_retries_then_dead_letter(task_queue: Any) -> None:
    task_id = submit(task_queue, max_retries=2)

    first = assign(task_queue)
    assert task_queue.fail(task_id, "a1", first.generation, "boom").get(timeout=5) == "retried"
    second = assign(task_queue)
    assert task_queue.fail(task_id, "a1", second.generation, "boom 2").get(timeout=5) == (
        "dead_letter"
    )

    task = task_queue.get(task_id).get(timeout=5)
    assert task["status"] == "dead_letter"
    assert task["retry_count"] == 2
    assert task["last_error"] == "boom 2"
    assert events(task)[-3:] == ["retry", "assigned", "dead_letter"]
    assert [t["id"] for t in task_queue.dead_letter().get(timeout=5)["tasks"]] == [task_id]
    assert task_queue.stats().get(timeout=5)["dead_letter"] == 1


def test_max_retries_zero_makes_the_first_failure_final(task_queue: Any) -> None:
    task_id = submit(task_queue, max_retries=0)
    assignment = assign(task_queue)

    assert task_queue.fail(task_id, "a1", assignment.generation, "x").get(timeout=5) == (
        "dead_letter"
    )


def test_retry_from_dead_letter_resets_the_retry_count(task_queue: Any) -> None:
    task_id = submit(task_queue, max_retries=0)
    task_queue.fail(task_id, "a1", assign(task_queue).generation, "x").get(timeout=5)

    assert task_queue.retry("task-missing").get(timeout=5) is None
    requeued = task_queue.retry(task_id).get(timeout=5)

    assert requeued["status"] == "requeued"
    task = task_queue.get(task_id).get(timeout=5)
    assert (task["status"], task["retry_count"]) == ("queued", 0)
    assert task_queue.retry(task_id).get(timeout=5) is None, "only dead-letter tasks retry"
    assert assign(task_queue).task_id == task_id


def test_reclaim_is_fenced_by_generation(task_queue: Any) -> None:
    task_id = submit(task_queue)
    assignment = assign(task_queue)

    assert not task_queue.reclaim(task_id, assignment.generation + 1, ReclaimCause.STUCK).get(
        timeout=5
    )
    assert task_queue.reclaim(task_id, assignment.generation, ReclaimCause.STUCK).get(timeout=5)
    assert not task_queue.reclaim(task_id, assignment.generation, ReclaimCause.STUCK).get(timeout=5)

    task = task_queue.get(task_id).get(timeout=5)
    assert task["status"] == "queued"
    assert task["history"][-1]["details"]["cause"] == "stuck"


@pytest.mark.parametrize(
    ("reason", "cause"),
    [("disconnected", "disconnected"), ("replaced", "replaced"), ("crashed", "crashed")],
)
def test_a_stopped_agents_task_is_reclaimed_with_the_cause(
    task_queue: Any, queue_ref: pykka.ActorRef[Any], reason: str, cause: str
) -> None:
    task_id = submit(task_queue)
    assignment = assign(task_queue)

    queue_ref.tell(AgentStopped("a1", "urn:x", task_id, assignment.generation, reason))

    task = task_queue.get(task_id).get(timeout=5)
    assert task["status"] == "queued"
    assert task["history"][-1]["event"] == "reclaimed"
    assert task["history"][-1]["details"]["cause"] == cause


def test_recover_continues_only_for_the_holder(task_queue: Any) -> None:
    task_id = submit(task_queue)
    assignment = assign(task_queue)

    assert task_queue.recover(task_id, "a1").get(timeout=5) == assignment.generation
    assert task_queue.recover(task_id, "a2").get(timeout=5) is None
    assert task_queue.recover("task-missing", "a1").get(timeout=5) is None


def test_held_by_reports_the_agents_assignment(task_queue: Any) -> None:
    task_id = submit(task_queue)
    assert task_queue.held_by("a1").get(timeout=5) is None

    assignment = assign(task_queue)
    held = task_queue.held_by("a1").get(timeout=5)
    assert (held.task_id, held.generation, held.accepted) == (task_id, assignment.generation, False)

    task_queue.accept(task_id, "a1").get(timeout=5)
    assert task_queue.held_by("a1").get(timeout=5).accepted


def test_sweep_reclaims_stuck_and_unaccepted_and_overdue(
    task_queue: Any, clock: ManualClock
) -> None:
    stuck = submit(task_queue, "stuck")
    quiet = submit(task_queue, "never accepted")
    late = submit(task_queue, "late", complete_by=clock.now + 500)
    busy = submit(task_queue, "making progress")
    for agent_id in ("a1", "a2", "a3", "a4"):
        assign(task_queue, agent_id)
    task_queue.accept(stuck, "a1").get(timeout=5)
    task_queue.accept(late, "a3").get(timeout=5)
    task_queue.accept(busy, "a4").get(timeout=5)

    clock.advance(900)
    task_queue.progress(busy, "a4").get(timeout=5)
    clock.advance(200)
    swept = task_queue.sweep(stuck_threshold_ms=1000, acceptance_timeout_ms=1000).get(timeout=5)

    causes = {
        task_id: task_queue.get(task_id).get(timeout=5)["history"][-1]["details"].get("cause")
        for task_id in (stuck, quiet, late)
    }
    assert swept == 3
    assert causes == {stuck: "stuck", quiet: "stuck", late: "overdue"}
    assert task_queue.get(busy).get(timeout=5)["status"] == "assigned"
    assert task_queue.get(late).get(timeout=5)["retry_count"] == 1, "overdue spends a retry"


def test_sweep_reclaims_an_unaccepted_task_after_the_acceptance_timeout(
    task_queue: Any, clock: ManualClock
) -> None:
    task_id = submit(task_queue)
    assign(task_queue)
    clock.advance(1000)

    task_queue.sweep(stuck_threshold_ms=60_000, acceptance_timeout_ms=1000).get(timeout=5)

    task = task_queue.get(task_id).get(timeout=5)
    assert task["history"][-1]["details"]["cause"] == "acceptance_timeout"


def test_stats_count_dead_letter_only_there(task_queue: Any) -> None:
    submit(task_queue, priority=Priority.URGENT)
    dead = submit(task_queue, priority=Priority.LOW, max_retries=0)
    (assignment,) = task_queue.assign_next([ANY_AGENT]).get(timeout=5)
    assert assignment.task_id != dead
    task_queue.assign_next([IdleAgent("a2", frozenset())]).get(timeout=5)
    task_queue.fail(dead, "a2", 1, "x").get(timeout=5)

    stats = task_queue.stats().get(timeout=5)
    assert stats["by_status"] == {"queued": 0, "assigned": 1, "completed": 0, "cancelled": 0}
    assert stats["by_priority"] == {"urgent": 1, "high": 0, "normal": 0, "low": 0}
    assert stats["dead_letter"] == 1


def test_list_filters(task_queue: Any) -> None:
    urgent = submit(task_queue, priority=Priority.URGENT)
    low = submit(task_queue, priority=Priority.LOW)
    assign(task_queue, "a9")

    def ids(**filters: Any) -> list[str]:
        return [t["id"] for t in task_queue.list_tasks(**filters).get(timeout=5)["tasks"]]

    assert ids() == [urgent, low]
    assert ids(priority=Priority.LOW) == [low]
    assert ids(assigned_to="a9") == [urgent]
    assert ids(limit=1) == [urgent]


def test_every_change_is_published_after_it_is_stored(
    task_queue: Any, pubsub_ref: pykka.ActorRef[Any], recorder: Any
) -> None:
    ref, seen = recorder
    pubsub_ref.proxy().subscribe(QUEUE_TOPIC, ref).get(timeout=5)

    task_id = submit(task_queue)

    assert next_of(seen, TaskQueued) == TaskQueued(task_id, "submitted")


def test_queue_and_assignments_survive_a_restart(
    tmp_path: Path, pubsub_ref: pykka.ActorRef[Any], clock: ManualClock
) -> None:
    first = TaskQueue.start(tmp_path, pubsub_ref, clock).proxy()
    held = submit(first, needed_capabilities=("gpu",))
    assignment = assign(first, "gpu-box", "gpu")
    low = submit(first, priority=Priority.LOW)
    urgent = submit(first, priority=Priority.URGENT)
    first.actor_ref.stop()

    second = TaskQueue.start(tmp_path, pubsub_ref, clock).proxy()

    assert second.held_by("gpu-box").get(timeout=5).generation == assignment.generation
    pairs = second.assign_next([IdleAgent("x", frozenset()), IdleAgent("y", frozenset())]).get(
        timeout=5
    )
    assert [a.task_id for a in pairs] == [urgent, low]
    second.complete(held, "gpu-box", assignment.generation, None, None).get(timeout=5)


def test_a_stale_progress_report_is_ignored_and_the_queue_keeps_working(
    task_queue: Any, queue_ref: pykka.ActorRef[Any]
) -> None:
    task_id = submit(task_queue)

    task_queue.progress.defer("task-unknown", "a1")
    task_queue.progress.defer(task_id, "not-the-holder")

    assert queue_ref.is_alive()
    assert task_queue.get(task_id).get(timeout=5)["status"] == "queued"
    assert queue_ref.is_alive()


def test_recovering_a_task_counts_as_accepting_it(task_queue: Any) -> None:
    task_id = submit(task_queue)
    assign(task_queue)

    task_queue.recover(task_id, "a1").get(timeout=5)

    assert task_queue.held_by("a1").get(timeout=5).accepted


def test_a_message_that_fails_half_way_leaves_memory_as_the_store_has_it(
    task_queue: Any, queue_ref: pykka.ActorRef[Any]
) -> None:
    task_id = submit(task_queue)
    assignment = assign(task_queue)

    with pytest.raises(TypeError):  # the result cannot be stored: fails after the state moved
        task_queue.complete(task_id, "a1", assignment.generation, object(), None).get(timeout=5)

    task = task_queue.get(task_id).get(timeout=5)
    assert task["status"] == "assigned"
    assert events(task) == ["queued", "assigned"]
    assert task_queue.stats().get(timeout=5)["by_status"]["assigned"] == 1
    task_queue.complete(task_id, "a1", assignment.generation, {"ok": 1}, None).get(timeout=5)
    assert task_queue.get(task_id).get(timeout=5)["status"] == "completed"


def test_a_cancelled_queued_task_leaves_its_lane(task_queue: Any) -> None:
    doomed = submit(task_queue, "doomed", priority=Priority.HIGH)
    kept = submit(task_queue, "kept")
    reply = task_queue.cancel(doomed, "tester", "no longer needed").get(timeout=5)
    assert reply == {"status": "cancelled", "task_id": doomed, "previous_status": "queued"}

    assert assign(task_queue).task_id == kept
    assert task_queue.assign_next([IdleAgent("a2", frozenset())]).get(timeout=5) == []
    assert task_queue.stats().get(timeout=5)["by_status"]["cancelled"] == 1


def test_a_cancelled_assignment_is_fenced_and_released(task_queue: Any) -> None:
    task_id = submit(task_queue)
    assignment = assign(task_queue)
    task_queue.cancel(task_id, "tester", None).get(timeout=5)
    with pytest.raises(TaskRefused, match="not_assigned"):
        task_queue.complete(task_id, "a1", assignment.generation, None, None).get(timeout=5)
    assert task_queue.held_by("a1").get(timeout=5) is None


def test_a_lone_hub_holds_assigned_tasks_whatever_hub_they_name(
    tmp_path: Path, pubsub_ref: pykka.ActorRef[Any]
) -> None:
    """Rows copied from a PostgreSQL store (``store copy``) name the hub that
    assigned them; a SQLite hub is the only one, and keeps them as its own."""
    store = TaskStore(open_tasks_db(tmp_path))
    task = TaskRecord("task-copied", "copied", Priority.NORMAL, "alice", 1, 1)
    task.status, task.assigned_to, task.assigned_at = TaskStatus.ASSIGNED, "a1", 1
    task.generation, task.hub_id = 1, "hub-gone"
    store.insert(task)
    store.end_message(keep=True)
    store.commit()
    queue = TaskQueue.start(tmp_path, pubsub_ref).proxy()
    held = queue.held_by("a1").get(timeout=5)
    assert held is not None and held.task_id == "task-copied"
