"""Frozen dataclasses that cross threads: task specs, messages between agents, events,
death notices, timer ticks.

Events are past-tense facts published on a PubSub topic; death notices are told
directly to watchers (never through PubSub, so that they stay ordered with the
dying actor's other messages); timer ticks name what is due and carry the ids
they were armed for, so that a stale tick is recognised and dropped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any

import pykka

if TYPE_CHECKING:
    from agentcom.actors.agent_fsm import AgentLink

QUEUE_TOPIC = "queue"  # TaskQueued: what the Scheduler listens to
RECLAIMS_TOPIC = "reclaims"  # TaskReclaimed, TaskCancelled: for the holder's FSM, via Presence
AGENTS_TOPIC = "agents"
EVENTS_TOPIC = "events"  # HubEvent: every fact people watch (event stream, analytics, metrics)


class Priority(IntEnum):
    """Lanes in the order they are served; the value is the lane's rank."""

    URGENT = 0
    HIGH = 1
    NORMAL = 2
    LOW = 3

    @property
    def lane(self) -> str:
        return self.name.lower()

    @classmethod
    def from_lane(cls, lane: str) -> Priority:
        return cls[lane.upper()]


class TaskStatus(StrEnum):
    QUEUED = "queued"
    ASSIGNED = "assigned"
    COMPLETED = "completed"
    DEAD_LETTER = "dead_letter"
    CANCELLED = "cancelled"


FINISHED_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.DEAD_LETTER, TaskStatus.CANCELLED})
"""Final statuses: nothing changes such a task but an operator's retry from the dead letter."""


class ReclaimCause(StrEnum):
    """Why a task went back to the queue without its agent asking (history details)."""

    DISCONNECTED = "disconnected"
    REPLACED = "replaced"
    ACCEPTANCE_TIMEOUT = "acceptance_timeout"
    STUCK = "stuck"
    OVERDUE = "overdue"
    CRASHED = "crashed"
    HUB_LOST = "hub_lost"  # its hub's lease expired (several hubs, ``agentcom.cluster``)


class TaskRefused(Exception):
    """TaskQueue refuses a request and nothing changed; the caller is told ``reason``.

    For an agent's task_complete / task_failed / task_rejected that does not fit
    the task's state, ``reason`` is one of ``not_found``, ``not_assigned``,
    ``stale_generation``; the subclasses below are refusals of any request.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TaskChanged(TaskRefused):
    """Another hub changed the task between this hub's read and its write, so the
    write did not happen (``TaskStore.update``). Nothing of the request is stored;
    this hub's memory of tasks is rebuilt from the store, as after any failure, and
    the caller is told ``reason``: ``not_assigned`` for the agent whose task it
    was, ``task_changed`` (409) for anyone else, who may read it and try again."""

    rebuilds_memory = True

    def __init__(self, reason: str = "not_assigned") -> None:
        super().__init__(reason)


class StorageFull(TaskRefused):
    """The store cannot write (SQLite's SQLITE_FULL: the disk or the database is full).

    Nothing of the refused request is stored, and memory is as the store has
    it. Being a refusal, it reaches an agent as ``task_…_failed: storage_full``
    and an HTTP client as 507 ``storage_full``; reads go on working.
    """

    def __init__(self, detail: str = "database or disk is full") -> None:
        super().__init__("storage_full")
        self.detail = detail


class TaskFinished(TaskRefused):
    """A cancel of a task that is already completed, dead-lettered or cancelled."""

    def __init__(self, status: TaskStatus) -> None:
        super().__init__("task_finished")
        self.status = status


class IdempotencyKeyReused(TaskRefused):
    """An Idempotency-Key already used by this agent, within its lifetime, for another task."""

    def __init__(self) -> None:
        super().__init__("idempotency_key_reused")


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """A validated submission."""

    description: str
    submitted_by: str
    priority: Priority = Priority.NORMAL
    metadata: dict[str, Any] | None = None
    needed_capabilities: tuple[str, ...] = ()
    max_retries: int = 3
    complete_by: int | None = None

    def fingerprint(self) -> str:
        """What the submitter asked for (not who), to tell a retry from another task."""
        asked = [
            self.description,
            self.priority.lane,
            self.metadata or {},
            list(self.needed_capabilities),
            self.max_retries,
            self.complete_by,
        ]
        encoded = json.dumps(asked, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(encoded.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Submitted:
    """TaskQueue's answer to a submission with an Idempotency-Key.

    ``reply`` is the body of the reply; ``replayed`` says it is the reply to an
    earlier submission with the same key (no task was queued this time).
    """

    reply: dict[str, Any]
    replayed: bool


@dataclass(frozen=True, slots=True)
class IdleAgent:
    """An agent the Scheduler offers to TaskQueue's matcher, in preference order."""

    agent_id: str
    capabilities: frozenset[str]


@dataclass(frozen=True, slots=True)
class Assignment:
    task_id: str
    agent_id: str
    generation: int
    description: str
    metadata: dict[str, Any]
    assigned_at: int
    complete_by: int | None

    def frame(self) -> dict[str, Any]:
        return {
            "type": "task_assign",
            "task_id": self.task_id,
            "description": self.description,
            "metadata": self.metadata,
            "generation": self.generation,
            "assigned_at": self.assigned_at,
            "complete_by": self.complete_by,
        }


@dataclass(frozen=True, slots=True)
class HeldTask:
    """A task assigned to an agent, as its AgentFSM needs it after a reconnect."""

    task_id: str
    generation: int
    accepted: bool
    assigned_at: int


# --- events on QUEUE_TOPIC, RECLAIMS_TOPIC (published by TaskQueue) -----------------


@dataclass(frozen=True, slots=True)
class TaskQueued:
    """A task is waiting in its lane: submitted, retried, reclaimed, rejected or requeued."""

    task_id: str
    cause: str


@dataclass(frozen=True, slots=True)
class TaskReclaimed:
    """On RECLAIMS_TOPIC: an assignment was taken back; its FSM must let go of it."""

    task_id: str
    agent_id: str
    generation: int
    cause: ReclaimCause


@dataclass(frozen=True, slots=True)
class TaskCancelled:
    """On RECLAIMS_TOPIC: a submitter or an admin cancelled an assigned task; the
    holder's FSM must let go of it and tell the agent ``reason``."""

    task_id: str
    agent_id: str
    generation: int
    reason: str


@dataclass(frozen=True, slots=True)
class ClusterFenced:
    """To the Scheduler, from HubLease: the hub lost its lease (assign nothing) or
    joined again under a new id (assign again)."""

    fenced: bool


# --- events on AGENTS_TOPIC (published by AgentFSM and Presence) -----------------


@dataclass(frozen=True, slots=True)
class AgentIdle:
    """An agent can take a task. ``fsm_urn`` tells incarnations of one agent id apart."""

    agent_id: str
    fsm_urn: str
    fsm_ref: pykka.ActorRef[Any]
    capabilities: frozenset[str]
    unresponsive: bool


@dataclass(frozen=True, slots=True)
class AgentLeft:
    agent_id: str
    fsm_urn: str


# --- death notices (told directly to watchers) ------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The agent's WebSocket is gone; ``reason`` is disconnected, replaced or ping_timeout."""

    reason: str


@dataclass(frozen=True, slots=True)
class AgentStopped:
    """An AgentFSM ended; the task it held (if any) must go back to the queue."""

    agent_id: str
    fsm_urn: str
    task_id: str | None
    generation: int | None
    reason: str


# --- messages from an agent's socket to its AgentFSM ------------------------------


@dataclass(frozen=True, slots=True)
class AgentAccepted:
    task_id: str


@dataclass(frozen=True, slots=True)
class AgentReportedProgress:
    task_id: str
    blocked: bool
    progress: float | None = None  # 0 to 100 (checked at the edge), for the watchers


@dataclass(frozen=True, slots=True)
class AgentCompleted:
    task_id: str
    generation: int
    result: Any
    tokens_used: int | None


@dataclass(frozen=True, slots=True)
class AgentFailed:
    task_id: str
    generation: int
    error: str | None


@dataclass(frozen=True, slots=True)
class AgentRejected:
    task_id: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class AgentRecovering:
    task_id: str


# --- scheduler to AgentFSM, and timer ticks ---------------------------------------


@dataclass(frozen=True, slots=True)
class AssignmentMade:
    """TaskQueue recorded ``assignment``; the FSM delivers it. The reply says if it could."""

    assignment: Assignment


@dataclass(frozen=True, slots=True)
class AcceptanceDue:
    task_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class IdleDue:
    """An FSM held back its "idle" after a busy rejection; ``epoch`` spots stale ticks."""

    epoch: int


@dataclass(frozen=True, slots=True)
class ScheduleDue:
    pass


@dataclass(frozen=True, slots=True)
class SweepDue:
    pass


# --- messages between agents (PostOffice) -----------------------------------------


@dataclass(frozen=True, slots=True)
class Retention:
    """How much PostOffice keeps: hub settings (``HubConfig.retention``)."""

    mailbox_max: int  # entries per mailbox; the oldest are dropped past it
    mailbox_ttl_ms: int  # an entry older than this is dropped
    channel_history_max: int  # entries per channel history; the oldest are dropped past it


@dataclass(frozen=True, slots=True)
class Letter:
    """A message as its sender submits it, validated at the edge."""

    sender: str  # always the token's agent id, whatever the body says
    to: str | None  # None: a broadcast ("broadcast", null and missing all mean None)
    type: str  # "chat" when the sender gave none
    payload: Any  # any JSON value; the edge turns null into {}
    reply_to: str | None


@dataclass(frozen=True, slots=True)
class Reader:
    """Who is reading messages, for privacy: ``sees_all`` for admin and viewer tokens."""

    agent_id: str
    sees_all: bool


class MessageRefused(Exception):
    """PostOffice refuses a request and nothing changed; the edge answers ``error`` with
    ``status``: unknown_recipient 404, channel_not_found 404, message_not_found 404,
    channel_exists 409, forbidden 403."""

    def __init__(self, error: str, status: int) -> None:
        super().__init__(error)
        self.error = error
        self.status = status


@dataclass(frozen=True, slots=True)
class AgentOnline:
    """Told to PostOffice by an AgentFSM right after it sent "identified" on ``link``.

    PostOffice pushes to the agent through ``link`` from then on (its mailbox
    first), until the AgentStopped of the same ``fsm_urn``.
    """

    agent_id: str
    fsm_urn: str
    link: AgentLink


@dataclass(frozen=True, slots=True)
class MailboxSweepDue:
    """Time to drop mailbox entries older than the mailbox TTL."""


# --- what people watch (EVENTS_TOPIC) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class HubEvent:
    """A fact for the people watching the hub, published by the actor that owns it
    after its commit: the event stream (``/api/events``), ``?wait=``, analytics and
    metrics all read these, never the store.

    ``type`` is one of PROTOCOL.md's event names (``task_queued`` … ``channel_published``);
    ``fields`` is what the event says on the wire, JSON-ready and without payloads,
    descriptions or results. ``task_id``, ``agent_id`` and ``submitted_by`` let a
    reader be shown only the events it may see (an agent token: the tasks it
    submitted or holds, plus presence).
    """

    type: str
    timestamp: int
    fields: dict[str, Any]
    task_id: str | None = None
    agent_id: str | None = None
    submitted_by: str | None = None
