"""A cancelled task: the worker ends its command, reports nothing, and takes the next task.

Against the scripted hub, which sends `task_cancelled` on cue; the real hub's
side of the same exchange is at the end. The commands record their process
group in runs.log (see `harness.runs`) and their background child in
child.pid, and finish at once for a task given once "release" exists.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agentcom.hub import HubThread
from agentcom.worker.process import group_is_alive, process_state
from simulator.hub_http import post_json
from tests.waiting import wait_until
from tests.worker.harness import (
    HELD_COMMAND,
    Hubs,
    WorkerProcess,
    Workers,
    connected_agents,
    events_of,
    runs,
    submit,
    wait_for_runs,
    wait_for_status,
)
from tests.worker.scripted_hub import (
    TASK_A,
    TASK_B,
    TASK_C,
    ScriptedHub,
    assign,
    start_worker_running_task_a,
)

# A shell with a background child, both alive until the group is ended.
SPAWNS_A_CHILD = (
    'echo "$$" >> runs.log; if [ -e release ]; then echo finished; exit 0; fi; '
    'sleep 300 & echo "$!" > child.pid; wait'
)
# Neither the shell nor its child (which inherits the ignored signal) stops on SIGTERM.
IGNORES_SIGTERM = f"trap '' TERM; {SPAWNS_A_CHILD}"
REPORTS = ("task_complete", "task_failed")


def cancelled(task_id: str, reason: str = "no longer needed") -> dict[str, Any]:
    return {"type": "task_cancelled", "task_id": task_id, "reason": reason, "timestamp": 1}


def child_pid(directory: Path) -> int:
    path = directory / "child.pid"
    wait_until(lambda: path.exists() and path.read_text().strip() != "", what="child.pid")
    return int(path.read_text())


def is_gone(pid: int) -> bool:
    """Ended: no such process, or a zombie nobody reaped (what a container's PID 1 may leave)."""
    return process_state(pid) in (None, "Z")


def state_file(directory: Path) -> Path:
    return directory / "state-alice" / "alice.task.json"


def group_signals(worker: WorkerProcess, pgid: int) -> list[dict[str, Any]]:
    return [
        event
        for event in worker.events()
        if event["event"] == "process_group_signalled" and event["pgid"] == pgid
    ]


def unstructured_lines(worker: WorkerProcess) -> list[str]:
    """Log lines that are not JSON events: tracebacks asyncio prints by itself."""
    return [event["line"] for event in worker.events() if event["event"] == "unparsed"]


def reports_of(frames: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] in REPORTS and f.get("task_id") == task_id]


def takes_the_next_task_having_reported_nothing(
    scripted_hub: ScriptedHub, worker: WorkerProcess, directory: Path
) -> None:
    """After TASK_A was cancelled: the worker accepts and completes another task."""
    (directory / "release").touch()
    scripted_hub.send(assign(TASK_B))
    # The next frame that is not progress: nothing was reported for the cancelled task.
    scripted_hub.expect("task_accepted", task_id=TASK_B)
    scripted_hub.expect("task_complete", task_id=TASK_B, generation=1)
    assert reports_of(scripted_hub.unread(), TASK_A) == []
    assert unstructured_lines(worker) == []


@pytest.mark.parametrize(
    ("command", "kill_grace", "signals"),
    [
        (SPAWNS_A_CHILD, 30, ["SIGTERM"]),
        (IGNORES_SIGTERM, 0.5, ["SIGTERM", "SIGKILL"]),
    ],
    ids=["stops_on_sigterm", "ignores_sigterm"],
)
def test_a_cancelled_command_group_is_ended_nothing_is_reported_and_the_next_task_runs(
    scripted_hub: ScriptedHub,
    workers: Workers,
    tmp_path: Path,
    command: str,
    kill_grace: float,
    signals: list[str],
) -> None:
    worker, pgid = start_worker_running_task_a(
        scripted_hub, workers, tmp_path, kill_grace=kill_grace, exec=command
    )
    child = child_pid(tmp_path)
    assert state_file(tmp_path).exists()

    scripted_hub.send(cancelled(TASK_A))

    worker.wait_for_event("task_forgotten", task_id=TASK_A, why="cancelled")
    assert worker.saw("task_cancelled", task_id=TASK_A, reason="no longer needed")
    wait_until(lambda: is_gone(pgid) and is_gone(child), timeout=2, what="shell and child gone")
    assert not group_is_alive(pgid)
    assert not state_file(tmp_path).exists()
    sent = group_signals(worker, pgid)
    assert [event["signal"] for event in sent] == signals
    assert sent[0]["grace_s"] == kill_grace
    if len(sent) == 2:  # SIGKILL once the grace has run out, not before, nor much after
        term, kill = (datetime.fromisoformat(event["timestamp"]) for event in sent)
        assert kill_grace <= (kill - term).total_seconds() < kill_grace + 2
    takes_the_next_task_having_reported_nothing(scripted_hub, worker, tmp_path)


def test_a_cancel_while_the_command_is_finishing_ends_its_leftovers_and_reports_nothing(
    scripted_hub: ScriptedHub, workers: Workers, tmp_path: Path
) -> None:
    # The command exits 0 at once, leaving a job that ignores SIGTERM: the
    # worker is ending it (waiting out the grace) when the cancel arrives.
    leaves_a_job = (
        'echo "$$" >> runs.log; if [ -e release ]; then echo finished; exit 0; fi; '
        "trap '' TERM; sleep 300 > /dev/null 2>&1 & echo \"$!\" > child.pid; echo done"
    )
    worker, pgid = start_worker_running_task_a(
        scripted_hub, workers, tmp_path, kill_grace=60, exec=leaves_a_job
    )
    child = child_pid(tmp_path)
    worker.wait_for_event("process_group_signalled", pgid=pgid, signal="SIGTERM")

    scripted_hub.send(cancelled(TASK_A))

    worker.wait_for_event("task_forgotten", task_id=TASK_A, why="cancelled")
    # Killed at once, not after the 60 s grace the interrupted wait had left.
    wait_until(lambda: is_gone(child), timeout=5, what="the leftover job to be killed")
    assert worker.saw("process_group_signalled", pgid=pgid, signal="SIGKILL")
    assert not worker.saw("task_finished", task_id=TASK_A)
    assert not state_file(tmp_path).exists()
    takes_the_next_task_having_reported_nothing(scripted_hub, worker, tmp_path)


def test_results_dir_mode_stops_waiting_ends_the_agent_and_takes_the_next_task(
    scripted_hub: ScriptedHub, workers: Workers, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    # For TASK_A the wake command starts an agent in the background that never
    # writes a result, and exits; for the next task it writes the result itself.
    wake = (
        f'if [ "$TASK_ID" = {TASK_A} ]; then echo "$$" >> runs.log; '
        'touch "$AGENTCOM_RESULTS_DIR/$TASK_ID.started"; '
        'sleep 300 > /dev/null 2>&1 & echo "$!" > child.pid; exit 0; fi; '
        """echo '{"status": "success"}' > "$AGENTCOM_RESULTS_DIR/$TASK_ID.json\""""
    )
    worker, pgid = start_worker_running_task_a(
        scripted_hub, workers, tmp_path, kill_grace=30, results_dir=str(results), wake_command=wake
    )
    agent = child_pid(tmp_path)
    worker.wait_for_event("agent_started", task_id=TASK_A)
    worker.wait_for_event("wake_command_exited", task_id=TASK_A, returncode=0)

    scripted_hub.send(cancelled(TASK_A, reason="stuck"))

    worker.wait_for_event("task_forgotten", task_id=TASK_A, why="cancelled")
    assert worker.saw("task_cancelled", task_id=TASK_A, reason="stuck")
    assert worker.saw("result_wait_cancelled", task_id=TASK_A)
    wait_until(lambda: is_gone(agent), timeout=2, what="the agent gone")
    assert not group_is_alive(pgid)
    assert not (results / f"{TASK_A}.started").exists()
    assert not state_file(tmp_path).exists()
    takes_the_next_task_having_reported_nothing(scripted_hub, worker, tmp_path)


def test_a_cancel_for_a_task_not_held_is_ignored(
    scripted_hub: ScriptedHub, workers: Workers, tmp_path: Path
) -> None:
    worker, pgid = start_worker_running_task_a(scripted_hub, workers, tmp_path, exec=HELD_COMMAND)

    scripted_hub.send(cancelled(TASK_C))  # another task: stale, or never ours
    worker.wait_for_event("task_cancelled_ignored", task_id=TASK_C, held_task_id=TASK_A)
    assert group_is_alive(pgid) and state_file(tmp_path).exists()
    (tmp_path / "release").touch()
    scripted_hub.expect("task_complete", task_id=TASK_A, generation=1)
    scripted_hub.send({"type": "task_ack", "task_id": TASK_A, "status": "complete"})
    worker.wait_for_event("task_forgotten", task_id=TASK_A, why="report_acknowledged_complete")

    scripted_hub.send(cancelled(TASK_A))  # the task, once it is finished
    worker.wait_for_event("task_cancelled_ignored", task_id=TASK_A, held_task_id=None)
    scripted_hub.send(assign(TASK_B))
    scripted_hub.expect("task_accepted", task_id=TASK_B)
    scripted_hub.expect("task_complete", task_id=TASK_B)
    assert not worker.saw("task_cancelled")
    assert len(runs(tmp_path)) == 2


# --- against the real hub -----------------------------------------------------------------


def test_a_task_cancelled_on_the_hub_ends_the_command_and_the_worker_takes_the_next(
    hub: HubThread, workers: Workers, tmp_path: Path
) -> None:
    submitter = hub.create_token("carol")
    worker = workers.start(hub.ws_url, hub.create_token("alice"), exec=SPAWNS_A_CHILD)
    wait_until(lambda: connected_agents(hub) == ["alice"] or connected_agents(hub))
    task_id = submit(hub, submitter, "long")
    [pgid] = wait_for_runs(tmp_path, 1)
    child = child_pid(tmp_path)

    reply = post_json(f"{hub.http_url}/api/tasks/{task_id}/cancel", {}, submitter)

    assert reply == {"status": "cancelled", "task_id": task_id, "previous_status": "assigned"}
    worker.wait_for_event("task_forgotten", task_id=task_id, why="cancelled")
    assert worker.saw("task_cancelled", task_id=task_id, reason="cancelled")
    wait_until(lambda: is_gone(pgid) and is_gone(child), timeout=2, what="shell and child gone")
    assert not group_is_alive(pgid)
    assert not state_file(tmp_path).exists()
    (tmp_path / "release").touch()
    next_task = submit(hub, submitter, "next")
    assert wait_for_status(hub, next_task, "completed")["result"]["stdout"] == "finished\n"
    task = wait_for_status(hub, task_id, "cancelled")
    assert events_of(task, "completed") == [] and len(events_of(task, "cancelled")) == 1


def test_a_task_taken_back_as_stuck_ends_the_command_and_the_worker_takes_other_work(
    hubs: Hubs, workers: Workers, tmp_path: Path
) -> None:
    # Without progress the hub takes the first task back as stuck while the
    # worker is connected, tells it so, and offers it work again.
    hub = hubs.start(stuck_threshold_ms=300, sweep_interval_ms=50)
    token = hub.create_token("alice")
    worker = workers.start(hub.ws_url, token, progress_interval=60, exec=HELD_COMMAND)
    slow = submit(hub, token, "slow")
    [pgid] = wait_for_runs(tmp_path, 1)

    worker.wait_for_event("task_cancelled", task_id=slow, reason="stuck")
    worker.wait_for_event("task_forgotten", task_id=slow, why="cancelled")
    assert not group_is_alive(pgid)
    (tmp_path / "release").touch()
    # The slow task comes back to this, the only agent, and now finishes.
    task = wait_for_status(hub, slow, "completed")

    assert events_of(task, "rejected") == []
    assert len(runs(tmp_path)) >= 2
    assert not worker.saw("task_rejected")
    assert unstructured_lines(worker) == []
