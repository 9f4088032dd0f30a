"""PubSub: carries events between actors by topic.

Publishers ``tell`` a batch of events; each subscriber of a topic is told
each event in publication order. Subscribers that have stopped are dropped the
first time a delivery to them fails. Death notices do not travel here (see
``death_watch``): PubSub adds a hop, and with it a chance of reordering.

Subscribers that only watch (the event stream, metrics, analytics) subscribe
``gathered``: they are told what was published on the topic within one
window of ``gather_ms`` as one ``Gathered`` message, in publication order.
Each tell that finds its receiver asleep wakes a thread, and under load a
watcher woken per published batch cost the hub more CPU than anything it did
with the event; gathered, it wakes once per window however many tasks move.
Subscribers that decide (the Scheduler) are told each event at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pykka
import structlog

from agentcom.actors.base import HubActor, tell_quietly
from agentcom.messages import HubEvent
from agentcom.timers import Timers

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Gathered:
    """What a gathered subscriber is told: the events of one window on ``topic``, in order."""

    topic: str
    events: tuple[object, ...]

    def hub_events(self) -> Iterator[HubEvent]:
        """The window's ``HubEvent``s, in order (what the watchers count and show)."""
        return (event for event in self.events if isinstance(event, HubEvent))


@dataclass(frozen=True, slots=True)
class GatherWindowDue:
    pass


class PubSub(HubActor):
    def __init__(self, timers: Timers | None = None, gather_ms: int = 0) -> None:
        """Without ``timers`` (or with ``gather_ms`` 0) gathered subscribers are told at once."""
        super().__init__()
        self._subscribers: dict[str, list[pykka.ActorRef[Any]]] = {}
        self._gatherers: dict[str, list[pykka.ActorRef[Any]]] = {}
        self._gathered: dict[str, list[object]] = {}  # published since the window opened
        self._timers = timers if gather_ms > 0 else None
        self._gather_s = gather_ms / 1000
        self._window_open = False

    def subscribe(
        self, topic: str, subscriber: pykka.ActorRef[Any], *, gathered: bool = False
    ) -> None:
        subscribers = (self._gatherers if gathered else self._subscribers).setdefault(topic, [])
        if subscriber not in subscribers:
            subscribers.append(subscriber)

    def publish(self, topic: str, events: Sequence[object]) -> None:
        subscribers = self._subscribers.get(topic, [])
        for subscriber in list(subscribers):
            try:
                for event in events:
                    subscriber.tell(event)
            except pykka.ActorDeadError:
                log.debug("subscriber_gone", topic=topic, subscriber=str(subscriber))
                subscribers.remove(subscriber)
        if events and self._gatherers.get(topic):
            self._gathered.setdefault(topic, []).extend(events)
            self._open_window()

    def deliver_gathered(self) -> None:
        """Tell each gathered subscriber what its topics gathered; the hub's stop asks it too."""
        gathered, self._gathered = self._gathered, {}
        for topic, events in gathered.items():
            message = Gathered(topic, tuple(events))
            subscribers = self._gatherers.get(topic, [])
            for subscriber in list(subscribers):
                try:
                    subscriber.tell(message)
                except pykka.ActorDeadError:
                    log.debug("subscriber_gone", topic=topic, subscriber=str(subscriber))
                    subscribers.remove(subscriber)

    def on_receive(self, message: Any) -> None:
        if isinstance(message, GatherWindowDue):
            self._window_open = False
            self.deliver_gathered()

    def _open_window(self) -> None:
        if self._timers is None:
            self.deliver_gathered()
        elif not self._window_open:
            self._window_open = True
            ref = self.actor_ref
            self._timers.call_later(self._gather_s, lambda: tell_quietly(ref, GatherWindowDue()))
