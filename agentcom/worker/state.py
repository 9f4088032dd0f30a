"""The task this worker holds, on disk, so that a crash of the worker does not lose it.

The record is written before `task_accepted` is sent, so the hub never counts on
a task the worker could forget; rewritten when the generation changes or the
outcome is known, so a finished task is reported even if the worker dies before
it could say so; and removed once the hub has acknowledged the outcome or taken
the task back. Each write is atomic (temporary file, fsync, rename, fsync of
the directory): after a crash the file holds the old record or the new one,
never a torn mix. The directory, if the worker creates it, is 0700 and the
record and the lock are 0600 (see `files`): the record holds the task.

It also owns the lock that keeps a second worker for the same agent id off the
same record: two processes recovering one task would run it twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from agentcom.worker.assignment import Assignment
from agentcom.worker.files import open_private, private_directory
from agentcom.worker.outcome import Outcome, from_record, to_record
from agentcom.worker.process import CommandGroup

log = structlog.get_logger(__name__)

RECORD_VERSION = 1


class StateDirInUse(Exception):
    """Another live worker holds the lock on this agent's record."""


@dataclass(frozen=True, slots=True)
class HeldTask:
    assignment: Assignment
    outcome: Outcome | None = None  # known once the run ended, until the hub acknowledges it
    command_group: CommandGroup | None = None  # while a command runs


class StateFile:
    def __init__(self, state_dir: Path, agent_id: str) -> None:
        # One record per agent id, so workers for different agents may share a directory.
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", agent_id)
        self.directory = state_dir
        self.path = state_dir / f"{stem}.task.json"
        self._lock_path = state_dir / f"{stem}.lock"
        self._lock_fd: int | None = None

    def lock(self) -> None:
        """Create the directory if needed and take the lock; raises StateDirInUse."""
        private_directory(self.directory)
        fd = open_private(self._lock_path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateDirInUse(f"another worker is using {self.path}") from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def load(self) -> HeldTask | None:
        """The record left by an earlier run, or None.

        An unreadable record cannot be recovered, and the hub takes such a task
        back on its own timers, so it is moved aside (kept for a human) rather
        than stopping the worker.
        """
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            group = document.get("command_group")
            return HeldTask(
                Assignment.from_fields(document["task"]),
                from_record(document["outcome"]) if document.get("outcome") else None,
                CommandGroup(int(group["pgid"]), group["boot_id"]) if group else None,
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as error:  # MalformedAssignment too
            moved_to = self.path.with_name(f"{self.path.name}.unreadable-{int(time.time())}")
            os.replace(self.path, moved_to)
            log.error(
                "state_file_unreadable",
                path=str(self.path),
                moved_to=str(moved_to),
                error=str(error),
            )
            return None

    def save(self, held: HeldTask) -> None:
        document: dict[str, Any] = {
            "version": RECORD_VERSION,
            "task": dict(held.assignment.fields),
            "outcome": to_record(held.outcome) if held.outcome is not None else None,
            "command_group": asdict(held.command_group) if held.command_group else None,
        }
        temporary = self.path.with_name(f"{self.path.name}.tmp")
        with open(open_private(temporary, os.O_WRONLY | os.O_TRUNC), "w", encoding="utf-8") as file:
            json.dump(document, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        self._sync_directory()

    def clear(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        self._sync_directory()

    def _sync_directory(self) -> None:
        """Make the rename or unlink itself durable, not just the file's bytes."""
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
