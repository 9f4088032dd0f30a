"""EventFeed: numbers every HubEvent and hands it, encoded once, to the IOLoop.

It subscribes to ``EVENTS_TOPIC`` gathered (one ``Gathered`` per
``--event-gather-ms`` window), where the actors that own the facts
(TaskQueue, Presence, AgentFSM, PostOffice) publish after their commit. Each
event gets the next id (strictly increasing for the life of the hub, and
beyond: the first id is derived from the start time, so a client holding an
id from an earlier run is told to reset rather than resume at a wrong place)
and is encoded here, off the loop, as its Server-Sent Events text. As a
``BatchingActor`` it drains its inbox and posts the whole batch to the loop in
one hand-off (``deliver``, an ``http.bridge.OnLoop``), where ``EventHub`` keeps
the ring and the clients. It ignores every other message; it never blocks on
anyone, so a slow stream client cannot slow the actors that publish.

Several hubs on one PostgreSQL store (``cluster``, ``agentcom.cluster``): each
hub's stream shows every hub's events. After handing a batch to the loop,
EventFeed hands it to its ``EventNotifier``, a thread with a database
connection of its own that sends it as ``EVENTS_CHANNEL`` notices, so a slow
or unreachable database never holds up this hub's own stream. The events
another hub sent arrive as ``EventsElsewhere`` and are numbered here like this
hub's own, with the ``hub_id`` they happened on; they are not published on
``EVENTS_TOPIC``, whose other readers (Metrics, Analytics) count what happens
on this hub only. Across hubs events are best-effort: a notice sent while a
listener was reconnecting, or while the notifier's queue was full, is lost.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka
import structlog

from agentcom import compact_json
from agentcom.actors.base import BatchingActor, tell_quietly
from agentcom.actors.pubsub import Gathered
from agentcom.cluster import EVENTS_CHANNEL, Cluster, notices
from agentcom.messages import EVENTS_TOPIC, HubEvent
from agentcom.stores.interface import Connection, Stores

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


def wire_event(event_id: int, event: HubEvent, hub_id: str | None = None) -> WireEvent:
    """``hub_id``: the hub another hub's event happened on (shown in its data)."""
    data = {"id": event_id, "type": event.type, "timestamp": event.timestamp, **event.fields}
    if hub_id is not None:
        data["hub_id"] = hub_id
    return WireEvent(
        id=event_id,
        type=event.type,
        task_id=event.task_id,
        agent_id=event.agent_id,
        submitted_by=event.submitted_by,
        to=event.fields.get("to") if event.type == "message_sent" else None,
        text=sse_text(event_id, event.type, data),
    )


# --- several hubs ----------------------------------------------------------------------

NOTIFIER_QUEUE = 1_000
"""Batches waiting for the notifier's thread, at most; past that they are dropped
(counted in a warning), so a database that hangs costs memory no longer."""


@dataclass(frozen=True, slots=True)
class EventsElsewhere:
    """An ``EVENTS_CHANNEL`` notice: events that happened on hub ``hub``."""

    hub: str
    events: tuple[Any, ...]


def event_notice(event: HubEvent) -> dict[str, Any]:
    """A HubEvent as an ``EVENTS_CHANNEL`` notice carries it."""
    return {
        "type": event.type,
        "timestamp": event.timestamp,
        "fields": event.fields,
        "task_id": event.task_id,
        "agent_id": event.agent_id,
        "submitted_by": event.submitted_by,
    }


def event_from_notice(item: Any) -> HubEvent | None:
    """The HubEvent a notice's item describes, or None if it does not read as one."""
    if not isinstance(item, dict):
        return None
    kind, timestamp, fields = item.get("type"), item.get("timestamp"), item.get("fields")
    ids = [item.get(name) for name in ("task_id", "agent_id", "submitted_by")]
    if (
        not isinstance(kind, str)
        or not isinstance(timestamp, int)
        or not isinstance(fields, dict)
        or not all(value is None or isinstance(value, str) for value in ids)
    ):
        return None
    return HubEvent(kind, timestamp, fields, *ids)


class EventNotifier:
    """Sends this hub's events to the other hubs, from a thread of its own.

    ``send`` only queues (EventFeed's thread never waits on the database);
    the thread sends what has gathered as ``EVENTS_CHANNEL`` notices, each
    under PostgreSQL's size limit (``cluster.notices``), in one round trip, on
    a connection of its own (autocommit: a notice goes out at once). A batch
    the database does not take is dropped and logged: events are best-effort
    across hubs.
    """

    def __init__(self, cluster: Cluster, stores: Stores) -> None:
        self._cluster = cluster
        self._stores = stores
        self._queue: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(NOTIFIER_QUEUE)
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name="event-notifier", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def send(self, events: list[HubEvent]) -> None:
        try:
            self._queue.put_nowait([event_notice(event) for event in events])
        except queue.Full:
            if not self._dropped:
                log.warning("events_to_other_hubs_dropped", reason="notifier_queue_full")
            self._dropped += len(events)

    def close(self) -> None:
        """Send what is queued, then stop (within a few seconds)."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=1.0)
        self._thread.join(timeout=5.0)

    def _run(self) -> None:
        conn: Connection | None = None
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            items = first
            while True:  # what else has gathered meanwhile goes in the same round trip
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                items.extend(more)
            if self._dropped:
                log.warning("events_to_other_hubs_dropped", count=self._dropped)
                self._dropped = 0
            try:
                if conn is None:
                    conn = self._stores.connect("tasks")
                payloads = notices(self._cluster.hub_id, "events", items)
                conn.executemany(
                    "SELECT pg_notify(?, ?)", [(EVENTS_CHANNEL, payload) for payload in payloads]
                )
            except Exception as error:
                log.warning(
                    "events_to_other_hubs_lost",
                    count=len(items),
                    error=" ".join(str(error).split()),
                )
        if conn is not None:
            conn.close()


def _stores_of(cluster: Cluster) -> Stores:
    from agentcom.stores.postgres import PostgresStores

    return PostgresStores(cluster.database_url)


class EventFeed(BatchingActor):
    def __init__(
        self,
        pubsub: pykka.ActorRef[Any],
        deliver: Callable[[list[WireEvent]], None],
        first_id: int = 1,
        *,
        cluster: Cluster | None = None,
        stores: Stores | None = None,
    ) -> None:
        super().__init__()
        self._pubsub = pubsub.proxy()
        self._deliver = deliver
        self._next_id = first_id
        self._batch: list[WireEvent] = []
        self._notifier: EventNotifier | None = None
        self._outgoing: list[HubEvent] = []  # this batch's own events, for the other hubs
        if cluster is not None:
            self._notifier = EventNotifier(cluster, stores or _stores_of(cluster))
            # Registered before the hub starts the listener; the handler only tells.
            ref = self.actor_ref
            cluster.listener.on(
                EVENTS_CHANNEL,
                lambda notice: tell_quietly(
                    ref, EventsElsewhere(str(notice["hub"]), tuple(notice["events"]))
                ),
            )

    def on_start(self) -> None:
        self._pubsub.subscribe(EVENTS_TOPIC, self.actor_ref, gathered=True).get()
        if self._notifier is not None:
            self._notifier.start()
        log.info("event_feed_started", first_id=self._next_id)

    def on_receive(self, message: Any) -> None:
        if isinstance(message, Gathered):
            for hub_event in message.hub_events():
                self._batch.append(wire_event(self._next_id, hub_event))
                self._next_id += 1
                if self._notifier is not None:
                    self._outgoing.append(hub_event)
        elif isinstance(message, EventsElsewhere):
            for item in message.events:
                event = event_from_notice(item)
                if event is None:
                    log.warning("event_from_other_hub_unreadable", hub_id=message.hub)
                    continue
                self._batch.append(wire_event(self._next_id, event, hub_id=message.hub))
                self._next_id += 1

    def end_batch(self) -> None:
        if self._batch:
            batch, self._batch = self._batch, []
            self._deliver(batch)
        if self._notifier is not None:
            if self._outgoing:
                outgoing, self._outgoing = self._outgoing, []
                self._notifier.send(outgoing)
            if self.actor_stopped.is_set():
                self._notifier.close()
