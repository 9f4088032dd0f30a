"""PubSub: carries events between actors by topic.

Publishers ``tell`` a batch of events; each subscriber of a topic is told
each event in publication order. Subscribers that have stopped are dropped the
first time a delivery to them fails. Death notices do not travel here (see
``death_watch``): PubSub adds a hop, and with it a chance of reordering.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pykka
import structlog

from agentcom.actors.base import HubActor

log = structlog.get_logger(__name__)


class PubSub(HubActor):
    def __init__(self) -> None:
        super().__init__()
        self._subscribers: dict[str, list[pykka.ActorRef[Any]]] = {}

    def subscribe(self, topic: str, subscriber: pykka.ActorRef[Any]) -> None:
        subscribers = self._subscribers.setdefault(topic, [])
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
