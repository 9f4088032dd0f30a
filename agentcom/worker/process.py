"""Process groups: how the worker ends everything a task's command started.

Every command runs in a new session, so it leads a process group of its own
that holds everything it starts (an agent CLI, its tools, a background job).
Ending a task signals that whole group: SIGTERM first, so an agent can save its
work, then SIGKILL for whatever is still alive after a grace period
(`--kill-grace`). Signalling only the shell would leave its children running,
holding pipes and burning tokens for a task the hub has given to someone else
or cancelled. A wait for the grace that is itself interrupted (the task was
cancelled while its group was being ended after the command exited) kills the
group at once: nobody will come back to finish the wait.

A group outlives a worker killed with SIGKILL, so the state file records it
(`CommandGroup`) and the next worker ends it before running the task again.
The record names the boot it was made in: after a reboot the same id belongs
to some other process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

KILL_GRACE_SECONDS = 5.0  # the default of --kill-grace
_POLL_SECONDS = 0.05
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def current_boot_id() -> str | None:
    """Changes at every boot of the machine (Linux); None where unknown."""
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class CommandGroup:
    """A running command's process group, as recorded in the state file."""

    pgid: int
    boot_id: str | None

    @classmethod
    def started_now(cls, pgid: int) -> CommandGroup:
        return cls(pgid, current_boot_id())

    def may_still_run(self) -> bool:
        """Only a group from this boot can be ours; without a boot id, never risk it."""
        return self.boot_id is not None and self.boot_id == current_boot_id()


def group_is_alive(pgid: int) -> bool:
    """True while a process of the group exists and is not a zombie.

    Zombies are ignored because orphans of a killed command are reparented to
    PID 1, which in a container may never reap them; they hold no resources
    that matter. Without /proc (not Linux), any member counts.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        status = _process_status(stat)
        if status is not None and status[1] == pgid and status[0] != "Z":
            return True
    return False


def process_state(pid: int) -> str | None:
    """The process's state letter from /proc ("S", "R", "Z" for a zombie...), None if gone."""
    status = _process_status(Path(f"/proc/{pid}/stat"))
    return status[0] if status is not None else None


def _process_status(stat: Path) -> tuple[str, int] | None:
    """State letter and process group from a /proc/PID/stat file; None if it is gone."""
    try:
        # "pid (comm) state ppid pgrp ..."; comm may hold spaces and parentheses
        state, _ppid, pgrp = stat.read_text().rpartition(")")[2].split()[:3]
    except (OSError, ValueError):
        return None  # the process ended while its file was being read
    return state, int(pgrp)


async def end_process_group(
    pgid: int,
    grace: float = KILL_GRACE_SECONDS,
    group_log: structlog.typing.FilteringBoundLogger = log,
) -> None:
    """SIGTERM the group; SIGKILL what is left after `grace` seconds, or at once if cancelled.

    group_log: the caller's logger, so the signals are logged with its task id.
    """
    if not group_is_alive(pgid):
        return
    group_log.info("process_group_signalled", pgid=pgid, signal="SIGTERM", grace_s=grace)
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    try:
        while group_is_alive(pgid):
            if time.monotonic() >= deadline:
                group_log.warning("process_group_signalled", pgid=pgid, signal="SIGKILL")
                _signal_group(pgid, signal.SIGKILL)
                return
            await asyncio.sleep(_POLL_SECONDS)
    except asyncio.CancelledError:
        # Whoever waited has stopped waiting and will not come back to send the
        # SIGKILL; without it, a process that ignores SIGTERM would outlive its task.
        if group_is_alive(pgid):
            group_log.warning(
                "process_group_signalled", pgid=pgid, signal="SIGKILL", why="wait_cancelled"
            )
            _signal_group(pgid, signal.SIGKILL)
        raise


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group emptied on its own meanwhile
        os.killpg(pgid, signum)


class OutputTail:
    """The last bytes a stream produced, for a result or an error message."""

    def __init__(self, keep_bytes: int) -> None:
        self._keep_bytes = keep_bytes
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        del self._buffer[: -self._keep_bytes]

    async def collect(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.feed(chunk)

    def text(self) -> str:
        return self._buffer.decode("utf-8", errors="replace")
