import threading
from pathlib import Path
from typing import Any

import pykka
import pytest

from agentcom.actors.base import BatchingActor, CallbackFuture, HubActor
from agentcom.actors.death_watch import DeathWatch
from agentcom.actors.task_queue import TaskQueue
from agentcom.messages import TaskSpec

from .conftest import next_of


class Ledger(BatchingActor):
    """Records what it handled; its batch end waits for ``commit_gate``."""

    def __init__(self, gate: threading.Event, commit_gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate
        self.commit_gate = commit_gate
        self.log: list[str] = []

    def hold(self) -> None:
        self.gate.wait(timeout=5)

    def write(self, item: str) -> int:
        self.log.append(item)
        return len(self.log)

    def explode(self) -> None:
        raise ValueError("bad request")

    def end_batch(self) -> None:
        self.commit_gate.wait(timeout=5)
        self.log.append("commit")


def open_gates() -> tuple[threading.Event, threading.Event]:
    gate, commit_gate = threading.Event(), threading.Event()
    gate.set()
    commit_gate.set()
    return gate, commit_gate


def test_waiting_messages_share_one_end_batch_and_replies_follow_it() -> None:
    gate, commit_gate = threading.Event(), threading.Event()
    ledger = Ledger.start(gate, commit_gate).proxy()
    ledger.hold()  # keeps the actor busy while the next asks pile up
    replies = [ledger.write(f"w{i}") for i in range(5)]
    gate.set()

    with pytest.raises(pykka.Timeout):
        replies[0].get(timeout=0.3)  # handled, but the batch has not ended
    commit_gate.set()

    assert [future.get(timeout=5) for future in replies] == [1, 2, 3, 4, 5]
    # Reading the log is a message too, and ends a batch of its own.
    assert ledger.log.get(timeout=5)[:6] == ["w0", "w1", "w2", "w3", "w4", "commit"]


def test_a_failing_request_fails_alone() -> None:
    ledger = Ledger.start(*open_gates()).proxy()
    failing, fine = ledger.explode(), ledger.write("ok")

    with pytest.raises(ValueError, match="bad request"):
        failing.get(timeout=5)
    assert fine.get(timeout=5) == 1


def test_messages_after_stop_in_the_same_batch_get_actor_dead() -> None:
    gate, commit_gate = threading.Event(), threading.Event()
    commit_gate.set()
    ref = Ledger.start(gate, commit_gate)
    ref.proxy().hold()
    stopped = ref.stop(block=False)
    late = ref.proxy().write("too late") if ref.is_alive() else None
    gate.set()

    stopped.get(timeout=5)
    if late is not None:
        with pytest.raises(pykka.ActorDeadError):
            late.get(timeout=5)


def test_callback_future_calls_back_once_set_or_at_once_if_already_set() -> None:
    future = CallbackFuture()
    seen: list[Any] = []
    future.add_done_callback(lambda f: seen.append(f.get(timeout=0)))
    future.set(7)
    future.add_done_callback(lambda f: seen.append(f.get(timeout=0) * 2))

    assert seen == [7, 14]


def test_hub_actor_asks_return_callback_futures() -> None:
    ref = HubActor.start()
    assert isinstance(ref.ask("anything", block=False), CallbackFuture)


def test_death_watch_tells_every_watcher_once_with_the_notice(recorder: Any) -> None:
    ref, seen = recorder
    watch = DeathWatch(lambda reason: ("gone", reason))
    watch.watch(ref)

    assert watch.died("disconnected")
    assert not watch.died("again")
    watch.watch(ref)  # a late watcher hears at once

    assert next_of(seen, tuple) == ("gone", "disconnected")
    assert next_of(seen, tuple) == ("gone", "disconnected")
    assert seen.empty()


def test_death_watch_ignores_watchers_that_are_gone() -> None:
    ref = HubActor.start()
    watch = DeathWatch(lambda reason: reason)
    watch.watch(ref)
    ref.stop()

    assert watch.died("crashed")


class Sturdy(Ledger):
    survives_failed_tells = True


def test_an_actor_that_survives_failed_tells_keeps_handling_messages() -> None:
    sturdy = Sturdy.start(*open_gates())
    fragile = Ledger.start(*open_gates())

    sturdy.proxy().explode.defer()
    fragile.proxy().explode.defer()

    assert sturdy.proxy().write("still here").get(timeout=5) == 1
    with pytest.raises(pykka.ActorDeadError):
        fragile.proxy().write("gone").get(timeout=5)


class UnluckyQueue(TaskQueue):
    """The real TaskQueue whose first send after a commit fails."""

    unlucky = True

    def _flush(self) -> None:
        super()._flush()
        if UnluckyQueue.unlucky:
            UnluckyQueue.unlucky = False
            raise RuntimeError("the pub/sub hand-off broke after the commit")


def test_a_failure_after_the_commit_does_not_fail_the_committed_replies(
    tmp_path: Path, pubsub_ref: Any
) -> None:
    UnluckyQueue.unlucky = True
    queue = UnluckyQueue.start(tmp_path, pubsub_ref).proxy()
    queue.commit_observer = lambda seconds: 1 / 0  # a broken metrics hook, too
    reply = queue.submit(TaskSpec("work", "tester")).get(timeout=5)
    assert reply["status"] == "queued"  # not an error: the task is on disk
    assert queue.get(reply["task_id"]).get(timeout=5)["status"] == "queued"
