"""Fixtures for in-process actor tests: real actors on a temp store, a fake socket link."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from agentcom.actors.death_watch import DeathWatch
from agentcom.actors.pubsub import PubSub
from agentcom.actors.task_queue import TaskQueue
from agentcom.messages import ConnectionClosed
from agentcom.timers import Timers


class ManualClock:
    """A clock tests move by hand, so sweeps need no sleeping."""

    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


class FakeLink:
    """Stands in for ``bridge.Connection``: frames land in a queue the test reads."""

    def __init__(self) -> None:
        self.frames: queue.Queue[dict[str, Any]] = queue.Queue()
        self.closed: list[str] = []
        self.fail_sends = False
        self.death_watch = DeathWatch(ConnectionClosed)

    def send(self, frame: dict[str, Any]) -> None:
        if self.fail_sends:
            raise RuntimeError("socket write failed")
        self.frames.put(frame)

    def send_encoded(self, text: str) -> None:
        self.send(json.loads(text))

    def close(self, reason: str) -> None:
        self.closed.append(reason)
        self.death_watch.died(reason)

    def watch(self, watcher: pykka.ActorRef[Any]) -> None:
        self.death_watch.watch(watcher)

    def next_frame(self, timeout: float = 5.0) -> dict[str, Any]:
        return self.frames.get(timeout=timeout)


@pytest.fixture(autouse=True)
def stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def timers() -> Iterator[Timers]:
    timers = Timers()
    yield timers
    timers.stop()


@pytest.fixture
def pubsub_ref() -> pykka.ActorRef[Any]:
    return PubSub.start()


@pytest.fixture
def queue_ref(
    tmp_path: Path, pubsub_ref: pykka.ActorRef[Any], clock: ManualClock
) -> pykka.ActorRef[Any]:
    return TaskQueue.start(tmp_path, pubsub_ref, clock)


@pytest.fixture
def task_queue(queue_ref: pykka.ActorRef[Any]) -> Any:
    return queue_ref.proxy()


class Recorder(pykka.ThreadingActor):
    """Subscribes to a topic or watches something; keeps what it is told."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: queue.Queue[object] = queue.Queue()

    def on_receive(self, message: Any) -> None:
        self.seen.put(message)


@pytest.fixture
def recorder() -> tuple[pykka.ActorRef[Any], queue.Queue[object]]:
    ref = Recorder.start()
    return ref, ref.proxy().seen.get()


def next_of(seen: queue.Queue[object], kind: type, timeout: float = 5.0) -> Any:
    """The next message of ``kind``, skipping others; fails after ``timeout``."""
    while True:
        message = seen.get(timeout=timeout)
        if isinstance(message, kind):
            return message


def next_event(seen: queue.Queue[object], kind: str, timeout: float = 5.0) -> Any:
    """The next ``HubEvent`` of type ``kind``, skipping anything else."""
    from agentcom.messages import HubEvent

    while True:
        message = seen.get(timeout=timeout)
        if isinstance(message, HubEvent) and message.type == kind:
            return message
