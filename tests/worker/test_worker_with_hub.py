"""The worker as a real process against a real hub: issue 5's scenarios, end to end.

Commands leave marker files in the test's directory (see `HELD_COMMAND`).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from agentcom.hub import HubThread
from agentcom.worker.process import group_is_alive
from tests.waiting import wait_until
from tests.worker.harness import (
    HELD_COMMAND,
    Hubs,
    Workers,
    connected_agents,
    events_of,
    runs,
    submit,
    task_of,
    wait_for_runs,
    wait_for_status,
)


def test_successful_command_completes_with_its_stdout_tail(
    hub: HubThread, workers: Workers, tmp_path: Path
) -> None:
    token = hub.create_token("alice")
    workdir = tmp_path / "work"
    workdir.mkdir()
    workers.start(
        hub.ws_url,
        token,
        capabilities="code,python",
        workdir=str(workdir),
        exec='printf %s "$AGENTCOM_TASK_JSON" > task.json; '
        'echo "id=$AGENTCOM_TASK_ID gen=$AGENTCOM_TASK_GENERATION"; '
        'echo "do: $AGENTCOM_TASK_DESCRIPTION"',
    )
    task_id = submit(hub, token, "say hi", metadata={"k": "v"}, needed_capabilities=["python"])

    task = wait_for_status(hub, task_id, "completed")

    assert task["result"] == {"exit_code": 0, "stdout": f"id={task_id} gen=1\ndo: say hi\n"}
    assert task["tokens_used"] is None
    assert [e["details"]["generation"] for e in events_of(task, "completed")] == [1]
    seen = json.loads((workdir / "task.json").read_text())
    assert (seen["task_id"], seen["description"], seen["metadata"]) == (
        task_id,
        "say hi",
        {"k": "v"},
    )


def test_failing_command_reports_exit_code_and_stderr_tail(
    hub: HubThread, workers: Workers
) -> None:
    token = hub.create_token("alice")
    workers.start(hub.ws_url, token, exec='echo "some output"; echo "it broke" >&2; exit 3')
    task_id = submit(hub, token, "break", max_retries=0)

    task = wait_for_status(hub, task_id, "dead_letter")

    assert "exited with code 3" in task["last_error"]
    assert "it broke" in task["last_error"]


def test_json_last_line_is_the_result_and_its_tokens_are_reported(
    hub: HubThread, workers: Workers
) -> None:
    token = hub.create_token("alice")
    workers.start(
        hub.ws_url, token, exec="""echo thinking; echo '{"answer": 42, "tokens_used": 120}'"""
    )
    task_id = submit(hub, token, "answer")

    task = wait_for_status(hub, task_id, "completed")

    assert task["result"] == {"answer": 42, "tokens_used": 120}
    assert task["tokens_used"] == 120


def test_task_timeout_kills_the_whole_process_group(
    hub: HubThread, workers: Workers, tmp_path: Path
) -> None:
    token = hub.create_token("alice")
    workers.start(
        hub.ws_url,
        token,
        task_timeout=1,
        exec='echo "$$" >> runs.log; sleep 60 & sleep 60; echo late',
    )
    task_id = submit(hub, token, "hang", max_retries=0)

    task = wait_for_status(hub, task_id, "dead_letter")

    assert "timed out after 1.0s (--task-timeout)" in task["last_error"]
    [pgid] = runs(tmp_path)
    assert not group_is_alive(pgid)


def test_complete_by_limits_the_run(hub: HubThread, workers: Workers, tmp_path: Path) -> None:
    token = hub.create_token("alice")
    workers.start(hub.ws_url, token, exec=HELD_COMMAND)
    wait_until(lambda: connected_agents(hub) == ["alice"] or connected_agents(hub))
    complete_by = int(time.time() * 1000) + 1500
    task_id = submit(hub, token, "hurry", max_retries=0, complete_by=complete_by)

    task = wait_for_status(hub, task_id, "dead_letter")

    assert "s (complete_by); process group killed" in task["last_error"]
    [pgid] = runs(tmp_path)
    assert not group_is_alive(pgid)


def test_progress_keeps_a_long_task_from_being_swept_as_stuck(hubs: Hubs, workers: Workers) -> None:
    hub = hubs.start(stuck_threshold_ms=800, sweep_interval_ms=100)
    token = hub.create_token("alice")
    workers.start(hub.ws_url, token, progress_interval=0.2, exec="sleep 2.5")
    task_id = submit(hub, token, "long")

    task = wait_for_status(hub, task_id, "completed")

    assert events_of(task, "reclaimed") == []
    assert task["generation"] == 1


def test_killed_worker_ends_its_orphan_and_continues_the_task_after_restart(
    hubs: Hubs, workers: Workers, tmp_path: Path
) -> None:
    hub = hubs.start()
    token = hub.create_token("alice")
    first = workers.start(hub.ws_url, token, exec=HELD_COMMAND)
    task_id = submit(hub, token, "survive a crash")
    [orphan] = wait_for_runs(tmp_path, 1)
    # With the hub down while the worker dies, the hub never sees a disconnect:
    # the task is still assigned when both come back.
    port = hubs.stop()
    first.signal(signal.SIGKILL)
    first.wait_exit()
    assert group_is_alive(orphan)
    hub = hubs.start(port=port)

    second = workers.start(hub.ws_url, token, exec=HELD_COMMAND)
    second.wait_for_event("task_continued", task_id=task_id, generation=1)
    [_, rerun] = wait_for_runs(tmp_path, 2)
    assert not group_is_alive(orphan)
    (tmp_path / "release").touch()
    task = wait_for_status(hub, task_id, "completed")

    assert len(events_of(task, "completed")) == 1
    assert task["generation"] == 1
    assert task["result"]["stdout"] == "finished\n"
    assert not group_is_alive(rerun)


def test_killed_worker_drops_a_task_the_hub_gave_to_another_agent(
    hub: HubThread, workers: Workers, tmp_path: Path
) -> None:
    alice_token, bob_token = hub.create_token("alice"), hub.create_token("bob")
    alice = workers.start(hub.ws_url, alice_token, exec=HELD_COMMAND)
    task_id = submit(hub, alice_token, "taken over")
    [orphan] = wait_for_runs(tmp_path, 1)
    alice.signal(signal.SIGKILL)
    alice.wait_exit()
    bob = workers.start(hub.ws_url, bob_token, agent_id="bob", exec="echo bob did it")
    task = wait_for_status(hub, task_id, "completed")
    assert task["assigned_to"] == "bob"
    bob.signal(signal.SIGTERM)
    assert bob.wait_exit() == 0

    restarted = workers.start(hub.ws_url, alice_token, exec=HELD_COMMAND)
    restarted.wait_for_event("task_forgotten", task_id=task_id, why="reassigned")

    assert runs(tmp_path) == [orphan]
    assert not group_is_alive(orphan)
    assert not (tmp_path / "state-alice" / "alice.task.json").exists()
    assert len(events_of(task_of(hub, task_id), "completed")) == 1


def test_killed_worker_restarted_while_the_hub_runs_completes_the_task_once(
    hub: HubThread, workers: Workers, tmp_path: Path
) -> None:
    token = hub.create_token("alice")
    first = workers.start(hub.ws_url, token, exec=HELD_COMMAND)
    task_id = submit(hub, token, "crash and retry")
    wait_for_runs(tmp_path, 1)
    first.signal(signal.SIGKILL)
    first.wait_exit()

    # The hub took the task back at the disconnect and offers it again, under a
    # new generation; whether recovery or the new offer reaches the worker first,
    # it runs the task once more and completes it once, under that generation.
    workers.start(hub.ws_url, token, exec=HELD_COMMAND)
    wait_for_runs(tmp_path, 2)
    (tmp_path / "release").touch()
    task = wait_for_status(hub, task_id, "completed")

    [completed] = events_of(task, "completed")
    assert completed["details"]["generation"] == task["generation"] >= 2


def test_hub_restart_while_idle_reconnects_and_takes_new_work(hubs: Hubs, workers: Workers) -> None:
    hub = hubs.start()
    token = hub.create_token("alice")
    workers.start(hub.ws_url, token, exec="echo done")
    wait_until(lambda: connected_agents(hub) == ["alice"] or connected_agents(hub))

    hub = hubs.restart()
    wait_until(lambda: connected_agents(hub) == ["alice"] or connected_agents(hub))
    task_id = submit(hub, token, "after restart")

    assert wait_for_status(hub, task_id, "completed")["result"]["stdout"] == "done\n"


def test_hub_restart_while_working_reports_once_after_reconnecting(
    hubs: Hubs, workers: Workers, tmp_path: Path
) -> None:
    hub = hubs.start()
    token = hub.create_token("alice")
    worker = workers.start(hub.ws_url, token, exec=HELD_COMMAND)
    task_id = submit(hub, token, "outlive the hub")
    wait_for_runs(tmp_path, 1)

    port = hubs.stop()
    (tmp_path / "release").touch()
    worker.wait_for_event("task_finished", task_id=task_id)  # while the hub is down
    hub = hubs.start(port=port)
    task = wait_for_status(hub, task_id, "completed")

    assert len(events_of(task, "completed")) == 1
    assert events_of(task, "reclaimed") == []
    assert task["result"]["stdout"] == "finished\n"
    assert len(runs(tmp_path)) == 1


def test_sigterm_lets_the_running_task_finish_then_exits_zero(
    hub: HubThread, workers: Workers, tmp_path: Path
) -> None:
    token = hub.create_token("alice")
    worker = workers.start(hub.ws_url, token, drain_timeout=10, exec=HELD_COMMAND)
    task_id = submit(hub, token, "finish first")
    wait_for_runs(tmp_path, 1)

    worker.signal(signal.SIGTERM)
    worker.wait_for_event("shutdown_requested")
    (tmp_path / "release").touch()

    assert worker.wait_exit() == 0
    assert wait_for_status(hub, task_id, "completed")["result"]["stdout"] == "finished\n"
    assert "alice" not in connected_agents(hub)


def test_sigterm_past_the_drain_timeout_hands_the_task_back(
    hub: HubThread, workers: Workers, tmp_path: Path
) -> None:
    token = hub.create_token("alice")
    worker = workers.start(hub.ws_url, token, drain_timeout=0.5, exec=HELD_COMMAND)
    task_id = submit(hub, token, "too slow to drain")
    [pgid] = wait_for_runs(tmp_path, 1)

    worker.signal(signal.SIGTERM)

    assert worker.wait_exit() == 0
    task = task_of(hub, task_id)
    assert task["status"] == "queued"
    assert task["retry_count"] == 0
    assert [e["details"]["reason"] for e in events_of(task, "rejected")] == ["shutdown"]
    assert not group_is_alive(pgid)
    assert not (tmp_path / "state-alice" / "alice.task.json").exists()


def test_wrong_token_is_fatal_at_once(hub: HubThread, workers: Workers) -> None:
    worker = workers.start(hub.ws_url, "0" * 64, exec="true")

    assert worker.wait_exit() == 3
    assert worker.saw("hub_rejected_credentials", error="invalid_token")
    assert len([e for e in worker.events() if e["event"] == "hub_connecting"]) == 1


def test_token_of_another_agent_is_fatal_at_once(hub: HubThread, workers: Workers) -> None:
    bob_token = hub.create_token("bob")
    worker = workers.start(hub.ws_url, bob_token, agent_id="alice", exec="true")

    assert worker.wait_exit() == 3
    assert worker.saw("hub_rejected_credentials", error="token_agent_mismatch")


def test_a_second_worker_on_the_same_state_file_is_refused(
    hub: HubThread, workers: Workers
) -> None:
    token = hub.create_token("alice")
    first = workers.start(hub.ws_url, token, exec="true")
    first.wait_for_event("hub_connected")

    second = workers.start(hub.ws_url, token, exec="true")

    assert second.wait_exit() == 4
    assert second.saw("state_dir_in_use")
    assert first.process.poll() is None


FAKE_AGENT = """
import json, os, pathlib, sys
task_id, description, task_json = sys.argv[1:4]
results = pathlib.Path(os.environ["AGENTCOM_RESULTS_DIR"])
(results / f"{task_id}.started").touch()
if description == "please fail":
    document = {"status": "failed", "error": "the agent gave up"}
else:
    document = {"status": "success", "echo": description,
                "task_id": json.loads(task_json)["task_id"], "tokens_used": 5}
partial = results / f"{task_id}.partial"
partial.write_text(json.dumps(document))
partial.rename(results / f"{task_id}.json")
"""


def test_results_dir_mode_reports_what_the_agent_writes(
    hub: HubThread, workers: Workers, tmp_path: Path
) -> None:
    token = hub.create_token("alice")
    (tmp_path / "agent.py").write_text(FAKE_AGENT)
    results_dir = tmp_path / "results"
    # The agent runs in the background, as a long-lived agent would after a wake-up.
    wake = f'{sys.executable} agent.py ${{TASK_ID}} "$TASK_DESCRIPTION" "$TASK_JSON" &'
    workers.start(hub.ws_url, token, results_dir=str(results_dir), wake_command=wake)
    tricky = """it's "quoted" $(touch pwned) `touch pwned2` $HOME \\ done"""
    succeeding = submit(hub, token, tricky)
    failing = submit(hub, token, "please fail", max_retries=0)

    completed = wait_for_status(hub, succeeding, "completed")
    dead = wait_for_status(hub, failing, "dead_letter")

    assert completed["result"] == {
        "status": "success",
        "echo": tricky,
        "task_id": succeeding,
        "tokens_used": 5,
    }
    assert completed["tokens_used"] == 5
    assert dead["last_error"] == "the agent gave up"
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()
    assert sorted(path.suffix for path in results_dir.iterdir()) == [".log", ".log"]
