"""The two task rules of "Watching the hub": progress is a number from 0 to 100,
and a dead-lettered task keeps its last holder in ``assigned_to``."""

from __future__ import annotations

from typing import Any

import pytest

from agentcom.messages import IdleAgent, TaskSpec
from agentcom.validation import FRAMES, Invalid, check


@pytest.mark.parametrize("progress", [0, 100, 42, 99.5, None])
def test_progress_from_0_to_100_or_none_passes(progress: Any) -> None:
    frame = {"type": "task_progress", "task_id": "t", "progress": progress}
    assert check(FRAMES["task_progress"], frame) is frame


@pytest.mark.parametrize(
    ("progress", "detail"),
    [
        ("50", "progress must be a number"),
        (True, "progress must be a number"),
        ([50], "progress must be a number"),
        (-1, "progress must be a number from 0 to 100"),
        (100.01, "progress must be a number from 0 to 100"),
        (10**30, "progress must be a number from 0 to 100"),
    ],
)
def test_any_other_progress_is_an_invalid_field(progress: Any, detail: str) -> None:
    frame = {"type": "task_progress", "task_id": "t", "progress": progress}
    with pytest.raises(Invalid) as refused:
        check(FRAMES["task_progress"], frame)
    assert refused.value.code == "invalid_field"
    assert str(refused.value) == f"invalid_field: {detail}"


def test_a_dead_lettered_task_keeps_its_last_holder(task_queue: Any) -> None:
    spec = TaskSpec("work", "alice", max_retries=1)
    task_id = task_queue.submit(spec).get(timeout=5)["task_id"]
    (assignment,) = task_queue.assign_next([IdleAgent("w1", frozenset())]).get(timeout=5)
    assert task_queue.fail(task_id, "w1", assignment.generation, "no").get(timeout=5) == (
        "dead_letter"
    )

    task = task_queue.get(task_id).get(timeout=5)
    assert (task["status"], task["assigned_to"], task["assigned_at"]) == ("dead_letter", "w1", None)
    assert task_queue.get(task_id, "w1").get(timeout=5) is not None, "its last holder reads it"
    assert task_queue.get(task_id, "bob").get(timeout=5) is None
    listed = task_queue.dead_letter(visible_to="w1").get(timeout=5)["tasks"]
    assert [t["id"] for t in listed] == [task_id]
    assert task_queue.held_by("w1").get(timeout=5) is None, "it holds nothing any more"

    task_queue.retry(task_id).get(timeout=5)
    assert task_queue.get(task_id).get(timeout=5)["assigned_to"] is None, "a retry clears it"
