"""ExecRunner and process groups: the command, its environment, its limits, its end."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import time
from pathlib import Path

import pytest

from agentcom.worker.assignment import Assignment
from agentcom.worker.environment import PASSED_ENV
from agentcom.worker.outcome import Completed, Failed, Outcome
from agentcom.worker.process import end_process_group, group_is_alive
from agentcom.worker.runner import ExecRunner, RunHooks, TimeLimit
from tests.waiting import wait_until


def assignment(complete_by_ms: int | None = None) -> Assignment:
    return Assignment.from_fields(
        {
            "task_id": "task-0000000000000001",
            "description": 'it\'s "quoted" $HOME',
            "metadata": {"n": 1},
            "generation": 3,
            "complete_by": complete_by_ms,
        }
    )


class Recorder:
    def __init__(self) -> None:
        self.started = 0
        self.groups: list[int] = []
        self.hooks = RunHooks(self._started, self.groups.append)

    def _started(self) -> None:
        self.started += 1


def run(
    command: str,
    workdir: Path,
    task_timeout: float | None = None,
    task: Assignment | None = None,
    recorder: Recorder | None = None,
) -> Outcome:
    runner = ExecRunner(command, workdir, task_timeout)
    hooks = (recorder or Recorder()).hooks
    return asyncio.run(runner.run(task or assignment(), resume=False, hooks=hooks))


def test_the_command_gets_the_task_in_its_environment_and_workdir(tmp_path: Path) -> None:
    recorder = Recorder()
    outcome = run(
        'printf "%s|%s|%s|" "$AGENTCOM_TASK_ID" "$AGENTCOM_TASK_DESCRIPTION" '
        '"$AGENTCOM_TASK_GENERATION"; pwd; printf %s "$AGENTCOM_TASK_JSON" > task.json',
        tmp_path,
        recorder=recorder,
    )

    assert outcome == Completed(
        {"exit_code": 0, "stdout": f'task-0000000000000001|it\'s "quoted" $HOME|3|{tmp_path}\n'}
    )
    task = json.loads((tmp_path / "task.json").read_text())
    assert task == {
        "task_id": "task-0000000000000001",
        "description": 'it\'s "quoted" $HOME',
        "metadata": {"n": 1},
        "generation": 3,
        "complete_by": None,
    }
    assert recorder.started == 1 and len(recorder.groups) == 1


def test_a_failing_command_reports_its_stderr(tmp_path: Path) -> None:
    outcome = run("echo out; echo err >&2; exit 7", tmp_path)

    assert outcome == Failed("command exited with code 7; stderr: err")


def test_a_timeout_kills_every_process_of_the_group(tmp_path: Path) -> None:
    recorder = Recorder()
    started = time.monotonic()

    outcome = run("sleep 30 & sleep 30", tmp_path, task_timeout=0.5, recorder=recorder)

    assert isinstance(outcome, Failed)
    assert outcome.error.startswith("timed out after 0.5s (--task-timeout); process group killed")
    assert time.monotonic() - started < 5
    assert not group_is_alive(recorder.groups[0])


def test_background_jobs_left_behind_are_ended_with_the_task(tmp_path: Path) -> None:
    recorder = Recorder()

    outcome = run("sleep 30 > /dev/null 2>&1 & echo done", tmp_path, recorder=recorder)

    assert outcome == Completed({"exit_code": 0, "stdout": "done\n"})
    assert not group_is_alive(recorder.groups[0])


def test_cancelling_the_run_ends_the_command_and_leaves_no_error_for_asyncio_to_print(
    tmp_path: Path,
) -> None:
    recorder = Recorder()
    unhandled: list[dict[str, object]] = []

    async def scenario() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: unhandled.append(context)
        )
        runner = ExecRunner("sleep 30", tmp_path, None)
        task = asyncio.create_task(runner.run(assignment(), resume=False, hooks=recorder.hooks))
        while not recorder.groups:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gc.collect()  # a future whose error nobody retrieved reports it when collected

    asyncio.run(scenario())

    assert not group_is_alive(recorder.groups[0])
    assert [context["message"] for context in unhandled] == []


def test_a_past_complete_by_fails_without_running(tmp_path: Path) -> None:
    recorder = Recorder()
    past = int(time.time() * 1000) - 1000

    outcome = run("touch ran", tmp_path, task=assignment(complete_by_ms=past), recorder=recorder)

    assert outcome == Failed("complete_by had passed before the task started")
    assert not (tmp_path / "ran").exists() and recorder.started == 0


def test_a_missing_workdir_fails_the_task(tmp_path: Path) -> None:
    outcome = run("true", tmp_path / "gone")

    assert isinstance(outcome, Failed)
    assert outcome.error.startswith("command could not start")


def test_the_time_limit_is_the_shorter_of_timeout_and_complete_by() -> None:
    now_ms = 1_700_000_000_000
    soon = assignment(complete_by_ms=now_ms + 5_000)

    assert TimeLimit.for_task(soon, 60.0, now_ms) == TimeLimit(5.0, "complete_by")
    assert TimeLimit.for_task(soon, 2.0, now_ms) == TimeLimit(2.0, "--task-timeout")
    assert TimeLimit.for_task(assignment(), 2.0, now_ms) == TimeLimit(2.0, "--task-timeout")
    assert TimeLimit.for_task(assignment(), None, now_ms) is None


def test_a_group_that_ignores_sigterm_gets_sigkill_after_the_grace() -> None:
    # The shell and its sleep both inherit the ignored SIGTERM.
    process = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; sleep 30 & wait"], start_new_session=True
    )
    assert group_is_alive(process.pid)
    started = time.monotonic()

    asyncio.run(end_process_group(process.pid, grace=0.3))

    wait_until(lambda: not group_is_alive(process.pid), what="group to end")
    assert 0.3 <= time.monotonic() - started < 5
    assert process.wait(timeout=5) == -9


def environment_seen(stdout: str) -> dict[str, str]:
    """`env -0` output as a dict; values may hold newlines."""
    return dict(entry.split("=", 1) for entry in stdout.split("\0") if entry)


def test_the_command_inherits_only_the_allowed_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTCOM_WORKER_TOKEN", "s3cret-token")
    monkeypatch.setenv("AGENTCOM_WORKER_CAPABILITIES", "code")
    monkeypatch.setenv("CLOUD_API_KEY", "not for tasks")
    monkeypatch.setenv("MY_TOOL_HOME", "/opt/tool")
    monkeypatch.setenv("LC_TIME", "C")
    monkeypatch.setenv("HOME", "/home/worker")
    # Named or not, the worker's settings stay with the worker.
    runner = ExecRunner("env -0", tmp_path, None, ("MY_TOOL_HOME", "AGENTCOM_WORKER_TOKEN"))

    outcome = asyncio.run(runner.run(assignment(), resume=False, hooks=Recorder().hooks))

    assert isinstance(outcome, Completed)
    stdout = outcome.result["stdout"]
    seen = environment_seen(stdout)
    assert "s3cret-token" not in stdout
    assert [name for name in seen if name.startswith("AGENTCOM_WORKER_")] == []
    assert "CLOUD_API_KEY" not in seen
    assert (seen["MY_TOOL_HOME"], seen["LC_TIME"], seen["HOME"]) == (
        "/opt/tool",
        "C",
        "/home/worker",
    )
    assert seen["AGENTCOM_TASK_ID"] == "task-0000000000000001"
    # Only what the allow-list, --pass-env and the task give, and what sh sets itself.
    allowed = {*PASSED_ENV, "MY_TOOL_HOME", *assignment().environment(), "PWD", "SHLVL", "_"}
    assert {name for name in seen if not name.startswith("LC_")} <= allowed
