"""Sidecar mode: the task reaches the wake command unpasted, and the results directory."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agentcom.worker import sidecar
from agentcom.worker.__main__ import EXIT_BAD_SETTINGS, build_runner
from agentcom.worker.assignment import Assignment, InvalidTaskId
from agentcom.worker.config import ConfigError, load_config
from agentcom.worker.outcome import Completed, Failed, Outcome
from agentcom.worker.process import group_is_alive
from agentcom.worker.runner import RunHooks
from agentcom.worker.sidecar import ResultsDirRunner, fill_wake_command
from tests.worker.harness import REPO_ROOT

TASK = "task-0000000000000001"
NASTY = """it's "so" $(touch pwned) `touch pwned` $HOME \\ \\" ' ; rm -rf nothing\n2nd line"""
# Breaks out of each former template form: a bare word, "...", '...', sh -c "...",
# backticks, $(...) and a heredoc ending at EOF.
INJECTION = (
    "x; touch pwned; $(touch pwned) `touch pwned` \" ; touch pwned ; \" ' ; touch pwned ; '"
    "\nEOF\ntouch pwned\n"
)
FORMER_TEMPLATES = {
    "bare": "echo ${TASK_DESCRIPTION}",
    "double quotes": 'echo "task: ${TASK_DESCRIPTION}"',
    "single quotes": "echo 'task: ${TASK_DESCRIPTION}'",
    "sh -c": 'sh -c "echo ${TASK_DESCRIPTION}"',
    "backticks": 'echo `echo "${TASK_DESCRIPTION}"`',
    "command substitution": "echo \"$(echo '${TASK_DESCRIPTION}')\"",
    "heredoc": "cat <<EOF\n${TASK_DESCRIPTION}\nEOF",
    "json in sh -c": 'sh -c "echo ${TASK_JSON}"',
}
# The same forms as documented now: the shell expands the variable, never runs it.
SAFE_TEMPLATES = {
    "bare": "printf %s $TASK_DESCRIPTION",
    "double quotes": 'printf %s "$TASK_DESCRIPTION"',
    "sh -c": "sh -c 'printf %s \"$TASK_DESCRIPTION\"'",
    "backticks": 'printf %s "`printf %s "$TASK_DESCRIPTION"`"',
    "command substitution": 'printf %s "$(printf %s "$TASK_DESCRIPTION")"',
    "heredoc": "cat <<EOF\n$TASK_DESCRIPTION\nEOF",
}

DONE = 'echo \'{"status": "success"}\' > "$AGENTCOM_RESULTS_DIR/$AGENTCOM_TASK_ID.json"'


def assignment(description: str = "do it", task_id: str = TASK) -> Assignment:
    return Assignment.from_fields(
        {"task_id": task_id, "description": description, "metadata": {}, "generation": 1}
    )


def wake_as_configured(template: str, description: str, tmp_path: Path) -> Outcome | ConfigError:
    """Read the settings as `python -m agentcom.worker` does, then run one task with them."""
    argv = [
        *("--hub", "ws://127.0.0.1:1/ws", "--agent-id", "alice", "--token", "t"),
        *("--workdir", str(tmp_path), "--results-dir", str(tmp_path / "results")),
        *("--wake-command", f"{{ {template}\n}} > wake.out; {DONE}", "--task-timeout", "5"),
    ]
    try:
        config = load_config(argv, {})
    except ConfigError as refused:
        return refused
    hooks = RunHooks(lambda: None, lambda pgid: None)
    return asyncio.run(build_runner(config).run(assignment(description), resume=False, hooks=hooks))


@pytest.mark.parametrize("description", [INJECTION, "$(touch pwned)"], ids=["quotes", "plain"])
@pytest.mark.parametrize("template", FORMER_TEMPLATES.values(), ids=FORMER_TEMPLATES.keys())
def test_a_description_pasted_by_a_former_template_runs_nothing(
    template: str, description: str, tmp_path: Path
) -> None:
    outcome = wake_as_configured(template, description, tmp_path)

    assert not (tmp_path / "pwned").exists()
    assert isinstance(outcome, ConfigError)
    assert "is no longer pasted into the wake command" in str(outcome)


@pytest.mark.parametrize("template", SAFE_TEMPLATES.values(), ids=SAFE_TEMPLATES.keys())
def test_a_description_read_from_the_environment_runs_nothing(
    template: str, tmp_path: Path
) -> None:
    outcome = wake_as_configured(template, INJECTION, tmp_path)

    assert not (tmp_path / "pwned").exists()
    assert outcome == Completed({"status": "success"})
    assert INJECTION.split()[0] in (tmp_path / "wake.out").read_text()


def test_a_template_that_pastes_the_description_is_refused_at_start(tmp_path: Path) -> None:
    argv = [
        *("--hub", "ws://127.0.0.1:1/ws", "--agent-id", "alice", "--token", "t"),
        *("--state-dir", str(tmp_path / "state"), "--results-dir", str(tmp_path / "results")),
        *("--wake-command", "my-agent wake ${TASK_ID} '${TASK_DESCRIPTION}'"),
    ]

    # A subprocess: a worker that started would run until the timeout.
    done = subprocess.run(
        [sys.executable, "-m", "agentcom.worker", *argv],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=20,
    )

    assert done.returncode == EXIT_BAD_SETTINGS, done.stderr
    assert "--wake-command: ${TASK_DESCRIPTION} is no longer pasted" in done.stderr
    assert '"$TASK_DESCRIPTION"' in done.stderr
    assert not (tmp_path / "state").exists()


def test_the_wake_command_reads_the_task_intact_from_its_environment(tmp_path: Path) -> None:
    task = assignment(NASTY)
    watch = Watch(
        tmp_path,
        'printf %s "$TASK_DESCRIPTION" > description; printf %s "$TASK_JSON" > task.json; '
        'printf %s "$TASK_ID" > id; printf %s ${TASK_ID} > filled-id; '
        + write_result({"status": "success"}),
    )

    assert watch.run(task) == Completed({"status": "success"})

    assert (tmp_path / "description").read_text() == NASTY
    assert json.loads((tmp_path / "task.json").read_text()) == dict(task.fields)
    assert (tmp_path / "id").read_text() == (tmp_path / "filled-id").read_text() == TASK
    assert not (tmp_path / "pwned").exists()


def test_only_task_ids_of_the_hubs_shape_are_filled_in() -> None:
    forged = Assignment("../x; touch pwned", 1, "", None, {})

    assert fill_wake_command("wake ${TASK_ID}", assignment()) == f"wake {TASK}"
    with pytest.raises(InvalidTaskId):
        fill_wake_command("wake ${TASK_ID}", forged)


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
    assert [path.name for path in watch.results_dir.iterdir()] == [f"{TASK}.wake.log"]


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
    (watch.results_dir / f"{TASK}.json").write_text('{"status": "success", "n": 1}')

    assert watch.run(resume=True) == Completed({"status": "success", "n": 1})
    assert not (tmp_path / "woken").exists()


def test_a_fresh_assignment_ignores_a_stale_result(tmp_path: Path) -> None:
    watch = Watch(tmp_path, write_result({"status": "success", "fresh": True}))
    watch.results_dir.mkdir()
    (watch.results_dir / f"{TASK}.json").write_text('{"status": "failed", "error": "old"}')

    assert watch.run() == Completed({"status": "success", "fresh": True})


def test_a_signal_file_planted_as_a_symlink_out_of_the_results_dir_is_refused(
    tmp_path: Path,
) -> None:
    watch = Watch(tmp_path, "touch woken", task_timeout=2)
    watch.results_dir.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (watch.results_dir / f"{TASK}.started").symlink_to(victim)

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
