"""EventFeed: numbers every HubEvent and hands it, encoded once, to the IOLoop.

It subscribes to ``EVENTS_TOPIC``, where the actors that own the facts
(TaskQueue, Presence, AgentFSM, PostOffice) publish after their commit. Each
event gets the next id (strictly increasing for the life of the hub, and
beyond: the first id is derived from the start time, so a client holding an
id from an earlier run is told to reset rather than resume at a wrong place)
and is encoded here, off the loop, as its Server-Sent Events text. As a
``BatchingActor`` it drains its inbox and posts the whole batch to the loop in
one hand-off (``deliver``, an ``http.bridge.OnLoop``), where ``EventHub`` keeps
the ring and the clients. It ignores every other message; it never blocks on
anyone, so a slow stream client cannot slow the actors that publish.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka
import structlog

from agentcom import compact_json
from agentcom.actors.base import BatchingActor
from agentcom.messages import EVENTS_TOPIC, HubEvent

log = structlog.get_logger(__name__)

EVENT_TYPES = (
    "task_queued",
    "task_assigned",
    "task_accepted",
    "task_progress",
    "task_completed",
    "task_failed",
    "task_reclaimed",
    "task_rejected",
    "task_dead_letter",
    "task_requeued",
    "task_cancelled",
    "agent_joined",
    "agent_left",
    "agent_state",
    "message_sent",
    "channel_published",
)
"""Every event the stream carries (PROTOCOL.md, "Watching the hub")."""


@dataclass(frozen=True, slots=True)
class WireEvent:
    """A numbered HubEvent as the stream sends it, with what scoping and filters read."""

    id: int
    type: str
    task_id: str | None
    agent_id: str | None
    submitted_by: str | None
    to: str | None  # message_sent: the recipient (None: a broadcast)
    text: str  # "id: N\nevent: TYPE\ndata: JSON\n\n"


def sse_text(event_id: int, kind: str, data: dict[str, Any]) -> str:
    return f"id: {event_id}\nevent: {kind}\ndata: {compact_json.dumps(data)}\n\n"


def wire_event(event_id: int, event: HubEvent) -> WireEvent:
    data = {"id": event_id, "type": event.type, "timestamp": event.timestamp, **event.fields}
    return WireEvent(
        id=event_id,
        type=event.type,
        task_id=event.task_id,
        agent_id=event.agent_id,
        submitted_by=event.submitted_by,
        to=event.fields.get("to") if event.type == "message_sent" else None,
        text=sse_text(event_id, event.type, data),
    )


class EventFeed(BatchingActor):
    def __init__(
        self,
        pubsub: pykka.ActorRef[Any],
        deliver: Callable[[list[WireEvent]], None],
        first_id: int = 1,
    ) -> None:
        super().__init__()
        self._pubsub = pubsub.proxy()
        self._deliver = deliver
        self._next_id = first_id
        self._batch: list[WireEvent] = []

    def on_start(self) -> None:
        self._pubsub.subscribe(EVENTS_TOPIC, self.actor_ref).get()
        log.info("event_feed_started", first_id=self._next_id)

    def on_receive(self, message: Any) -> None:
        if isinstance(message, HubEvent):
            self._batch.append(wire_event(self._next_id, message))
            self._next_id += 1

    def end_batch(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self._deliver(batch)
