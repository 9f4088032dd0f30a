"""Running one task: the interface both modes share, and the `--exec` mode.

A runner turns an assignment into an outcome and nothing else: it neither
talks to the hub nor touches the state file. It enforces the task's time
limit (the shorter of `--task-timeout` and the assignment's `complete_by`) by
ending the command's whole process group and returning a failure; when the
worker cancels it (the hub cancelled or reassigned the task, or the drain
timeout ran out) it ends the group the same way before the cancellation goes
on; cancelled while it ends what the command left behind after exiting, it
kills that at once (see `process.end_process_group`).

`ExecRunner` runs `--exec` once per task through the shell, with the task in
environment variables (and only the allowed part of the worker's own, see
`environment`), and judges it by exit status and output.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from agentcom.worker.assignment import Assignment
from agentcom.worker.environment import command_environment
from agentcom.worker.outcome import Failed, Outcome, failed_with_stderr, outcome_of_exit
from agentcom.worker.process import KILL_GRACE_SECONDS, OutputTail, end_process_group

log = structlog.get_logger(__name__)

# Enough stdout to find a large JSON result on the last line; stderr only feeds a tail.
STDOUT_KEEP_BYTES = 1024 * 1024
STDERR_KEEP_BYTES = 64 * 1024
# After the command exits, how long its output may take to drain; a process
# that left the group can hold the pipes open forever.
OUTPUT_DRAIN_SECONDS = 2.0
# The shell waits for one line on stdin before it becomes the command (exec,
# so $$ and the process group stay the same). The worker sends it once the
# group is recorded: a worker killed at any moment leaves no group it does not
# know about, and one killed before the line leaves a shell that just exits.
GATED_SHELL = 'read -r _ && exec /bin/sh -c "$0"'


@dataclass(frozen=True, slots=True)
class RunHooks:
    """What a runner tells the worker while it runs."""

    agent_started: Callable[[], None]  # the agent has begun: the hub hears progress at once
    # A process group to end if the worker dies; to be on disk when this returns,
    # because the command starts right after.
    command_spawned: Callable[[int], None]


class Runner(Protocol):
    async def run(self, assignment: Assignment, *, resume: bool, hooks: RunHooks) -> Outcome:
        """Run the task to an outcome.

        resume: the task was held by an earlier run of this worker that died;
        work the agent finished meanwhile may count.
        """
        ...


@dataclass(frozen=True, slots=True)
class TimeLimit:
    seconds: float
    source: str  # what set it, for the error message

    @classmethod
    def for_task(
        cls, assignment: Assignment, task_timeout: float | None, now_ms: float | None = None
    ) -> TimeLimit | None:
        limits = []
        if task_timeout is not None:
            limits.append(cls(task_timeout, "--task-timeout"))
        if assignment.complete_by_ms is not None:
            now_ms = time.time() * 1000 if now_ms is None else now_ms
            limits.append(cls((assignment.complete_by_ms - now_ms) / 1000, "complete_by"))
        return min(limits, key=lambda limit: limit.seconds, default=None)

    def expired_before_start(self) -> Failed:
        return Failed(f"{self.source} had passed before the task started")

    def exceeded(self, stderr: str) -> Failed:
        return failed_with_stderr(
            f"timed out after {self.seconds:.1f}s ({self.source}); process group killed", stderr
        )


class ExecRunner:
    def __init__(
        self,
        command: str,
        workdir: Path,
        task_timeout: float | None,
        pass_env: tuple[str, ...] = (),
        kill_grace: float = KILL_GRACE_SECONDS,
    ) -> None:
        self._command = command
        self._workdir = workdir
        self._task_timeout = task_timeout
        self._pass_env = pass_env
        self._kill_grace = kill_grace

    async def run(self, assignment: Assignment, *, resume: bool, hooks: RunHooks) -> Outcome:
        # A command leaves nothing to resume from, so `resume` changes nothing here.
        task_log = log.bind(task_id=assignment.task_id)
        limit = TimeLimit.for_task(assignment, self._task_timeout)
        if limit is not None and limit.seconds <= 0:
            return limit.expired_before_start()
        try:
            process = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                GATED_SHELL,
                self._command,
                cwd=self._workdir,
                env=command_environment(self._pass_env, assignment.environment()),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as error:
            return Failed(f"command could not start: {error}")
        task_log.info(
            "command_started",
            pid=process.pid,
            time_limit_s=limit.seconds if limit is not None else None,
        )
        assert process.stdin and process.stdout and process.stderr
        stdout, stderr = OutputTail(STDOUT_KEEP_BYTES), OutputTail(STDERR_KEEP_BYTES)
        readers = asyncio.gather(stdout.collect(process.stdout), stderr.collect(process.stderr))
        try:
            hooks.command_spawned(process.pid)
            with contextlib.suppress(ConnectionError):  # it died already: its exit says why
                process.stdin.write(b"\n")
                await process.stdin.drain()
            process.stdin.close()  # the command reads end-of-file, as from /dev/null
            hooks.agent_started()
            try:
                returncode: int | None = await asyncio.wait_for(
                    process.wait(), limit.seconds if limit is not None else None
                )
            except TimeoutError:
                task_log.warning("command_timed_out", pid=process.pid)
                returncode = None
        except asyncio.CancelledError:
            task_log.info("command_cancelled", pid=process.pid)
            readers.cancel()
            await end_process_group(process.pid, self._kill_grace, task_log)
            await process.wait()
            # Collected, or asyncio prints the readers' CancelledError as unretrieved.
            await asyncio.gather(readers, return_exceptions=True)
            raise
        # Also after a normal exit: background jobs the command left behind go too.
        # Cancelled meanwhile, end_process_group kills them at once before it gives way.
        await end_process_group(process.pid, self._kill_grace, task_log)
        await process.wait()
        try:
            await asyncio.wait_for(readers, OUTPUT_DRAIN_SECONDS)
        except TimeoutError:
            task_log.warning("command_output_left_open", pid=process.pid)
        task_log.info("command_exited", pid=process.pid, returncode=process.returncode)

        if returncode is None:
            assert limit is not None
            return limit.exceeded(stderr.text())
        return outcome_of_exit(returncode, stdout.text(), stderr.text())
