"""Sidecar mode: filling the wake command safely, and watching the results directory."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agentcom.worker import sidecar
from agentcom.worker.assignment import Assignment
from agentcom.worker.outcome import Completed, Failed, Outcome
from agentcom.worker.process import group_is_alive
from agentcom.worker.runner import RunHooks
from agentcom.worker.sidecar import ResultsDirRunner, fill_wake_command

NASTY = """it's "so" $(touch pwned) `touch pwned` $HOME \\ \\" ' ; rm -rf nothing\n2nd line"""


def assignment(description: str = "do it", task_id: str = "task-0000000000000001") -> Assignment:
    return Assignment.from_fields(
        {"task_id": task_id, "description": description, "metadata": {}, "generation": 1}
    )


def shell_words(command: str, cwd: Path) -> list[str]:
    """The arguments `sh` would pass, one per line of a Python printout."""
    printer = f"{sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[1:]))'"
    output = subprocess.run(
        f"{printer} {command}", shell=True, cwd=cwd, capture_output=True, text=True, check=True
    ).stdout
    words: list[str] = json.loads(output)
    return words


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${TASK_DESCRIPTION}", [NASTY]),
        ('"${TASK_DESCRIPTION}"', [NASTY]),
        ("'${TASK_DESCRIPTION}'", [NASTY]),
        ('"task: ${TASK_DESCRIPTION}!"', [f"task: {NASTY}!"]),
        ("'task: ${TASK_DESCRIPTION}!'", [f"task: {NASTY}!"]),
        ("--id=${TASK_ID} x", ["--id=task-0000000000000001", "x"]),
        ("\\${TASK_ID} '\"${TASK_ID}\"'", ["${TASK_ID}", '"task-0000000000000001"']),
    ],
)
def test_values_are_quoted_for_where_they_stand(
    template: str, expected: list[str], tmp_path: Path
) -> None:
    command = fill_wake_command(template, assignment(NASTY))

    assert shell_words(command, tmp_path) == expected
    assert not (tmp_path / "pwned").exists()


def test_task_json_arrives_whole(tmp_path: Path) -> None:
    task = assignment(NASTY)

    [word] = shell_words(fill_wake_command('"${TASK_JSON}"', task), tmp_path)

    assert json.loads(word) == dict(task.fields)


class Watch:
    """A ResultsDirRunner, and how often it said the agent had started."""

    def __init__(self, tmp_path: Path, wake_command: str, task_timeout: float | None = 10) -> None:
        self.results_dir = tmp_path / "results"
        self.started = 0
        self.runner = ResultsDirRunner(wake_command, self.results_dir, tmp_path, task_timeout)

    def run(self, task: Assignment | None = None, resume: bool = False) -> Outcome:
        hooks = RunHooks(self._started, lambda pgid: None)
        return asyncio.run(self.runner.run(task or assignment(), resume=resume, hooks=hooks))

    def _started(self) -> None:
        self.started += 1


def write_result(document: object) -> str:
    """A wake command that plays the agent: .started, then the result, atomically."""
    payload = json.dumps(json.dumps(document))
    return (
        'touch "$AGENTCOM_RESULTS_DIR/${TASK_ID}.started"; '
        f'printf %s {payload} > "$AGENTCOM_RESULTS_DIR/${{TASK_ID}}.tmp"; '
        'mv "$AGENTCOM_RESULTS_DIR/${TASK_ID}.tmp" "$AGENTCOM_RESULTS_DIR/${TASK_ID}.json"'
    )


def test_success_file_completes_and_the_signal_files_are_removed(tmp_path: Path) -> None:
    watch = Watch(tmp_path, write_result({"status": "success", "tokens_used": 9}))

    outcome = watch.run()

    assert outcome == Completed({"status": "success", "tokens_used": 9}, 9)
    assert watch.started == 1
    assert [path.name for path in watch.results_dir.iterdir()] == ["task-0000000000000001.wake.log"]


def test_other_status_fails_with_its_reason(tmp_path: Path) -> None:
    watch = Watch(tmp_path, write_result({"status": "error", "reason": "no GPU"}))

    assert watch.run() == Failed("no GPU")


def test_a_failing_wake_command_fails_the_task_with_its_output(tmp_path: Path) -> None:
    watch = Watch(tmp_path, "echo cannot reach agent >&2; exit 4")

    assert watch.run() == Failed("wake command exited with code 4; stderr: cannot reach agent")


def test_no_result_in_time_kills_the_wake_command_and_fails(tmp_path: Path) -> None:
    watch = Watch(tmp_path, "echo $$ > wake.pid; sleep 30", task_timeout=0.5)

    outcome = watch.run()

    assert isinstance(outcome, Failed)
    assert outcome.error.startswith("timed out after 0.5s (--task-timeout)")
    assert not group_is_alive(int((tmp_path / "wake.pid").read_text()))


def test_a_broken_result_file_fails_once_it_stops_changing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sidecar, "RESULT_SETTLE_SECONDS", 0.3)
    watch = Watch(tmp_path, 'printf "{not json" > "$AGENTCOM_RESULTS_DIR/${TASK_ID}.json"')

    outcome = watch.run()

    assert isinstance(outcome, Failed)
    assert "is not valid JSON" in outcome.error


def test_on_resume_a_result_written_meanwhile_is_taken_without_waking(tmp_path: Path) -> None:
    watch = Watch(tmp_path, "touch woken")
    watch.results_dir.mkdir()
    (watch.results_dir / "task-0000000000000001.json").write_text('{"status": "success", "n": 1}')

    assert watch.run(resume=True) == Completed({"status": "success", "n": 1})
    assert not (tmp_path / "woken").exists()


def test_a_fresh_assignment_ignores_a_stale_result(tmp_path: Path) -> None:
    watch = Watch(tmp_path, write_result({"status": "success", "fresh": True}))
    watch.results_dir.mkdir()
    (watch.results_dir / "task-0000000000000001.json").write_text(
        '{"status": "failed", "error": "old"}'
    )

    assert watch.run() == Completed({"status": "success", "fresh": True})


def test_a_signal_file_planted_as_a_symlink_out_of_the_results_dir_is_refused(
    tmp_path: Path,
) -> None:
    watch = Watch(tmp_path, "touch woken", task_timeout=2)
    watch.results_dir.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (watch.results_dir / "task-0000000000000001.started").symlink_to(victim)

    outcome = watch.run()

    assert isinstance(outcome, Failed)
    assert outcome.error.startswith("refused to use the results dir")
    assert victim.read_text() == "precious"
    assert not (tmp_path / "woken").exists()


@pytest.mark.usefixtures("permissive_umask")
def test_the_results_dir_and_the_wake_log_the_worker_creates_are_owner_only(
    tmp_path: Path,
) -> None:
    watch = Watch(tmp_path, "echo waking; " + write_result({"status": "success"}))

    assert isinstance(watch.run(), Completed)

    [wake_log] = watch.results_dir.iterdir()
    assert wake_log.read_text() == "waking\n"
    assert stat.S_IMODE(watch.results_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(wake_log.stat().st_mode) == 0o600
