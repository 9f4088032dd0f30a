"""Waiting on and asserting about hub state, read straight from the TaskQueue actor.

Reading the actor (not the HTTP API) keeps the assertions independent of the
routes under test, as the original suite did. Every wait has a deadline and,
when it runs out, says what it was still waiting for: which tasks are not
done and in which state, or which agents have not been acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from agentcom.hub import HubThread
from simulator import AgentSim
from tests.waiting import wait_until as wait_for

Task = dict[str, Any]

ACTOR_TIMEOUT_S = 5.0


def get_task(hub: HubThread, task_id: str) -> Task | None:
    task: Task | None = hub.task_queue.get(task_id).get(timeout=ACTOR_TIMEOUT_S)
    return task


def assert_all_completed(hub: HubThread, task_ids: Sequence[str], timeout: float) -> list[Task]:
    """Wait until every task is completed; return the tasks in the order of `task_ids`."""
    latest: dict[str, Task] = {}

    def all_completed() -> bool | str:
        for task_id in task_ids:
            if (task := get_task(hub, task_id)) is not None:
                latest[task_id] = task
        incomplete = [
            _describe(task_id, latest.get(task_id))
            for task_id in task_ids
            if task_id not in latest or latest[task_id]["status"] != "completed"
        ]
        return not incomplete or f"{len(incomplete)} incomplete: " + "; ".join(incomplete)

    wait_for(all_completed, timeout, f"completion of all {len(task_ids)} tasks")
    return [latest[task_id] for task_id in task_ids]


def assert_task_completed(hub: HubThread, task_id: str, timeout: float) -> Task:
    (task,) = assert_all_completed(hub, [task_id], timeout)
    return task


def history_events(task: Task, event: str) -> list[dict[str, Any]]:
    """The task's history entries named `event`, oldest first."""
    return [entry for entry in task["history"] if entry["event"] == event]


def assert_completed_exactly_once(task: Task) -> None:
    completions = history_events(task, "completed")
    assert len(completions) == 1, f"{task['id']} completed {len(completions)} times: {completions}"


def assert_no_error_frames(sims: Iterable[AgentSim]) -> None:
    """Fail if any agent got an error frame.

    Agents that follow the protocol never get one. A refused completion, the
    only trace a duplicate completion attempt leaves, would show up here.
    """
    errors = {sim.agent_id: sim.errors for sim in sims if sim.errors}
    assert not errors, errors


def wait_for_completion_acks(
    sims: Iterable[AgentSim], expected: int, timeout: float
) -> dict[str, int]:
    """Wait until the agents together got `expected` completion acks; return each one's count.

    TaskQueue records a completion before the hub acknowledges it to the
    agent, so the agents' counts can trail the queue by a moment.
    """
    sims = list(sims)

    def counts() -> dict[str, int]:
        return {sim.agent_id: sim.completed_count for sim in sims}

    def enough_acks() -> bool | str:
        seen = counts()
        return sum(seen.values()) >= expected or f"acks per agent {seen}"

    wait_for(enough_acks, timeout, f"{expected} completion acks")
    return counts()


def _describe(task_id: str, task: Task | None) -> str:
    if task is None:
        return f"{task_id} not found"
    last_event = task["history"][-1]["event"] if task["history"] else None
    return (
        f"{task_id} {task['status']} (priority={task['priority']},"
        f" assigned_to={task['assigned_to']}, generation={task['generation']},"
        f" last event={last_event})"
    )
