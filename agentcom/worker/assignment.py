"""A task as the hub handed it to this worker, and how a command sees it.

Built from a `task_assign` frame (or from the state file, which stores the same
fields). The generation is the one thing that changes while the worker holds
a task: `task_continue` after a reconnect may carry a new one, and results must
be reported under it. Everything else the hub sent is kept as it came, so
`AGENTCOM_TASK_JSON` carries fields this worker does not know about.

The task id names files (`RESULTS_DIR/TASK_ID.json`) and is pasted into the
wake command, so only the hub's own shape is accepted: `task-` and 16
lowercase hex digits. A hub that sends anything else (`../victim`, a space, a
newline) is broken or hostile, and the assignment is refused before anything
is written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# What the hub's TaskQueue creates: "task-" and 8 random bytes in hex.
TASK_ID = re.compile(r"task-[0-9a-f]{16}")


class MalformedAssignment(ValueError):
    """A task_assign frame without a usable task_id or generation."""

    reason = "malformed_assignment"  # for task_rejected


class InvalidTaskId(MalformedAssignment):
    """A task id that is not of the hub's shape, and must name no file."""

    reason = "invalid_task_id"


@dataclass(frozen=True, slots=True)
class Assignment:
    task_id: str
    generation: int
    description: str
    complete_by_ms: int | None
    fields: Mapping[str, Any]  # the task_assign frame without "type", current generation

    @classmethod
    def from_fields(cls, frame: Mapping[str, Any]) -> Assignment:
        task_id, generation = frame.get("task_id"), frame.get("generation")
        if not isinstance(task_id, str) or not TASK_ID.fullmatch(task_id):
            # Shortened: the id came from the hub and may be of any size.
            raise InvalidTaskId(f"task_id must match {TASK_ID.pattern}, got {task_id!r:.80}")
        if isinstance(generation, bool) or not isinstance(generation, int):
            raise MalformedAssignment(f"generation must be an integer, got {generation!r}")
        description = frame.get("description")
        complete_by = frame.get("complete_by")
        if isinstance(complete_by, bool) or not isinstance(complete_by, int | float):
            complete_by = None
        return cls(
            task_id=task_id,
            generation=generation,
            description=description if isinstance(description, str) else "",
            complete_by_ms=None if complete_by is None else int(complete_by),
            fields={key: value for key, value in frame.items() if key != "type"},
        )

    def with_generation(self, generation: int) -> Assignment:
        return Assignment.from_fields({**self.fields, "generation": generation})

    def environment(self) -> dict[str, str]:
        """The variables a command reads its task from."""
        return {
            "AGENTCOM_TASK_ID": self.task_id,
            "AGENTCOM_TASK_DESCRIPTION": self.description,
            "AGENTCOM_TASK_JSON": self.to_json(),
            "AGENTCOM_TASK_GENERATION": str(self.generation),
        }

    def to_json(self) -> str:
        return json.dumps(self.fields, separators=(",", ":"), ensure_ascii=False)
