"""What each client method asks the hub, and what it makes of the answer.

A ``Call`` is one HTTP request described as data (method, path, query, body)
with the function that turns the hub's JSON answer into a typed result.
``Client`` sends it with httpx's sync client and ``AsyncClient`` with its
async one, so every route is written once here, not once per client. What
takes several requests (``wait``, ``submit_many``) is a ``Steps`` generator:
it yields each Call, is sent its answer, and returns the result, so that its
logic too is written once and each client only drives it.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from agentcom.client.errors import TaskCancelled, TaskFailed, TaskNotDone
from agentcom.client.models import (
    AgentState,
    Cancelled,
    Channel,
    ChannelPost,
    Event,
    Mailbox,
    Model,
    Published,
    Requeued,
    Stats,
    Submitted,
    Task,
    TaskPage,
    TaskRequest,
    Thread,
)

T = TypeVar("T")
M = TypeVar("M", bound=Model)

MAX_WAIT_S = 60.0
"""The longest ``?wait=`` the hub takes; a longer wait is several of them."""


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, str] = field(default_factory=dict)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    read_timeout: float | None = None  # None: the client's own timeout


Steps = Generator[Call[Any], Any, T]
"""Several calls in turn: yields each Call, is sent its answer, returns the result."""


def _segment(value: str) -> str:
    """A path segment: an id with ``/`` or ``?`` in it must not change the route."""
    return urllib.parse.quote(value, safe="")


def _query(**values: object) -> dict[str, str]:
    return {name: str(value) for name, value in values.items() if value is not None}


def _one(kind: type[M]) -> Callable[[Any], M]:
    return kind.from_json


def _listed(kind: type[M], key: str) -> Callable[[Any], list[M]]:
    return lambda body: [kind.from_json(item) for item in body[key]]


def _field(key: str) -> Callable[[Any], Any]:
    return lambda body: body[key]


# --- tasks ------------------------------------------------------------------------------


def submit_request(request: TaskRequest) -> Call[Submitted]:
    headers = (
        {} if request.idempotency_key is None else {"Idempotency-Key": request.idempotency_key}
    )
    return Call("POST", "/api/tasks", _one(Submitted), body=request.body(), headers=headers)


BATCH_TASKS = 1_000
"""The most tasks ``POST /api/tasks/batch`` takes at once."""
BATCH_BYTES = 900 * 1024
"""A batch body stays this far under the hub's 1 MiB body limit."""


def _submissions(requests: Iterable[TaskRequest]) -> Iterator[Call[list[Submitted]]]:
    """The calls that submit ``requests`` in their order: runs of them as batches
    (``POST /api/tasks/batch``, at most BATCH_TASKS and BATCH_BYTES each), and a request
    with an idempotency key alone, since the batch route takes no key."""
    batch: list[dict[str, Any]] = []
    size = 0
    for request in requests:
        body = request.body()
        body_size = len(json.dumps(body)) + 1
        if batch and (
            request.idempotency_key is not None
            or len(batch) == BATCH_TASKS
            or size + body_size > BATCH_BYTES
        ):
            yield _batch(batch)
            batch, size = [], 0
        if request.idempotency_key is not None:
            single = submit_request(request)
            yield Call(
                single.method,
                single.path,
                lambda answer: [Submitted.from_json(answer)],
                body=single.body,
                headers=single.headers,
            )
        else:
            batch.append(body)
            size += body_size
    if batch:
        yield _batch(batch)


def submit_many(tasks: Iterable[TaskRequest | str]) -> Steps[list[Submitted]]:
    """Submit every task, in order, in batches of up to 1,000 (``POST /api/tasks/batch``);
    the answers in the same order. A task is a description or a ``TaskRequest``.

    Each batch is all or nothing; a refused one raises BadRequest, whose
    ``body["index"]`` counts from that batch's first task, and the batches
    before it stay queued. A task with an ``idempotency_key`` is sent alone
    (the batch route takes no key), so a second run skips it.
    """
    requests = (TaskRequest(task) if isinstance(task, str) else task for task in tasks)
    answers: list[Submitted] = []
    for call in _submissions(requests):
        answers += yield call
    return answers


def _batch(bodies: list[dict[str, Any]]) -> Call[list[Submitted]]:
    return Call("POST", "/api/tasks/batch", _listed(Submitted, "tasks"), body={"tasks": bodies})


def submit(
    description: str,
    *,
    priority: str | None = None,
    metadata: dict[str, Any] | None = None,
    needed_capabilities: Iterable[str] | None = None,
    max_retries: int | None = None,
    complete_by: int | None = None,
    idempotency_key: str | None = None,
) -> Call[Submitted]:
    """Queue a task. ``priority``: urgent, high, normal (the hub's default) or low;
    ``complete_by``: a deadline in ms since the epoch; ``idempotency_key``: the
    same key again within 24 hours returns the first task instead of a new one."""
    return submit_request(
        TaskRequest(
            description,
            priority=priority,
            metadata=metadata,
            needed_capabilities=None if needed_capabilities is None else list(needed_capabilities),
            max_retries=max_retries,
            complete_by=complete_by,
            idempotency_key=idempotency_key,
        )
    )


def get(task_id: str) -> Call[Task]:
    """The task now (NotFound if it does not exist or the token may not read it)."""
    return Call("GET", f"/api/tasks/{_segment(task_id)}", _one(Task))


def wait_once(task_id: str, seconds: float) -> Call[Task]:
    """One ``?wait=`` of at most 60 s: the task once it is finished, or after ``seconds``."""
    seconds = min(max(seconds, 0.001), MAX_WAIT_S)
    return Call(
        "GET",
        f"/api/tasks/{_segment(task_id)}",
        _one(Task),
        params={"wait": f"{seconds:.3f}"},
        read_timeout=seconds + 10.0,  # the hub answers after ``seconds``; allow it that long
    )


def wait(task_id: str, timeout: float | None = None) -> Steps[Task]:
    """The task once it completed, by long polls (``?wait=``) of at most 60 s each.

    Raises TaskFailed (dead letter, with ``last_error``), TaskCancelled, or
    TaskNotDone (a TimeoutError) if it has not finished after ``timeout`` s
    (None: wait for ever).
    """
    deadline = None if timeout is None else time.monotonic() + timeout

    def left() -> float:
        return MAX_WAIT_S if deadline is None else deadline - time.monotonic()

    task: Task = yield wait_once(task_id, left())
    while not task.finished:
        if left() <= 0:
            raise TaskNotDone(task, timeout or 0.0)
        task = yield wait_once(task_id, left())
    if task.status == "dead_letter":
        raise TaskFailed(task)
    if task.status == "cancelled":
        raise TaskCancelled(task)
    return task


def list_tasks(
    *,
    status: str | None = None,
    priority: str | None = None,
    assigned_to: str | None = None,
    limit: int | None = None,
    cursor: int | None = None,
) -> Call[TaskPage]:
    """One page of tasks, oldest first (``limit`` up to 1000, the hub's default 100);
    pass the page's ``next_cursor`` as ``cursor`` for the next one."""
    params = _query(
        status=status, priority=priority, assigned_to=assigned_to, limit=limit, cursor=cursor
    )
    return Call("GET", "/api/tasks", _one(TaskPage), params=params)


def stats() -> Call[Stats]:
    """Task counts by status and by lane, and the dead letter's size."""
    return Call("GET", "/api/tasks/stats", _one(Stats))


def dead_letter(*, limit: int | None = None, cursor: int | None = None) -> Call[TaskPage]:
    """One page of the dead letter, paged as ``list``."""
    return Call(
        "GET", "/api/tasks/dead-letter", _one(TaskPage), params=_query(limit=limit, cursor=cursor)
    )


def retry(task_id: str) -> Call[Requeued]:
    """Put a dead-letter task back in its lane (NotFound if it is not in the dead letter)."""
    return Call("POST", f"/api/tasks/{_segment(task_id)}/retry", _one(Requeued))


def cancel(task_id: str, reason: str | None = None) -> Call[Cancelled]:
    """Cancel a queued or assigned task; TaskFinished if it had already ended."""
    body = {} if reason is None else {"reason": reason}
    return Call("POST", f"/api/tasks/{_segment(task_id)}/cancel", _one(Cancelled), body=body)


# --- agents -----------------------------------------------------------------------------


def agents() -> Call[list[AgentState]]:
    """Every connected agent with its state and the task it holds."""
    return Call("GET", "/api/agents/states", _listed(AgentState, "agents"))


def agent_state(agent_id: str) -> Call[AgentState]:
    """One connected agent (NotFound ``agent_not_connected`` otherwise)."""
    return Call("GET", f"/api/agents/{_segment(agent_id)}/state", _one(AgentState))


# --- messages ---------------------------------------------------------------------------


def _letter(to: str | None, payload: Any, type: str | None, reply_to: str | None) -> dict[str, Any]:
    letter: dict[str, Any] = {"payload": payload}
    if to is not None:
        letter["to"] = to
    if type is not None:
        letter["type"] = type
    if reply_to is not None:
        letter["reply_to"] = reply_to
    return letter


def send(
    to: str, payload: Any, *, type: str | None = None, reply_to: str | None = None
) -> Call[str]:
    """A direct message to agent ``to``, stored in its mailbox first; its id.
    NotFound ``unknown_recipient`` if no such agent exists."""
    return Call("POST", "/api/message", _field("id"), body=_letter(to, payload, type, reply_to))


def broadcast(payload: Any, *, type: str | None = None, reply_to: str | None = None) -> Call[str]:
    """A message to every agent but the sender; its id."""
    return Call("POST", "/api/message", _field("id"), body=_letter(None, payload, type, reply_to))


def mailbox(agent_id: str, *, since: int | None = None, limit: int | None = None) -> Call[Mailbox]:
    """Messages in ``agent_id``'s mailbox after seq ``since`` (reading deletes nothing)."""
    return Call(
        "GET",
        f"/api/mailbox/{_segment(agent_id)}",
        _one(Mailbox),
        params=_query(since=since, limit=limit),
    )


def ack(agent_id: str, seq: int) -> Call[int]:
    """Delete every message of the mailbox up to ``seq``; the seq acknowledged."""
    return Call(
        "POST", f"/api/mailbox/{_segment(agent_id)}/ack", _field("up_to"), body={"seq": seq}
    )


def create_channel(name: str, description: str | None = None) -> Call[str]:
    """Create a channel (Conflict ``channel_exists`` if it does); its normalised name."""
    body = {"name": name} if description is None else {"name": name, "description": description}
    return Call("POST", "/api/channels", _field("channel"), body=body)


def channels() -> Call[list[Channel]]:
    """Every channel, by name."""
    return Call("GET", "/api/channels", _listed(Channel, "channels"))


def channel(name: str) -> Call[Channel]:
    """One channel with its subscribers."""
    return Call("GET", f"/api/channels/{_segment(name)}", _one(Channel))


def subscribe(name: str) -> Call[str]:
    """Subscribe the token's agent: ``subscribed`` or ``already_subscribed``."""
    return Call("POST", f"/api/channels/{_segment(name)}/subscribe", _field("status"))


def unsubscribe(name: str) -> Call[str]:
    """Unsubscribe the token's agent: ``unsubscribed``."""
    return Call("POST", f"/api/channels/{_segment(name)}/unsubscribe", _field("status"))


def publish(
    name: str, payload: Any, *, type: str | None = None, reply_to: str | None = None
) -> Call[Published]:
    """Publish to a channel: kept in its history, pushed to its subscribers."""
    return Call(
        "POST",
        f"/api/channels/{_segment(name)}/publish",
        _one(Published),
        body=_letter(None, payload, type, reply_to),
    )


def history(
    name: str, *, since: int | None = None, limit: int | None = None
) -> Call[list[ChannelPost]]:
    """A channel's messages after seq ``since``, oldest first (the last ``limit``)."""
    return Call(
        "GET",
        f"/api/channels/{_segment(name)}/history",
        _listed(ChannelPost, "messages"),
        params=_query(since=since, limit=limit),
    )


def thread(message_id: str) -> Call[Thread]:
    """The whole reply tree that holds ``message_id``."""
    return Call("GET", f"/api/threads/{_segment(message_id)}", _one(Thread))


# --- events -----------------------------------------------------------------------------


def events_query(
    types: Iterable[str] | None, task_id: str | None, agent_id: str | None
) -> dict[str, str]:
    return _query(
        types=None if types is None else ",".join(types), task_id=task_id, agent_id=agent_id
    )


class SseParser:
    """Server-Sent Events from the stream's lines: an ``Event`` per blank-line-ended block.

    Comments (``: ping``) are skipped; the hub sends one ``data:`` line per event.
    """

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}

    def feed(self, lines: Iterable[str]) -> Iterator[Event]:
        for line in lines:
            if line:
                if not line.startswith(":"):
                    name, _, value = line.partition(":")
                    self._fields[name] = value.removeprefix(" ")
                continue
            fields, self._fields = self._fields, {}
            if "data" in fields:
                yield _event(fields)


def _event(fields: dict[str, str]) -> Event:
    data = json.loads(fields["data"])
    if "id" in fields and "id" not in data:
        data["id"] = int(fields["id"])
    return Event.from_json(data)
