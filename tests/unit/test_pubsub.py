"""PubSub delivers each topic's events to every subscriber in publication order,
and drops a subscriber that has stopped; gathered subscribers hear a window's
events as one message."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import pytest

from agentcom.actors.pubsub import Gathered, PubSub
from agentcom.timers import TimerHandle, Timers

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


class HeldTimers(Timers):
    """Timers whose callbacks wait for the test to ``fire`` them: a window ends on cue."""

    def __init__(self) -> None:
        self.held: list[tuple[float, Callable[[], None]]] = []
        self._lock = threading.Lock()

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        with self._lock:
            self.held.append((delay_s, callback))
        return TimerHandle(callback)

    def fire(self) -> None:
        with self._lock:
            held, self.held = self.held, []
        for _, callback in held:
            callback()


def test_a_gathered_subscriber_hears_one_window_as_one_message_in_order() -> None:
    timers = HeldTimers()
    pubsub = PubSub.start(timers, 50).proxy()
    watcher, decider = Recorder.start(), Recorder.start()
    watched, decided = (ref.proxy().seen.get(timeout=5) for ref in (watcher, decider))
    pubsub.subscribe("topic", watcher, gathered=True).get(timeout=5)
    pubsub.subscribe("topic", decider).get(timeout=5)

    pubsub.publish("topic", ["a0", "a1"]).get(timeout=5)
    pubsub.publish("topic", ["b0"]).get(timeout=5)
    pubsub.publish("topic", []).get(timeout=5)
    assert drain(decided, 3) == ["a0", "a1", "b0"]  # deciders are not kept waiting
    with pytest.raises(queue.Empty):
        watched.get(timeout=0.05)
    assert [delay for delay, _ in timers.held] == [0.05]  # one window for three publishes

    timers.fire()
    assert watched.get(timeout=5) == Gathered("topic", ("a0", "a1", "b0"))
    pubsub.publish("topic", ["c0"]).get(timeout=5)
    timers.fire()
    assert watched.get(timeout=5) == Gathered("topic", ("c0",))
    with pytest.raises(queue.Empty):
        watched.get(timeout=0.05)


def test_what_is_gathered_is_handed_on_when_asked_and_without_a_window_at_once() -> None:
    timers = HeldTimers()
    pubsub = PubSub.start(timers, 50).proxy()
    watcher = Recorder.start()
    watched = watcher.proxy().seen.get(timeout=5)
    pubsub.subscribe("topic", watcher, gathered=True).get(timeout=5)
    pubsub.publish("topic", ["left"]).get(timeout=5)
    pubsub.deliver_gathered().get(timeout=5)  # the hub's stop, before the watchers stop
    assert watched.get(timeout=5) == Gathered("topic", ("left",))
    timers.fire()  # the window that was open finds nothing more
    with pytest.raises(queue.Empty):
        watched.get(timeout=0.05)

    at_once = PubSub.start().proxy()
    at_once.subscribe("topic", watcher, gathered=True).get(timeout=5)
    at_once.publish("topic", ["now"]).get(timeout=5)
    assert watched.get(timeout=5) == Gathered("topic", ("now",))


def test_a_stopped_gathered_subscriber_is_dropped_and_the_others_still_hear() -> None:
    pubsub = PubSub.start().proxy()
    gone, alive = Recorder.start(), Recorder.start()
    seen = alive.proxy().seen.get(timeout=5)
    pubsub.subscribe("topic", gone, gathered=True).get(timeout=5)
    pubsub.subscribe("topic", alive, gathered=True).get(timeout=5)
    gone.stop()
    pubsub.publish("topic", ["e1"]).get(timeout=5)
    pubsub.publish("topic", ["e2"]).get(timeout=5)
    assert drain(seen, 2) == [Gathered("topic", ("e1",)), Gathered("topic", ("e2",))]
