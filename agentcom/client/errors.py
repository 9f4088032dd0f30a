"""What the client raises: one exception per kind of answer the hub gives.

Every error from the hub is a ``HubError`` carrying the HTTP status and the
hub's own ``error`` text (``"task_not_found"``, ``"invalid_field: priority must
be one of …"``), so a caller can catch the kind it cares about and still show
the hub's words. ``HubUnavailable`` covers both a hub that cannot be reached
and one that answers that it cannot serve (503 ``hub_busy``, 507
``storage_full``, 500): in every case, trying again later is the remedy.

Waiting on a task ends in ``TaskFailed`` (it went to the dead letter),
``TaskCancelled``, or ``TaskNotDone`` (a ``TimeoutError``: not finished in time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentcom.client.models import Task


class AgentcomError(Exception):
    """Base of everything the client raises on purpose."""


class HubError(AgentcomError):
    """The hub answered with an error status."""

    def __init__(self, http_status: int, error: str, body: Any = None) -> None:
        super().__init__(error)
        self.http_status = http_status
        self.error = error
        self.body = body


class BadRequest(HubError):
    """400, 413 or 422: the hub refused what was sent; ``error`` says why."""


class Unauthorized(HubError):
    """401: no token, or one the hub does not know (wrong or revoked)."""


class Forbidden(HubError):
    """403: the token's role may not do this (a viewer writing, another agent's mailbox)."""


class NotFound(HubError):
    """404: no such task, agent, channel, message or route (``error`` says which)."""


class Conflict(HubError):
    """409: the hub's state forbids it (``channel_exists``, ``too_many_subscriptions``)."""


class TaskFinished(Conflict):
    """409 ``task_finished``: a cancel came after the task ended; ``task_status`` says how."""

    def __init__(self, http_status: int, error: str, body: Any = None) -> None:
        super().__init__(http_status, error, body)
        self.task_status: str | None = body.get("status") if isinstance(body, dict) else None


class HubUnavailable(HubError):
    """The hub could not be reached, hung up, or answered 5xx (busy, storage full).

    ``http_status`` is 0 when no answer came at all.
    """


class TaskFailed(AgentcomError):
    """The waited-on task went to the dead letter; ``last_error`` is its agent's report."""

    def __init__(self, task: Task) -> None:
        super().__init__(f"task {task.id} failed: {task.last_error}")
        self.task = task
        self.last_error = task.last_error


class TaskCancelled(AgentcomError):
    """The waited-on task was cancelled before it completed."""

    def __init__(self, task: Task) -> None:
        super().__init__(f"task {task.id} was cancelled")
        self.task = task


class TaskNotDone(AgentcomError, TimeoutError):
    """The task had not finished when the wait ran out; ``task`` is its last state."""

    def __init__(self, task: Task, timeout: float) -> None:
        super().__init__(f"task {task.id} is still {task.status} after {timeout:g}s")
        self.task = task


def error_for(http_status: int, body: Any) -> HubError:
    """The exception for an error answer (``body`` is its decoded JSON, or its text)."""
    error = body.get("error") if isinstance(body, dict) else None
    text = str(error) if error else (str(body)[:200] or f"HTTP {http_status}")
    kind: type[HubError]
    if http_status == 401:
        kind = Unauthorized
    elif http_status == 403:
        kind = Forbidden
    elif http_status == 404:
        kind = NotFound
    elif http_status == 409:
        kind = TaskFinished if error == "task_finished" else Conflict
    elif http_status >= 500:
        kind = HubUnavailable
    else:
        kind = BadRequest
    return kind(http_status, text, body)
