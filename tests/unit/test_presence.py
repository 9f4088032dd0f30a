from typing import Any

import pykka

from agentcom.actors.presence import Identity, Presence
from agentcom.messages import AssignmentMade, IdleAgent, TaskSpec
from agentcom.timers import Timers
from tests.waiting import wait_until

from .conftest import FakeLink


class Announcements:
    """Stands in for the socket registry's ``announce``: keeps what Presence announced."""

    def __init__(self) -> None:
        self.frames: list[tuple[dict[str, Any], str]] = []

    def __call__(self, frame: dict[str, Any], about: str) -> None:
        self.frames.append((frame, about))


def identity(agent_id: str) -> Identity:
    return Identity(agent_id, agent_id.upper(), "idle", ["code"], frozenset({"code"}))


def connect(presence: Any, agent_id: str) -> tuple[FakeLink, pykka.ActorRef[Any]]:
    link = FakeLink()
    fsm_ref = presence.connect(identity(agent_id), link).get(timeout=5)
    assert link.next_frame()["type"] == "identified"
    return link, fsm_ref


def test_a_second_connection_replaces_the_first_and_reclaims_its_task(
    queue_ref: Any, task_queue: Any, pubsub_ref: Any, timers: Timers, clock: Any
) -> None:
    presence = Presence.start(
        queue_ref, pubsub_ref, timers, 60_000, Announcements(), clock=clock
    ).proxy()
    old_link, old_fsm = connect(presence, "a1")
    task_queue.submit(TaskSpec("work", "tester")).get(timeout=5)
    (assignment,) = task_queue.assign_next([IdleAgent("a1", frozenset())]).get(timeout=5)
    assert old_fsm.ask(AssignmentMade(assignment), timeout=5)

    _, new_fsm = connect(presence, "a1")

    assert old_link.closed == ["replaced"]
    assert not old_fsm.is_alive()
    task = task_queue.get(assignment.task_id).get(timeout=5)
    assert task["status"] == "queued"
    assert task["history"][-1]["details"]["cause"] == "replaced"
    assert new_fsm.proxy().snapshot().get(timeout=5)["fsm_state"] == "idle"
    assert presence.count().get(timeout=5) == 1


def test_every_change_is_announced_once_about_its_agent(
    queue_ref: Any, pubsub_ref: Any, timers: Timers, clock: Any
) -> None:
    announced = Announcements()
    presence = Presence.start(queue_ref, pubsub_ref, timers, 60_000, announced, clock=clock).proxy()
    connect(presence, "a1")
    second_link, _ = connect(presence, "a2")
    presence.set_status("a1", "reviewing").get(timeout=5)
    second_link.close("disconnected")
    wait_until(lambda: presence.count().get(timeout=5) == 1 or "not yet one", what="a2 gone")

    assert [(frame["type"], about) for frame, about in announced.frames] == [
        ("agent_joined", "a1"),
        ("agent_joined", "a2"),
        ("status_changed", "a1"),
        ("agent_left", "a2"),
    ]
    joined = announced.frames[1][0]["agent"]
    assert (joined["agent_id"], joined["name"], joined["capabilities"]) == ("a2", "A2", ["code"])
    assert announced.frames[2][0]["agent"]["status"] == "reviewing"
    (listed,) = presence.list_agents().get(timeout=5)
    assert (listed["agent_id"], listed["name"], listed["fsm_state"]) == ("a1", "A1", "idle")
    (state,) = presence.agent_states("a1").get(timeout=5)
    assert state["current_task_id"] is None
    assert presence.agent_states("a2").get(timeout=5) == []


def test_a_task_the_sweep_takes_back_frees_its_agent(
    queue_ref: Any, task_queue: Any, pubsub_ref: Any, timers: Timers, clock: Any
) -> None:
    presence = Presence.start(
        queue_ref, pubsub_ref, timers, 60_000, Announcements(), clock=clock
    ).proxy()
    _, fsm = connect(presence, "a1")
    task_queue.submit(TaskSpec("work", "tester")).get(timeout=5)
    (assignment,) = task_queue.assign_next([IdleAgent("a1", frozenset())]).get(timeout=5)
    assert fsm.ask(AssignmentMade(assignment), timeout=5)
    task_queue.accept(assignment.task_id, "a1").get(timeout=5)
    clock.advance(10_000)

    task_queue.sweep(stuck_threshold_ms=1_000, acceptance_timeout_ms=1_000).get(timeout=5)

    wait_until(
        lambda: (state := fsm.proxy().snapshot().get(timeout=5))["fsm_state"] == "idle" or state,
        what="the FSM letting go of the swept task",
    )


def test_an_overdue_task_that_goes_to_the_dead_letter_frees_its_agent(
    queue_ref: Any, task_queue: Any, pubsub_ref: Any, timers: Timers, clock: Any
) -> None:
    presence = Presence.start(
        queue_ref, pubsub_ref, timers, 60_000, Announcements(), clock=clock
    ).proxy()
    _, fsm = connect(presence, "a1")
    task_queue.submit(TaskSpec("work", "tester", max_retries=0, complete_by=clock.now + 10)).get(
        timeout=5
    )
    (assignment,) = task_queue.assign_next([IdleAgent("a1", frozenset())]).get(timeout=5)
    assert fsm.ask(AssignmentMade(assignment), timeout=5)
    clock.advance(100)

    task_queue.sweep(stuck_threshold_ms=60_000, acceptance_timeout_ms=60_000).get(timeout=5)

    assert task_queue.get(assignment.task_id).get(timeout=5)["status"] == "dead_letter"
    wait_until(
        lambda: (state := fsm.proxy().snapshot().get(timeout=5))["fsm_state"] == "idle" or state,
        what="the FSM letting go of the dead-lettered task",
    )
