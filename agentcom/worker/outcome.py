"""What became of a task, and the frame that tells the hub.

A run ends in exactly one outcome: `Completed` (sent as `task_complete`) or
`Failed` (sent as `task_failed`). This module turns what a command left behind
(exit status and output, or a sidecar result file) into one, and round-trips
outcomes through the state file so a finished but unreported task survives a
crash of the worker. It never talks to the hub or runs anything.
"""

from __future__ import annotations

import json
import math
import signal
from dataclasses import dataclass
from typing import Any

TAIL_CHARS = 4000  # of stdout in a result and of stderr in an error; frames stay small


@dataclass(frozen=True, slots=True)
class Completed:
    result: dict[str, Any]
    tokens_used: int | None = None

    def frame(self, task_id: str, generation: int) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "type": "task_complete",
            "task_id": task_id,
            "generation": generation,
            "result": self.result,
        }
        if self.tokens_used is not None:
            frame["tokens_used"] = self.tokens_used
        return frame


@dataclass(frozen=True, slots=True)
class Failed:
    error: str

    def frame(self, task_id: str, generation: int) -> dict[str, Any]:
        return {
            "type": "task_failed",
            "task_id": task_id,
            "generation": generation,
            "error": self.error,
        }


Outcome = Completed | Failed


def tail(text: str, limit: int = TAIL_CHARS) -> str:
    return text[-limit:]


def failed_with_stderr(headline: str, stderr: str) -> Failed:
    """A failure whose error starts with what happened and ends with the stderr tail."""
    stderr_tail = tail(stderr.strip())
    return Failed(f"{headline}; stderr: {stderr_tail}" if stderr_tail else f"{headline}; no stderr")


def describe_exit(returncode: int) -> str:
    """'exited with code 3' or, for a negative asyncio returncode, the signal's name."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"


def outcome_of_exit(returncode: int, stdout: str, stderr: str) -> Outcome:
    """Exit 0 completes; the last stdout line, if a JSON object, is the result."""
    if returncode != 0:
        return failed_with_stderr(f"command {describe_exit(returncode)}", stderr)
    last_line = stdout.rstrip().rpartition("\n")[2].strip()
    reported = _json_object(last_line) if last_line.startswith("{") else None
    if reported is not None:
        return Completed(reported, tokens_used_in(reported))
    return Completed({"exit_code": 0, "stdout": tail(stdout)})


def outcome_of_result_document(document: object) -> Outcome:
    """A sidecar result file: status "success" completes with the whole object."""
    if not isinstance(document, dict):
        return Failed(f"result file holds {type(document).__name__}, not a JSON object")
    if document.get("status") == "success":
        return Completed(document, tokens_used_in(document))
    reason = document.get("error") or document.get("reason")
    if reason is None:
        reason = f"agent reported status {document.get('status')!r}"
    return Failed(reason if isinstance(reason, str) else json.dumps(reason))


def tokens_used_in(result: dict[str, Any]) -> int | None:
    """The result's tokens_used when it is a count; anything else is not reported."""
    value = result.get("tokens_used")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0 or value != int(value):
        return None
    return int(value)


def to_record(outcome: Outcome) -> dict[str, Any]:
    if isinstance(outcome, Completed):
        return {"completed": outcome.result, "tokens_used": outcome.tokens_used}
    return {"failed": outcome.error}


def from_record(record: dict[str, Any]) -> Outcome:
    if "completed" in record:
        return Completed(record["completed"], record.get("tokens_used"))
    return Failed(str(record["failed"]))


def _json_object(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
