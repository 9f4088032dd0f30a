"""PubSub delivers each topic's events to every subscriber in publication order,
and drops a subscriber that has stopped."""

from __future__ import annotations

import queue

import pytest

from agentcom.actors.pubsub import PubSub

from .conftest import Recorder


def drain(seen: queue.Queue[object], count: int) -> list[object]:
    return [seen.get(timeout=5) for _ in range(count)]


def test_every_subscriber_hears_every_batch_in_order() -> None:
    pubsub = PubSub.start().proxy()
    subscribers = [Recorder.start() for _ in range(3)]
    seens = [ref.proxy().seen.get(timeout=5) for ref in subscribers]
    for ref in subscribers:
        pubsub.subscribe("topic", ref).get(timeout=5)
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
