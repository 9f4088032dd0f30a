"""PubSub hands each subscriber a published batch in one tell; the subscriber's inbox
makes each event a message of its own, in order."""

from __future__ import annotations

import queue
from typing import Any

import pykka
import pytest
from pykka._envelope import Envelope

from agentcom.actors.base import BatchingActor, HubActor, Published, UnwrappingInbox
from agentcom.actors.pubsub import PubSub

from .conftest import Recorder


class CountingInbox(UnwrappingInbox):
    """Counts hand-offs: each ``put`` is one tell, one receiver woken."""

    def __init__(self) -> None:
        super().__init__()
        self.puts = 0

    def put(self, item: Envelope[Any], block: bool = True, timeout: float | None = None) -> None:
        self.puts += 1
        super().put(item, block, timeout)


class CountingRecorder(Recorder):
    @staticmethod
    def _create_actor_inbox() -> Any:
        return CountingInbox()


class HandedRecorder(HubActor):
    """Keeps every message exactly as its actor loop hands it over (what a
    ``StoreActor`` wraps in one savepoint each)."""

    def __init__(self) -> None:
        super().__init__()
        self.handed: queue.Queue[object] = queue.Queue()

    def _handle_receive(self, message: Any) -> Any:
        if not isinstance(message, pykka.messages.ProxyGetAttr):
            self.handed.put(message)
        return super()._handle_receive(message)


class FailsOn(BatchingActor):
    """A batching subscriber that fails on one event and carries on with the rest."""

    survives_failed_tells = True

    def __init__(self, poison: object) -> None:
        super().__init__()
        self.poison = poison
        self.seen: queue.Queue[object] = queue.Queue()

    def on_receive(self, message: Any) -> None:
        if message == self.poison:
            raise RuntimeError("poison")
        self.seen.put(message)


def drain(seen: queue.Queue[object], count: int) -> list[object]:
    return [seen.get(timeout=5) for _ in range(count)]


def test_a_published_batch_is_one_tell_per_subscriber_and_keeps_its_order() -> None:
    pubsub = PubSub.start().proxy()
    subscribers = [CountingRecorder.start() for _ in range(3)]
    seens = [ref.proxy().seen.get(timeout=5) for ref in subscribers]
    for ref in subscribers:
        pubsub.subscribe("topic", ref).get(timeout=5)
    inboxes = [ref.actor_inbox for ref in subscribers]
    assert all(isinstance(inbox, CountingInbox) for inbox in inboxes)
    before = [inbox.puts for inbox in inboxes]  # type: ignore[attr-defined]

    batches = [[f"a{n}" for n in range(5)], ["b0"], [f"c{n}" for n in range(4)]]
    for batch in batches:
        pubsub.publish("topic", batch).get(timeout=5)
    pubsub.publish("nobody-listens", ["x", "y"]).get(timeout=5)
    pubsub.publish("topic", []).get(timeout=5)

    expected = [event for batch in batches for event in batch]
    for seen in seens:
        assert drain(seen, len(expected)) == expected
        with pytest.raises(queue.Empty):
            seen.get(timeout=0.05)
    after = [inbox.puts for inbox in inboxes]  # type: ignore[attr-defined]
    assert [a - b for a, b in zip(after, before, strict=True)] == [len(batches)] * 3


def test_each_event_of_a_batch_is_handed_to_the_actor_as_a_message_of_its_own() -> None:
    pubsub = PubSub.start().proxy()
    ref = HandedRecorder.start()
    handed = ref.proxy().handed.get(timeout=5)
    pubsub.subscribe("topic", ref).get(timeout=5)
    pubsub.publish("topic", ["one", "two", "three"]).get(timeout=5)
    assert drain(handed, 3) == ["one", "two", "three"]
    with pytest.raises(queue.Empty):
        handed.get(timeout=0.05)


def test_a_batching_subscriber_handles_each_event_alone_and_a_failed_one_alone() -> None:
    pubsub = PubSub.start().proxy()
    ref = FailsOn.start("poison")
    seen = ref.proxy().seen.get(timeout=5)
    pubsub.subscribe("topic", ref).get(timeout=5)
    pubsub.publish("topic", ["before", "poison", "after"]).get(timeout=5)
    pubsub.publish("topic", ["later"]).get(timeout=5)
    assert drain(seen, 3) == ["before", "after", "later"]
    assert ref.is_alive()


def test_a_stopped_subscriber_is_dropped_and_the_others_still_hear() -> None:
    pubsub = PubSub.start().proxy()
    gone, alive = Recorder.start(), Recorder.start()
    seen = alive.proxy().seen.get(timeout=5)
    pubsub.subscribe("topic", gone).get(timeout=5)
    pubsub.subscribe("topic", alive).get(timeout=5)
    gone.stop()
    pubsub.publish("topic", ["e1", "e2"]).get(timeout=5)
    pubsub.publish("topic", ["e3"]).get(timeout=5)
    assert drain(seen, 3) == ["e1", "e2", "e3"]


def test_an_asked_published_is_not_opened() -> None:
    inbox = UnwrappingInbox()
    future = pykka.ThreadingFuture[Any]()
    asked = Envelope(Published("topic", ("a", "b")), reply_to=future)
    inbox.put(asked)
    inbox.put(Envelope(Published("topic", ("c", "d"))))
    assert inbox.get_nowait() is asked
    assert [inbox.get_nowait().message for _ in range(2)] == ["c", "d"]
    assert inbox.empty()
