"""The worker's side of exchanges a real hub does not start on demand, against a scripted hub."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentcom.worker.process import group_is_alive
from tests.worker.harness import HELD_COMMAND, Workers, runs, wait_for_runs
from tests.worker.scripted_hub import ScriptedHub


@pytest.fixture
def scripted_hub() -> Iterator[ScriptedHub]:
    with ScriptedHub() as hub:
        yield hub


def assign(task_id: str, generation: int = 1) -> dict[str, object]:
    return {
        "type": "task_assign",
        "task_id": task_id,
        "description": f"do {task_id}",
        "metadata": {},
        "generation": generation,
        "assigned_at": 1_700_000_000_000,
        "complete_by": None,
    }


def test_second_assignment_while_busy_is_rejected_busy(
    scripted_hub: ScriptedHub, workers: Workers, tmp_path: Path
) -> None:
    workers.start(scripted_hub.ws_url, "token", exec=HELD_COMMAND)
    scripted_hub.expect("identify", agent_id="alice")
    scripted_hub.send(assign("task-a"))
    scripted_hub.expect("task_accepted", task_id="task-a")

    scripted_hub.send(assign("task-b"))
    scripted_hub.expect("task_rejected", task_id="task-b", reason="busy")

    (tmp_path / "release").touch()
    scripted_hub.expect("task_complete", task_id="task-a", generation=1)
    assert len(runs(tmp_path)) == 1


def test_refused_completion_is_dropped_not_retried(
    scripted_hub: ScriptedHub, workers: Workers, tmp_path: Path
) -> None:
    worker = workers.start(scripted_hub.ws_url, "token", exec="echo hi")
    scripted_hub.expect("identify")
    scripted_hub.send(assign("task-a", generation=3))
    scripted_hub.expect("task_accepted", task_id="task-a")
    scripted_hub.expect("task_complete", task_id="task-a", generation=3)

    scripted_hub.send({"type": "error", "error": "task_complete_failed: stale_generation"})
    worker.wait_for_event("task_forgotten", task_id="task-a", why="report_refused")
    assert not (tmp_path / "state-alice" / "alice.task.json").exists()
    scripted_hub.drop_connection()

    # A new connection: no task_recovering, no second task_complete; the next
    # frame answers the next assignment.
    scripted_hub.expect("identify")
    scripted_hub.send(assign("task-c"))
    scripted_hub.expect("task_accepted", task_id="task-c")


def test_task_offered_again_after_a_reconnect_keeps_running_under_the_new_generation(
    scripted_hub: ScriptedHub, workers: Workers, tmp_path: Path
) -> None:
    workers.start(scripted_hub.ws_url, "token", exec=HELD_COMMAND)
    scripted_hub.expect("identify")
    scripted_hub.send(assign("task-a", generation=1))
    scripted_hub.expect("task_accepted", task_id="task-a")
    wait_for_runs(tmp_path, 1)

    scripted_hub.drop_connection()
    scripted_hub.expect("identify", status="working")
    scripted_hub.expect("task_recovering", task_id="task-a")
    scripted_hub.send(assign("task-a", generation=2))
    scripted_hub.expect("task_accepted", task_id="task-a")
    scripted_hub.send({"type": "task_continue", "task_id": "task-a", "generation": 2})
    (tmp_path / "release").touch()

    scripted_hub.expect("task_complete", task_id="task-a", generation=2)
    assert len(runs(tmp_path)) == 1


def test_draining_worker_rejects_new_work_with_shutdown(
    scripted_hub: ScriptedHub, workers: Workers, tmp_path: Path
) -> None:
    worker = workers.start(scripted_hub.ws_url, "token", drain_timeout=10, exec=HELD_COMMAND)
    scripted_hub.expect("identify")
    scripted_hub.send(assign("task-a"))
    scripted_hub.expect("task_accepted", task_id="task-a")
    wait_for_runs(tmp_path, 1)

    worker.signal(signal.SIGTERM)
    worker.wait_for_event("shutdown_requested")
    scripted_hub.send(assign("task-b"))
    scripted_hub.expect("task_rejected", task_id="task-b", reason="shutdown")

    (tmp_path / "release").touch()
    scripted_hub.expect("task_complete", task_id="task-a")
    scripted_hub.send({"type": "task_ack", "task_id": "task-a", "status": "complete"})
    assert worker.wait_exit() == 0


def test_refused_report_is_repeated_when_the_task_was_offered_again_meanwhile(
    scripted_hub: ScriptedHub, workers: Workers
) -> None:
    worker = workers.start(scripted_hub.ws_url, "token", exec="echo hi")
    scripted_hub.expect("identify")
    scripted_hub.send(assign("task-a", generation=1))
    scripted_hub.expect("task_accepted", task_id="task-a")
    scripted_hub.expect("task_complete", task_id="task-a", generation=1)

    # The hub took the task back and offered it again before it read the report.
    scripted_hub.send(assign("task-a", generation=2))
    scripted_hub.expect("task_accepted", task_id="task-a")
    scripted_hub.send({"type": "error", "error": "task_complete_failed: stale_generation"})

    scripted_hub.expect("task_complete", task_id="task-a", generation=2)
    scripted_hub.send({"type": "task_ack", "task_id": "task-a", "status": "complete"})
    worker.wait_for_event("task_forgotten", task_id="task-a", why="report_acknowledged_complete")
    assert worker.saw("command_started", task_id="task-a")
    assert len([e for e in worker.events() if e["event"] == "command_started"]) == 1


def test_refused_acceptance_ends_the_command_and_forgets_the_task(
    scripted_hub: ScriptedHub, workers: Workers, tmp_path: Path
) -> None:
    worker = workers.start(scripted_hub.ws_url, "token", exec=HELD_COMMAND)
    scripted_hub.expect("identify")
    scripted_hub.send(assign("task-a"))
    scripted_hub.expect("task_accepted", task_id="task-a")
    [pgid] = wait_for_runs(tmp_path, 1)

    scripted_hub.send({"type": "error", "error": "task_accept_failed: not_assigned"})

    worker.wait_for_event("task_forgotten", task_id="task-a", why="acceptance_refused")
    assert not group_is_alive(pgid)
    assert not (tmp_path / "state-alice" / "alice.task.json").exists()
