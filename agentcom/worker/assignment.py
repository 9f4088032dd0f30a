"""A task as the hub handed it to this worker, and how a command sees it.

Built from a `task_assign` frame (or from the state file, which stores the same
fields). The generation is the one thing that changes while the worker holds
a task: `task_continue` after a reconnect may carry a new one, and results must
be reported under it. Everything else the hub sent is kept as it came, so
`AGENTCOM_TASK_JSON` carries fields this worker does not know about.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class MalformedAssignment(ValueError):
    """A task_assign frame without a usable task_id or generation."""


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
        if not isinstance(task_id, str) or not task_id:
            raise MalformedAssignment(f"task_id must be a non-empty string, got {task_id!r}")
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
