"""The `--wake-command`/`--results-dir` mode: the convention of the original AgentCom sidecar.

For agents that live longer than one task. The wake command only tells the
agent there is work; the agent then writes `RESULTS_DIR/TASK_ID.started` when
it begins and `RESULTS_DIR/TASK_ID.json` when it is done. The worker polls the
directory (no inotify dependency, and a short interval is cheap for two files).

The original pasted `${TASK_ID}`, `${TASK_DESCRIPTION}` and `${TASK_JSON}` into
the command's text with only `"` escaped, and any quoting done by pasting fails
in some context (`sh -c "..."`, backticks, `$(...)`, a heredoc), where a
description such as `x; touch /tmp/pwned` runs. So the task's text is never
pasted: the wake command finds it in its environment, as `$TASK_ID`,
`$TASK_DESCRIPTION` and `$TASK_JSON`, which the shell expands without running
it. Only `${TASK_ID}` is still filled in, safe anywhere because task ids have
the hub's shape (see `assignment`); a command that still holds
`${TASK_DESCRIPTION}` or `${TASK_JSON}` is refused when the settings are read
(`check_wake_command`), since it was written to have them pasted.

The wake command may leave the agent running, so a finished task does not end
its process group; a timeout or a cancellation does (the worker's, or the
hub's `task_cancelled`: the worker then stops watching for the result and
ends the group, with whatever agent it started, if it is still running). Nor is the group
recorded for a restarted worker to end: an agent that outlived a crashed
worker may still write its result, and the restarted worker takes it. The
wake command's output goes to `RESULTS_DIR/TASK_ID.wake.log`, a file rather
than a pipe that nobody would read once the task is over; it is 0600, and the
results dir 0700 if the worker creates it (see `files`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from agentcom.worker.assignment import TASK_ID, Assignment, InvalidTaskId
from agentcom.worker.environment import command_environment
from agentcom.worker.files import PathOutsideDirectory, inside, open_private, private_directory
from agentcom.worker.outcome import (
    TAIL_CHARS,
    Failed,
    Outcome,
    describe_exit,
    failed_with_stderr,
    outcome_of_result_document,
)
from agentcom.worker.process import KILL_GRACE_SECONDS, end_process_group
from agentcom.worker.runner import RunHooks, TimeLimit

log = structlog.get_logger(__name__)

POLL_SECONDS = 0.2
# A result file still unparseable after staying unchanged this long is not being
# written any more: it is broken, and the task fails on it.
RESULT_SETTLE_SECONDS = 2.0

# Placeholders of the original convention that no longer exist: pasting text
# into a shell command is safe only where the paster understands every quoting
# context (sh -c "...", backticks, $(...), heredocs), and no paster does.
SPLICED_PLACEHOLDER = re.compile(r"\$\{(TASK_DESCRIPTION|TASK_JSON)\}")
TASK_ID_PLACEHOLDER = "${TASK_ID}"


def check_wake_command(template: str) -> str:
    """The template, or ValueError if it still expects the task's text pasted into it."""
    placeholder = SPLICED_PLACEHOLDER.search(template)
    if placeholder:
        name = placeholder[1]
        raise ValueError(
            f"{placeholder[0]} is no longer pasted into the wake command, where quoting "
            f"cannot be made safe; the value is in the command's environment instead: write "
            f'"${name}" (in double quotes; in a nested sh -c, inside its single-quoted '
            f"script). Only {TASK_ID_PLACEHOLDER} is still filled in"
        )
    return template


def fill_wake_command(template: str, assignment: Assignment) -> str:
    """The template with ${TASK_ID} filled in: safe anywhere, for its shape is checked."""
    if not TASK_ID.fullmatch(assignment.task_id):
        raise InvalidTaskId(f"task_id {assignment.task_id!r:.80} cannot go into a command")
    return check_wake_command(template).replace(TASK_ID_PLACEHOLDER, assignment.task_id)


def wake_environment(assignment: Assignment, results_dir: Path) -> dict[str, str]:
    """The task as the wake command reads it, besides the AGENTCOM_TASK_* that --exec gets."""
    return {
        **assignment.environment(),
        "TASK_ID": assignment.task_id,
        "TASK_DESCRIPTION": assignment.description,
        "TASK_JSON": assignment.to_json(),
        "AGENTCOM_RESULTS_DIR": str(results_dir.resolve()),
    }


@dataclass(frozen=True, slots=True)
class ResultFiles:
    """The files of one task in the results directory."""

    started: Path
    result: Path
    wake_log: Path

    @classmethod
    def of(cls, results_dir: Path, task_id: str) -> ResultFiles:
        """Raises PathOutsideDirectory for a task id that would lead out of results_dir."""
        return cls(
            inside(results_dir, f"{task_id}.started"),
            inside(results_dir, f"{task_id}.json"),
            inside(results_dir, f"{task_id}.wake.log"),
        )

    def remove_signals(self) -> None:
        self.started.unlink(missing_ok=True)
        self.result.unlink(missing_ok=True)

    def wake_output_tail(self) -> str:
        try:
            with open(self.wake_log, "rb") as file:
                file.seek(0, 2)
                file.seek(max(0, file.tell() - 4 * TAIL_CHARS))
                return file.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""


class ResultsDirRunner:
    def __init__(
        self,
        wake_command: str,
        results_dir: Path,
        workdir: Path,
        task_timeout: float | None,
        pass_env: tuple[str, ...] = (),
        kill_grace: float = KILL_GRACE_SECONDS,
    ) -> None:
        self._wake_command = check_wake_command(wake_command)
        self._results_dir = results_dir
        self._workdir = workdir
        self._task_timeout = task_timeout
        self._pass_env = pass_env
        self._kill_grace = kill_grace

    async def run(self, assignment: Assignment, *, resume: bool, hooks: RunHooks) -> Outcome:
        task_log = log.bind(task_id=assignment.task_id)
        try:
            files = ResultFiles.of(self._results_dir, assignment.task_id)
        except PathOutsideDirectory as error:  # a symlink planted in the results dir
            return Failed(f"refused to use the results dir: {error}")
        private_directory(self._results_dir)
        if not resume:
            files.remove_signals()  # left over from an earlier attempt at this task
        limit = TimeLimit.for_task(assignment, self._task_timeout)
        if limit is not None and limit.seconds <= 0:
            return limit.expired_before_start()

        wake: subprocess.Popen[bytes] | None = None
        if files.result.exists():
            task_log.info("result_found_on_resume", path=str(files.result))
        else:
            try:
                wake = self._wake(assignment, files)
            except OSError as error:
                return Failed(f"wake command could not start: {error}")
            task_log.info("wake_command_started", pid=wake.pid)

        ended_early = True  # timed out or cancelled: the agent's work is no longer wanted
        try:
            outcome = await asyncio.wait_for(
                self._watch(files, wake, hooks.agent_started, task_log),
                limit.seconds if limit is not None else None,
            )
            ended_early = False
            return outcome
        except TimeoutError:
            assert limit is not None
            task_log.warning("task_timed_out", time_limit_s=limit.seconds)
            return limit.exceeded(files.wake_output_tail())
        except asyncio.CancelledError:
            task_log.info("result_wait_cancelled", wake_pid=wake.pid if wake else None)
            raise
        finally:
            if ended_early and wake is not None:
                await end_process_group(wake.pid, self._kill_grace, task_log)
                wake.poll()
            files.remove_signals()

    def _wake(self, assignment: Assignment, files: ResultFiles) -> subprocess.Popen[bytes]:
        # Popen rather than an asyncio subprocess: the agent may outlive the task,
        # and an asyncio transport kills its process when it is garbage collected.
        with open(open_private(files.wake_log, os.O_WRONLY | os.O_APPEND), "wb") as output:
            return subprocess.Popen(
                fill_wake_command(self._wake_command, assignment),
                shell=True,
                cwd=self._workdir,
                env=command_environment(
                    self._pass_env, wake_environment(assignment, self._results_dir)
                ),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def _watch(
        self,
        files: ResultFiles,
        wake: subprocess.Popen[bytes] | None,
        on_started: Callable[[], None],
        task_log: structlog.typing.FilteringBoundLogger,
    ) -> Outcome:
        started_seen = False
        unparseable: tuple[tuple[int, int], float] | None = None  # file signature, first seen
        wake_exit_logged = False
        while True:
            if not started_seen and files.started.exists():
                started_seen = True
                task_log.info("agent_started")
                on_started()

            try:
                content = files.result.read_bytes()
                status = files.result.stat()
            except FileNotFoundError:
                pass
            else:
                try:
                    return outcome_of_result_document(json.loads(content))
                except ValueError as error:
                    signature = (status.st_size, status.st_mtime_ns)
                    if unparseable is None or unparseable[0] != signature:
                        unparseable = (signature, time.monotonic())
                    elif time.monotonic() - unparseable[1] >= RESULT_SETTLE_SECONDS:
                        return Failed(f"result file {files.result} is not valid JSON: {error}")

            returncode = wake.poll() if wake is not None else None
            if returncode is not None and not wake_exit_logged:
                wake_exit_logged = True
                task_log.info("wake_command_exited", returncode=returncode)
                if returncode != 0:
                    return failed_with_stderr(
                        f"wake command {describe_exit(returncode)}", files.wake_output_tail()
                    )
            await asyncio.sleep(POLL_SECONDS)
