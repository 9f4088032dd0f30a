"""Typed results: what the hub answers, as frozen dataclasses.

Each is built by ``from_json`` from the hub's JSON object. A field the hub
leaves out gets its default, and a field this client does not know yet is
kept in ``raw`` (the whole object, as the hub sent it), so an older client
reads a newer hub. The field names are the wire's, except ``sender`` for a
message's ``from`` (a Python keyword).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

T = TypeVar("T", bound="Model")

FINAL_STATUSES = frozenset({"completed", "dead_letter", "cancelled"})


@dataclass(frozen=True, slots=True)
class Model:
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, kw_only=True)

    _wire_names: ClassVar[dict[str, str]] = {}
    _nested: ClassVar[dict[str, type[Model]]] = {}

    @classmethod
    def from_json(cls: type[T], data: dict[str, Any]) -> T:
        values: dict[str, Any] = {"raw": data}
        for spec in dataclasses.fields(cls):
            if spec.name == "raw":
                continue
            key = cls._wire_names.get(spec.name, spec.name)
            if key not in data:
                continue
            value = data[key]
            nested = cls._nested.get(spec.name)
            if nested is not None and value is not None:
                value = (
                    [nested.from_json(item) for item in value]
                    if isinstance(value, list)
                    else nested.from_json(value)
                )
            values[spec.name] = value
        return cls(**values)


@dataclass(frozen=True, slots=True)
class HistoryEntry(Model):
    event: str = ""
    timestamp: int = 0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Task(Model):
    """A task as ``GET /api/tasks/{id}`` returns it."""

    id: str = ""
    description: str = ""
    status: str = ""
    priority: str = "normal"
    metadata: dict[str, Any] = field(default_factory=dict)
    assigned_to: str | None = None
    assigned_at: int | None = None
    generation: int = 0
    retry_count: int = 0
    max_retries: int = 3
    needed_capabilities: list[str] = field(default_factory=list)
    last_error: str | None = None
    complete_by: int | None = None
    result: Any = None
    tokens_used: int | None = None
    submitted_by: str | None = None
    created_at: int = 0
    updated_at: int = 0
    history: list[HistoryEntry] = field(default_factory=list)

    _nested: ClassVar[dict[str, type[Model]]] = {"history": HistoryEntry}

    @property
    def finished(self) -> bool:
        """Completed, dead-lettered or cancelled: waiting longer changes nothing."""
        return self.status in FINAL_STATUSES


@dataclass(frozen=True, slots=True)
class TaskRequest:
    """One task to submit (``submit_many``); the fields of ``POST /api/tasks``."""

    description: str
    priority: str | None = None
    metadata: dict[str, Any] | None = None
    needed_capabilities: list[str] | None = None
    max_retries: int | None = None
    complete_by: int | None = None
    idempotency_key: str | None = None

    def body(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        del fields["idempotency_key"]
        return {name: value for name, value in fields.items() if value is not None}


@dataclass(frozen=True, slots=True)
class Submitted(Model):
    """The answer to a submission."""

    task_id: str = ""
    status: str = ""
    priority: str = ""
    created_at: int = 0


@dataclass(frozen=True, slots=True)
class Requeued(Model):
    """The answer to a retry from the dead letter."""

    task_id: str = ""
    status: str = ""
    priority: str = ""


@dataclass(frozen=True, slots=True)
class Cancelled(Model):
    """The answer to a cancel: the task's status before it."""

    task_id: str = ""
    status: str = ""
    previous_status: str = ""


@dataclass(frozen=True, slots=True)
class TaskPage(Model):
    """One page of a task list; ``next_cursor`` is None on the last page."""

    tasks: list[Task] = field(default_factory=list)
    next_cursor: int | None = None

    _nested: ClassVar[dict[str, type[Model]]] = {"tasks": Task}


@dataclass(frozen=True, slots=True)
class Stats(Model):
    """Task counts: ``by_status`` and ``by_priority`` leave dead-letter tasks out."""

    by_status: dict[str, int] = field(default_factory=dict)
    by_priority: dict[str, int] = field(default_factory=dict)
    dead_letter: int = 0


@dataclass(frozen=True, slots=True)
class AgentState(Model):
    """A connected agent, its state machine's state and the task it holds."""

    agent_id: str = ""
    fsm_state: str = ""
    current_task_id: str | None = None
    flags: list[str] = field(default_factory=list)
    capabilities: list[Any] = field(default_factory=list)
    connected_at: int | None = None
    name: str | None = None
    hub_id: str | None = None  # the hub it is connected to (hubs sharing a PostgreSQL store)


@dataclass(frozen=True, slots=True)
class Message(Model):
    """A direct message, broadcast or channel message (``sender`` is the wire's ``from``)."""

    id: str = ""
    sender: str = ""
    to: str | None = None
    type: str = "chat"
    payload: Any = None
    reply_to: str | None = None
    timestamp: int = 0
    seq: int | None = None
    channel: str | None = None

    _wire_names: ClassVar[dict[str, str]] = {"sender": "from"}


@dataclass(frozen=True, slots=True)
class Mailbox(Model):
    """A page of an agent's mailbox; ``last_seq`` is where the next page starts."""

    agent_id: str = ""
    messages: list[Message] = field(default_factory=list)
    last_seq: int = 0
    count: int = 0
    evicted: int = 0

    _nested: ClassVar[dict[str, type[Model]]] = {"messages": Message}


@dataclass(frozen=True, slots=True)
class Channel(Model):
    """A channel; ``subscribers`` is None in a listing (only its count is given)."""

    name: str = ""
    description: str | None = None
    subscriber_count: int = 0
    created_at: int = 0
    created_by: str | None = None
    subscribers: list[str] | None = None


@dataclass(frozen=True, slots=True)
class Published(Model):
    """The answer to a channel publish: the message's place in the channel's history."""

    channel: str = ""
    seq: int = 0
    id: str = ""


@dataclass(frozen=True, slots=True)
class ChannelPost(Model):
    """One entry of a channel's history."""

    seq: int = 0
    message: Message = field(default_factory=Message)
    stored_at: int = 0

    _nested: ClassVar[dict[str, type[Model]]] = {"message": Message}


@dataclass(frozen=True, slots=True)
class Thread(Model):
    """The whole reply tree that holds a message, oldest first."""

    root: str = ""
    messages: list[Message] = field(default_factory=list)
    count: int = 0
    truncated: bool = False

    _nested: ClassVar[dict[str, type[Model]]] = {"messages": Message}


@dataclass(frozen=True, slots=True)
class Event(Model):
    """One event of ``/api/events``; ``raw`` holds every field (see docs/protocol.md)."""

    id: int = 0
    type: str = ""
    timestamp: int = 0
    task_id: str | None = None
    agent_id: str | None = None
