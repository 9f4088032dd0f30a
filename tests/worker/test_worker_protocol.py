"""The worker's side of exchanges a real hub does not start on demand, against a scripted hub."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from agentcom.worker.process import group_is_alive
from tests.worker.harness import HELD_COMMAND, Workers, runs
from tests.worker.scripted_hub import (
    TASK_A,
    TASK_B,
    TASK_C,
    ScriptedHub,
    assign,
    start_worker_running_task_a,
)


def test_second_assignment_while_busy_is_rejected_busy(
    scripted_hub: ScriptedHub, workers: Workers, tmp_path: Path
) -> None:
    workers.start(scripted_hub.ws_url, "token", exec=HELD_COMMAND)
    scripted_hub.expect("identify", agent_id="alice")
    scripted_hub.send(assign(TASK_A))
    scripted_hub.expect("task_accepted", task_id=TASK_A)

    scripted_hub.send(assign(TASK_B))
    scripted_hub.expect("task_rejected", task_id=TASK_B, reason="busy")

    (tmp_path / "release").touch()
    scripted_hub.expect("task_complete", task_id=TASK_A, generation=1)
    assert len(runs(tmp_path)) == 1


def test_refused_completion_is_dropped_not_retried(
    scripted_hub: ScriptedHub, workers: Workers, tmp_path: Path
) -> None:
    worker = workers.start(scripted_hub.ws_url, "token", exec="echo hi")
    scripted_hub.expect("identify")
    scripted_hub.send(assign(TASK_A, generation=3))
    scripted_hub.expect("task_accepted", task_id=TASK_A)
    scripted_hub.expect("task_complete", task_id=TASK_A, generation=3)

    scripted_hub.send({"type": "error", "error": "task_complete_failed: stale_generation"})
    worker.wait_for_event("task_forgotten", task_id=TASK_A, why="report_refused")
    assert not (tmp_path / "state-alice" / "alice.task.json").exists()
    scripted_hub.drop_connection()

    # A new connection: no task_recovering, no second task_complete; the next
    # frame answers the next assignment.
    scripted_hub.expect("identify")
    scripted_hub.send(assign(TASK_C))
    scripted_hub.expect("task_accepted", task_id=TASK_C)


def test_task_offered_again_after_a_reconnect_keeps_running_under_the_new_generation(
    scripted_hub: ScriptedHub, workers: Workers, tmp_path: Path
) -> None:
    start_worker_running_task_a(scripted_hub, workers, tmp_path, exec=HELD_COMMAND)

    scripted_hub.drop_connection()
    scripted_hub.expect("identify", status="working")
    scripted_hub.expect("task_recovering", task_id=TASK_A)
    scripted_hub.send(assign(TASK_A, generation=2))
    scripted_hub.expect("task_accepted", task_id=TASK_A)
    scripted_hub.send({"type": "task_continue", "task_id": TASK_A, "generation": 2})
    (tmp_path / "release").touch()

    scripted_hub.expect("task_complete", task_id=TASK_A, generation=2)
    assert len(runs(tmp_path)) == 1


def test_draining_worker_rejects_new_work_with_shutdown(
    scripted_hub: ScriptedHub, workers: Workers, tmp_path: Path
) -> None:
    worker, _ = start_worker_running_task_a(
        scripted_hub, workers, tmp_path, drain_timeout=10, exec=HELD_COMMAND
    )

    worker.signal(signal.SIGTERM)
    worker.wait_for_event("shutdown_requested")
    scripted_hub.send(assign(TASK_B))
    scripted_hub.expect("task_rejected", task_id=TASK_B, reason="shutdown")

    (tmp_path / "release").touch()
    scripted_hub.expect("task_complete", task_id=TASK_A)
    scripted_hub.send({"type": "task_ack", "task_id": TASK_A, "status": "complete"})
    assert worker.wait_exit() == 0


def test_refused_report_is_repeated_when_the_task_was_offered_again_meanwhile(
    scripted_hub: ScriptedHub, workers: Workers
) -> None:
    worker = workers.start(scripted_hub.ws_url, "token", exec="echo hi")
    scripted_hub.expect("identify")
    scripted_hub.send(assign(TASK_A, generation=1))
    scripted_hub.expect("task_accepted", task_id=TASK_A)
    scripted_hub.expect("task_complete", task_id=TASK_A, generation=1)

    # The hub took the task back and offered it again before it read the report.
    scripted_hub.send(assign(TASK_A, generation=2))
    scripted_hub.expect("task_accepted", task_id=TASK_A)
    scripted_hub.send({"type": "error", "error": "task_complete_failed: stale_generation"})

    scripted_hub.expect("task_complete", task_id=TASK_A, generation=2)
    scripted_hub.send({"type": "task_ack", "task_id": TASK_A, "status": "complete"})
    worker.wait_for_event("task_forgotten", task_id=TASK_A, why="report_acknowledged_complete")
    assert worker.saw("command_started", task_id=TASK_A)
    assert len([e for e in worker.events() if e["event"] == "command_started"]) == 1


def test_refused_acceptance_ends_the_command_and_forgets_the_task(
    scripted_hub: ScriptedHub, workers: Workers, tmp_path: Path
) -> None:
    worker, pgid = start_worker_running_task_a(scripted_hub, workers, tmp_path, exec=HELD_COMMAND)

    scripted_hub.send({"type": "error", "error": "task_accept_failed: not_assigned"})

    worker.wait_for_event("task_forgotten", task_id=TASK_A, why="acceptance_refused")
    assert not group_is_alive(pgid)
    assert not (tmp_path / "state-alice" / "alice.task.json").exists()


BAD_TASK_IDS = [
    "../victim",
    "task-0000000000000001/../../victim",
    "task-../../../victim",
    "task-000000000000000A",  # the hub's ids are lowercase
    "task-000000000000001",  # one digit short
    "task-00000000000000001",  # one digit long
    "task-0000000000000001\n",
    "victim",
    "",
]


def files_outside(root: Path, *inside: Path) -> dict[str, tuple[int, bytes]]:
    """Every path under root but those under `inside` and the worker logs, with mtime and bytes."""
    return {
        str(path.relative_to(root)): (
            path.stat().st_mtime_ns,
            path.read_bytes() if path.is_file() else b"",
        )
        for path in root.rglob("*")
        if not path.name.startswith("worker-")
        and not any(path == directory or directory in path.parents for directory in inside)
    }


def test_a_task_id_not_of_the_hubs_shape_is_rejected_and_touches_no_file(
    scripted_hub: ScriptedHub, workers: Workers, tmp_path: Path
) -> None:
    results, state, work = tmp_path / "results", tmp_path / "state-alice", tmp_path / "work"
    work.mkdir()
    for victim in ("victim.json", "victim.started", "victim.wake.log"):
        (tmp_path / victim).write_text("precious")
    before = files_outside(tmp_path, results, state, work)
    bad_ids = [*BAD_TASK_IDS, str(tmp_path / "victim")]
    workers.start(
        scripted_hub.ws_url,
        "token",
        workdir=str(work),
        results_dir=str(results),
        wake_command='echo "$AGENTCOM_TASK_ID" >> wakes.log; '
        'echo \'{"status": "success"}\' > "$AGENTCOM_RESULTS_DIR/$AGENTCOM_TASK_ID.json"',
    )
    scripted_hub.expect("identify")

    for bad_id in bad_ids:
        scripted_hub.send(assign(bad_id))
        scripted_hub.expect("task_rejected", task_id=bad_id, reason="invalid_task_id")
    for not_a_string in (None, 42, ["../victim"]):
        scripted_hub.send(assign(not_a_string))
    # Nothing answered those: the next frame is about the next, valid, task.
    scripted_hub.send(assign(TASK_A))
    scripted_hub.expect("task_accepted", task_id=TASK_A)
    scripted_hub.expect("task_complete", task_id=TASK_A)

    assert files_outside(tmp_path, results, state, work) == before
    assert (work / "wakes.log").read_text() == f"{TASK_A}\n"
    assert sorted(path.name for path in results.iterdir()) == [f"{TASK_A}.wake.log"]
    assert sorted(path.name for path in state.iterdir()) == ["alice.lock", "alice.task.json"]


SECRET_ENVIRONMENT = {
    "AGENTCOM_WORKER_TOKEN": "s3cret-token",
    "AGENTCOM_WORKER_DRAIN_TIMEOUT": "5",
    "CLOUD_API_KEY": "not for tasks",
    "MY_TOOL_HOME": "/opt/tool",
}


@pytest.mark.parametrize(
    "mode",
    [
        {"exec": "env -0 > env.out"},
        {
            "results_dir": "results",
            "wake_command": "env -0 > env.out; "
            'echo \'{"status": "success"}\' > "$AGENTCOM_RESULTS_DIR/$AGENTCOM_TASK_ID.json"',
        },
    ],
    ids=["exec", "sidecar"],
)
def test_a_task_command_never_sees_the_token_or_the_workers_settings(
    scripted_hub: ScriptedHub, workers: Workers, tmp_path: Path, mode: dict[str, str]
) -> None:
    workers.start(
        scripted_hub.ws_url, None, environ=SECRET_ENVIRONMENT, pass_env="MY_TOOL_HOME", **mode
    )
    scripted_hub.expect("identify", token="s3cret-token")  # the worker itself has it
    scripted_hub.send(assign(TASK_A))
    scripted_hub.expect("task_accepted", task_id=TASK_A)
    scripted_hub.expect("task_complete", task_id=TASK_A)

    seen_text = (tmp_path / "env.out").read_text()
    seen = dict(entry.split("=", 1) for entry in seen_text.split("\0") if entry)
    assert "s3cret-token" not in seen_text
    assert "AGENTCOM_WORKER_" not in seen_text
    assert "CLOUD_API_KEY" not in seen
    assert seen["MY_TOOL_HOME"] == "/opt/tool"
    assert seen["AGENTCOM_TASK_ID"] == TASK_A
