"""HubEvents on EVENTS_TOPIC: what each owning actor publishes, with which fields, and
only after its change is committed (a refused or failed request publishes nothing)."""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

import pykka
import pytest

from agentcom.actors.presence import Identity, Presence
from agentcom.actors.task_queue import TaskQueue
from agentcom.messages import (
    EVENTS_TOPIC,
    AgentAccepted,
    AssignmentMade,
    HubEvent,
    IdleAgent,
    Priority,
    ReclaimCause,
    StorageFull,
    TaskRefused,
    TaskSpec,
)
from agentcom.timers import Timers
from tests.waiting import wait_until

from .conftest import FakeLink, ManualClock
from .full_disk import OnFillableDisk


@pytest.fixture
def watched(
    pubsub_ref: pykka.ActorRef[Any], recorder: tuple[pykka.ActorRef[Any], queue.Queue[object]]
) -> queue.Queue[object]:
    ref, seen = recorder
    pubsub_ref.proxy().subscribe(EVENTS_TOPIC, ref).get(timeout=5)
    return seen


def drain(seen: queue.Queue[object], pubsub_ref: pykka.ActorRef[Any]) -> list[HubEvent]:
    """Every HubEvent published so far (PubSub is a barrier for what it was told)."""
    pubsub_ref.proxy().actor_urn.get(timeout=5)
    # The recorder handles what PubSub told it before it answers this.
    events = []
    while True:
        try:
            message = seen.get(timeout=0.3)
        except queue.Empty:
            return events
        assert isinstance(message, HubEvent), message
        events.append(message)


def submit(task_queue: Any, **fields: Any) -> str:
    spec = TaskSpec("work", "alice", **fields)
    return str(task_queue.submit(spec).get(timeout=5)["task_id"])


def assign(task_queue: Any, agent_id: str = "a1") -> Any:
    (assignment,) = task_queue.assign_next([IdleAgent(agent_id, frozenset({"py"}))]).get(timeout=5)
    return assignment


def test_a_tasks_life_is_published_in_order_with_its_fields(
    task_queue: Any, watched: queue.Queue[object], pubsub_ref: Any, clock: ManualClock
) -> None:
    task_id = submit(task_queue, priority=Priority.HIGH, needed_capabilities=("py",), max_retries=2)
    first = assign(task_queue)
    task_queue.accept(task_id, "a1").get(timeout=5)
    task_queue.progress(task_id, "a1", 42.5).get(timeout=5)
    task_queue.progress(task_id, "a1").get(timeout=5)
    assert task_queue.fail(task_id, "a1", first.generation, "boom").get(timeout=5) == "retried"
    second = assign(task_queue, "a2")
    task_queue.reject(task_id, "a2", "busy").get(timeout=5)
    third = assign(task_queue, "a3")
    assert task_queue.reclaim(task_id, third.generation, ReclaimCause.DISCONNECTED).get(timeout=5)
    fourth = assign(task_queue, "a4")
    task_queue.complete(task_id, "a4", fourth.generation, {"secret": 1}, 3).get(timeout=5)

    events = drain(watched, pubsub_ref)
    s = {"submitted_by": "alice", "task_id": task_id}
    assert [(e.type, e.fields) for e in events] == [
        ("task_queued", {**s, "priority": "high", "needed_capabilities": ["py"]}),
        ("task_assigned", {**s, "agent_id": "a1", "generation": first.generation}),
        ("task_accepted", {**s, "agent_id": "a1"}),
        ("task_progress", {**s, "agent_id": "a1", "progress": 42.5}),
        ("task_progress", {**s, "agent_id": "a1", "progress": None}),
        ("task_failed", {**s, "agent_id": "a1", "error": "boom", "retry_count": 1}),
        ("task_assigned", {**s, "agent_id": "a2", "generation": second.generation}),
        ("task_rejected", {**s, "agent_id": "a2", "reason": "busy"}),
        ("task_assigned", {**s, "agent_id": "a3", "generation": third.generation}),
        ("task_reclaimed", {**s, "agent_id": "a3", "cause": "disconnected"}),
        ("task_assigned", {**s, "agent_id": "a4", "generation": fourth.generation}),
        ("task_completed", {**s, "agent_id": "a4", "generation": fourth.generation}),
    ]
    for event in events:
        assert (event.task_id, event.submitted_by, event.timestamp) == (task_id, "alice", clock.now)
        assert event.agent_id == event.fields.get("agent_id")


def test_dead_letter_and_requeue_are_published(
    task_queue: Any, watched: queue.Queue[object], pubsub_ref: Any
) -> None:
    task_id = submit(task_queue, max_retries=0)
    assignment = assign(task_queue, "a1")
    task_queue.fail(task_id, "a1", assignment.generation, "fatal").get(timeout=5)
    task_queue.retry(task_id).get(timeout=5)

    events = drain(watched, pubsub_ref)
    assert [e.type for e in events] == [
        "task_queued",
        "task_assigned",
        "task_dead_letter",
        "task_requeued",
    ]
    dead, requeued = events[2], events[3]
    assert dead.fields == {
        "task_id": task_id,
        "agent_id": "a1",
        "error": "fatal",
        "submitted_by": "alice",
    }
    assert dead.agent_id == "a1"
    assert requeued.fields == {"task_id": task_id, "submitted_by": "alice"}


def test_an_overdue_task_is_published_as_reclaimed_with_cause_overdue(
    task_queue: Any, watched: queue.Queue[object], pubsub_ref: Any, clock: ManualClock
) -> None:
    task_id = submit(task_queue, complete_by=clock.now + 10)
    assign(task_queue, "a1")
    clock.advance(100)
    assert task_queue.sweep(10**9, 10**9).get(timeout=5) == 1

    events = drain(watched, pubsub_ref)
    assert events[-1].type == "task_reclaimed"
    assert events[-1].fields["cause"] == "overdue" and events[-1].fields["agent_id"] == "a1"
    assert events[-1].task_id == task_id


def test_a_refused_request_publishes_nothing(
    task_queue: Any, watched: queue.Queue[object], pubsub_ref: Any
) -> None:
    task_id = submit(task_queue)
    assignment = assign(task_queue, "a1")
    drain(watched, pubsub_ref)

    with pytest.raises(TaskRefused):
        task_queue.complete(task_id, "a1", assignment.generation + 1, None, None).get(timeout=5)
    with pytest.raises(TaskRefused):
        task_queue.accept(task_id, "someone-else").get(timeout=5)
    task_queue.progress(task_id, "someone-else", 10).get(timeout=5)  # stale: ignored
    assert task_queue.retry(task_id).get(timeout=5) is None  # not in the dead letter

    assert drain(watched, pubsub_ref) == []


class FillableQueue(OnFillableDisk, TaskQueue):
    """A TaskQueue on a disk the test fills."""


def test_a_change_the_store_refuses_publishes_nothing(
    tmp_path: Path,
    pubsub_ref: pykka.ActorRef[Any],
    clock: ManualClock,
    watched: queue.Queue[object],
) -> None:
    ref = FillableQueue.start(tmp_path, pubsub_ref, clock)
    task_queue, disk = ref.proxy(), ref.proxy().disk.get(timeout=5)
    task_id = submit(task_queue)
    drain(watched, pubsub_ref)

    for full in ("write", "commit"):
        disk.full = full
        with pytest.raises(StorageFull):
            submit(task_queue)
        # While full, a round answers "nothing assigned" rather than an error.
        assert task_queue.assign_next([IdleAgent("a1", frozenset())]).get(timeout=5) == []
        assert drain(watched, pubsub_ref) == [], full

    disk.full = None
    assign(task_queue, "a1")
    assert [e.type for e in drain(watched, pubsub_ref)] == ["task_assigned"]
    assert task_queue.get(task_id).get(timeout=5)["assigned_to"] == "a1"


class Announcements:
    def __call__(self, frame: dict[str, Any], about: str) -> None:
        pass


def identity(agent_id: str) -> Identity:
    return Identity(agent_id, agent_id.upper(), "idle", ["py"], frozenset({"py"}))


def test_presence_and_fsm_publish_joins_states_and_leaves(
    queue_ref: Any,
    task_queue: Any,
    pubsub_ref: Any,
    timers: Timers,
    clock: ManualClock,
    watched: queue.Queue[object],
) -> None:
    presence = Presence.start(
        queue_ref, pubsub_ref, timers, 60_000, Announcements(), clock=clock
    ).proxy()
    link = FakeLink()
    fsm_ref = presence.connect(identity("a1"), link).get(timeout=5)
    assert link.next_frame()["type"] == "identified"
    task_id = submit(task_queue)
    assignment = assign(task_queue, "a1")
    assert fsm_ref.ask(AssignmentMade(assignment), timeout=5)
    fsm_ref.tell(AgentAccepted(task_id))
    assert link.next_frame()["type"] == "task_assign"
    assert link.next_frame()["status"] == "accepted"
    fsm_ref.tell(AgentAccepted(task_id))  # accepted again: no change, no event
    assert link.next_frame()["status"] == "accepted"
    link.close("disconnected")
    wait_until(lambda: presence.count().get(timeout=5) == 0 or "still there", what="a1 gone")

    agent_events = [
        (e.type, e.fields) for e in drain(watched, pubsub_ref) if e.type.startswith("agent_")
    ]
    state = {"agent_id": "a1", "flags": []}
    assert agent_events == [
        (
            "agent_joined",
            {"agent_id": "a1", "name": "A1", "capabilities": ["py"], "connected_at": clock.now},
        ),
        ("agent_state", {**state, "fsm_state": "idle", "current_task_id": None}),
        ("agent_state", {**state, "fsm_state": "assigned", "current_task_id": task_id}),
        ("agent_state", {**state, "fsm_state": "working", "current_task_id": task_id}),
        ("agent_state", {**state, "fsm_state": "offline", "current_task_id": task_id}),
        ("agent_left", {"agent_id": "a1"}),
    ]


def test_an_unresponsive_flag_is_published_as_an_agent_state(
    queue_ref: Any,
    task_queue: Any,
    pubsub_ref: Any,
    timers: Timers,
    clock: ManualClock,
    watched: queue.Queue[object],
) -> None:
    presence = Presence.start(
        queue_ref, pubsub_ref, timers, 50, Announcements(), clock=clock
    ).proxy()
    link = FakeLink()
    fsm_ref = presence.connect(identity("a1"), link).get(timeout=5)
    submit(task_queue)
    assert fsm_ref.ask(AssignmentMade(assign(task_queue, "a1")), timeout=5)

    def flagged() -> bool | list[Any]:
        states = [e.fields for e in drain(watched, pubsub_ref) if e.type == "agent_state"]
        seen.extend(states)
        return any(s["flags"] == ["unresponsive"] for s in seen) or seen

    seen: list[Any] = []
    wait_until(flagged, what="an unresponsive agent_state")
    last = next(s for s in seen if s["flags"] == ["unresponsive"])
    assert (last["fsm_state"], last["current_task_id"]) == ("idle", None)
