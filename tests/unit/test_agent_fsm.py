import time
from pathlib import Path
from typing import Any

import pykka
import pytest

from agentcom.actors.agent_fsm import TRANSITIONS, AgentFSM, FsmState, InvalidTransition
from agentcom.actors.task_queue import TaskQueue
from agentcom.clock import Clock, now_ms
from agentcom.messages import (
    AGENTS_TOPIC,
    AgentAccepted,
    AgentCompleted,
    AgentFailed,
    AgentIdle,
    AgentRecovering,
    AgentRejected,
    AgentReportedProgress,
    AgentStopped,
    AssignmentMade,
    ConnectionClosed,
    IdleAgent,
    ReclaimCause,
    StorageFull,
    TaskSpec,
)
from agentcom.timers import Timers

from .conftest import FakeLink, next_of


@pytest.fixture
def idle_events(pubsub_ref: pykka.ActorRef[Any], recorder: Any) -> Any:
    ref, seen = recorder
    pubsub_ref.proxy().subscribe(AGENTS_TOPIC, ref).get(timeout=5)
    return seen


def start_fsm(
    queue_ref: pykka.ActorRef[Any],
    pubsub_ref: pykka.ActorRef[Any],
    timers: Timers,
    link: FakeLink,
    acceptance_timeout_ms: int = 60_000,
    watchers: tuple[pykka.ActorRef[Any], ...] = (),
    clock: Clock = now_ms,
) -> pykka.ActorRef[Any]:
    ref = AgentFSM.start(
        agent_id="a1",
        capabilities=frozenset({"code"}),
        link=link,
        task_queue=queue_ref,
        pubsub=pubsub_ref,
        timers=timers,
        acceptance_timeout_ms=acceptance_timeout_ms,
        watchers=(queue_ref, *watchers),
        clock=clock,
    )
    assert link.next_frame() == {"type": "identified", "agent_id": "a1"}
    return ref


def offer(task_queue: Any, fsm_ref: pykka.ActorRef[Any], link: FakeLink) -> dict[str, Any]:
    task_queue.submit(TaskSpec("work", "tester")).get(timeout=5)
    (assignment,) = task_queue.assign_next([IdleAgent("a1", frozenset())]).get(timeout=5)
    assert fsm_ref.ask(AssignmentMade(assignment), timeout=5) is True
    frame = link.next_frame()
    assert frame["type"] == "task_assign"
    return frame


def state_of(fsm_ref: pykka.ActorRef[Any]) -> dict[str, Any]:
    snapshot: dict[str, Any] = fsm_ref.proxy().snapshot().get(timeout=5)
    return snapshot


def test_every_state_has_a_row_and_offline_is_final() -> None:
    assert set(TRANSITIONS) == set(FsmState)
    assert TRANSITIONS[FsmState.OFFLINE] == set()
    assert all(
        FsmState.OFFLINE in targets
        for s, targets in TRANSITIONS.items()
        if s is not FsmState.OFFLINE
    )


def test_a_new_fsm_announces_itself_idle(
    queue_ref: Any, pubsub_ref: Any, timers: Timers, idle_events: Any
) -> None:
    start_fsm(queue_ref, pubsub_ref, timers, FakeLink())

    idle = next_of(idle_events, AgentIdle)
    assert (idle.agent_id, idle.capabilities, idle.unresponsive) == (
        "a1",
        frozenset({"code"}),
        False,
    )


def test_assign_accept_complete_goes_idle_again(
    queue_ref: Any, task_queue: Any, pubsub_ref: Any, timers: Timers, idle_events: Any
) -> None:
    link = FakeLink()
    fsm = start_fsm(queue_ref, pubsub_ref, timers, link)
    next_of(idle_events, AgentIdle)
    frame = offer(task_queue, fsm, link)
    assert state_of(fsm)["fsm_state"] == "assigned"

    fsm.tell(AgentAccepted(frame["task_id"]))
    assert link.next_frame() == {
        "type": "task_ack",
        "task_id": frame["task_id"],
        "status": "accepted",
    }
    assert state_of(fsm)["fsm_state"] == "working"

    fsm.tell(AgentReportedProgress(frame["task_id"], blocked=True))
    assert state_of(fsm)["fsm_state"] == "blocked"
    fsm.tell(AgentReportedProgress(frame["task_id"], blocked=False))
    assert state_of(fsm)["fsm_state"] == "working"

    fsm.tell(AgentCompleted(frame["task_id"], frame["generation"], {"ok": 1}, 3))
    assert link.next_frame()["status"] == "complete"
    assert state_of(fsm) == {
        "agent_id": "a1",
        "fsm_state": "idle",
        "current_task_id": None,
        "flags": [],
    }
    assert next_of(idle_events, AgentIdle).agent_id == "a1"
    assert task_queue.get(frame["task_id"]).get(timeout=5)["status"] == "completed"


def test_an_offer_to_a_busy_fsm_is_refused(
    queue_ref: Any, task_queue: Any, pubsub_ref: Any, timers: Timers
) -> None:
    link = FakeLink()
    fsm = start_fsm(queue_ref, pubsub_ref, timers, link)
    offer(task_queue, fsm, link)
    task_queue.submit(TaskSpec("second", "tester")).get(timeout=5)
    (second,) = task_queue.assign_next([IdleAgent("a1", frozenset())]).get(timeout=5)

    assert fsm.ask(AssignmentMade(second), timeout=5) is False


def test_refused_completion_answers_with_the_reason_and_keeps_the_task(
    queue_ref: Any, task_queue: Any, pubsub_ref: Any, timers: Timers
) -> None:
    link = FakeLink()
    fsm = start_fsm(queue_ref, pubsub_ref, timers, link)
    frame = offer(task_queue, fsm, link)

    fsm.tell(AgentCompleted(frame["task_id"], frame["generation"] + 5, None, None))
    assert link.next_frame() == {"type": "error", "error": "task_complete_failed: stale_generation"}
    fsm.tell(AgentFailed("task-nope", 1, "x"))
    assert link.next_frame() == {"type": "error", "error": "task_fail_failed: not_found"}
    assert state_of(fsm)["current_task_id"] == frame["task_id"]


def test_failure_and_rejection_are_acknowledged_with_the_outcome(
    queue_ref: Any, task_queue: Any, pubsub_ref: Any, timers: Timers
) -> None:
    link = FakeLink()
    fsm = start_fsm(queue_ref, pubsub_ref, timers, link)
    frame = offer(task_queue, fsm, link)
    fsm.tell(AgentFailed(frame["task_id"], frame["generation"], "broke"))
    assert link.next_frame()["status"] == "retried"

    frame = offer(task_queue, fsm, link)
    fsm.tell(AgentRejected(frame["task_id"], "busy"))
    assert link.next_frame()["status"] == "rejected"
    assert state_of(fsm)["fsm_state"] == "idle"


def test_acceptance_timeout_reclaims_and_flags_unresponsive_until_an_accept(
    queue_ref: Any, task_queue: Any, pubsub_ref: Any, timers: Timers, idle_events: Any
) -> None:
    link = FakeLink()
    fsm = start_fsm(queue_ref, pubsub_ref, timers, link, acceptance_timeout_ms=100)
    next_of(idle_events, AgentIdle)
    frame = offer(task_queue, fsm, link)

    flagged = next_of(idle_events, AgentIdle)  # idle again once the timer fired

    told = link.next_frame()
    assert told["type"] == "task_cancelled"
    assert (told["task_id"], told["reason"]) == (frame["task_id"], "acceptance_timeout")
    assert flagged.unresponsive
    assert state_of(fsm)["flags"] == ["unresponsive"]
    task = task_queue.get(frame["task_id"]).get(timeout=5)
    assert task["status"] == "queued"
    assert task["history"][-1]["details"]["cause"] == "acceptance_timeout"

    frame = offer(task_queue, fsm, link)
    fsm.tell(AgentAccepted(frame["task_id"]))
    link.next_frame()
    assert state_of(fsm)["flags"] == []


def test_connection_death_stops_the_fsm_and_reclaims_its_task_at_once(
    queue_ref: Any, task_queue: Any, pubsub_ref: Any, timers: Timers, recorder: Any
) -> None:
    watcher, seen = recorder
    link = FakeLink()
    fsm = start_fsm(queue_ref, pubsub_ref, timers, link, watchers=(watcher,))
    frame = offer(task_queue, fsm, link)

    link.close("disconnected")

    stopped = next_of(seen, AgentStopped)
    assert (stopped.task_id, stopped.generation, stopped.reason) == (
        frame["task_id"],
        frame["generation"],
        "disconnected",
    )
    task = task_queue.get(frame["task_id"]).get(timeout=5)
    assert task["status"] == "queued"
    assert task["history"][-1]["details"]["cause"] == "disconnected"
    assert not fsm.is_alive()


def test_a_crashed_fsm_has_its_task_reclaimed(
    queue_ref: Any, task_queue: Any, pubsub_ref: Any, timers: Timers, recorder: Any
) -> None:
    watcher, seen = recorder
    link = FakeLink()
    fsm = start_fsm(queue_ref, pubsub_ref, timers, link, watchers=(watcher,))
    frame = offer(task_queue, fsm, link)
    link.fail_sends = True

    fsm.tell(AgentAccepted(frame["task_id"]))  # the ack cannot be written: the FSM crashes

    assert next_of(seen, AgentStopped).reason == "crashed"
    task = task_queue.get(frame["task_id"]).get(timeout=5)
    assert task["history"][-1]["details"]["cause"] == "crashed"
    assert link.closed == ["internal_error"]


def test_a_restarted_fsm_picks_up_the_task_still_assigned_to_its_agent(
    queue_ref: Any, task_queue: Any, pubsub_ref: Any, timers: Timers
) -> None:
    task_queue.submit(TaskSpec("work", "tester")).get(timeout=5)
    (assignment,) = task_queue.assign_next([IdleAgent("a1", frozenset())]).get(timeout=5)
    task_queue.accept(assignment.task_id, "a1").get(timeout=5)
    link = FakeLink()

    fsm = start_fsm(queue_ref, pubsub_ref, timers, link)

    assert state_of(fsm)["fsm_state"] == "working"
    fsm.tell(AgentRecovering(assignment.task_id))
    assert link.next_frame() == {
        "type": "task_continue",
        "task_id": assignment.task_id,
        "generation": assignment.generation,
    }
    fsm.tell(AgentRecovering("task-other"))
    assert link.next_frame() == {"type": "task_reassign", "task_id": "task-other"}


def test_stop_on_replacement_reports_replaced(
    queue_ref: Any, task_queue: Any, pubsub_ref: Any, timers: Timers
) -> None:
    link = FakeLink()
    fsm = start_fsm(queue_ref, pubsub_ref, timers, link)
    frame = offer(task_queue, fsm, link)

    fsm.tell(ConnectionClosed("replaced"))
    fsm.stop(timeout=5)

    task = task_queue.get(frame["task_id"]).get(timeout=5)
    assert task["history"][-1]["details"]["cause"] == "replaced"


def test_an_invalid_transition_is_refused() -> None:
    fsm = AgentFSM.__new__(AgentFSM)
    fsm.state = FsmState.IDLE
    fsm.log = pytest.importorskip("structlog").get_logger()

    with pytest.raises(InvalidTransition):
        fsm._move(FsmState.WORKING)


def test_an_offer_of_the_assignment_already_held_counts_as_delivered(
    queue_ref: Any, task_queue: Any, pubsub_ref: Any, timers: Timers, clock: Any
) -> None:
    task_queue.submit(TaskSpec("work", "tester")).get(timeout=5)
    (assignment,) = task_queue.assign_next([IdleAgent("a1", frozenset())]).get(timeout=5)
    link = FakeLink()
    fsm = start_fsm(queue_ref, pubsub_ref, timers, link, clock=clock)  # picks it up
    fsm.tell(AgentRecovering(assignment.task_id))
    assert link.next_frame()["type"] == "task_continue"

    assert fsm.ask(AssignmentMade(assignment), timeout=5) is True

    assert task_queue.get(assignment.task_id).get(timeout=5)["status"] == "assigned"
    assert state_of(fsm)["current_task_id"] == assignment.task_id


def test_an_agent_that_says_busy_is_not_offered_work_again_at_once(
    queue_ref: Any, task_queue: Any, pubsub_ref: Any, timers: Timers, idle_events: Any
) -> None:
    link = FakeLink()
    fsm = start_fsm(queue_ref, pubsub_ref, timers, link)
    next_of(idle_events, AgentIdle)
    frame = offer(task_queue, fsm, link)

    fsm.tell(AgentRejected(frame["task_id"], "busy"))
    rejected_at = time.monotonic()

    assert link.next_frame()["status"] == "rejected"
    next_of(idle_events, AgentIdle)
    assert time.monotonic() - rejected_at >= 0.9, "idle announced before the busy backoff"


class FullOnceTaskQueue(TaskQueue):
    """The real TaskQueue whose first reclaim meets a full disk."""

    refused = 0

    def reclaim(self, task_id: str, generation: int, cause: ReclaimCause) -> bool:
        if FullOnceTaskQueue.refused == 0:
            FullOnceTaskQueue.refused += 1
            raise StorageFull()
        return super().reclaim(task_id, generation, cause)


def test_an_acceptance_timeout_on_a_full_disk_is_retried_not_a_crash(
    tmp_path: Path, pubsub_ref: Any, timers: Timers, idle_events: Any
) -> None:
    FullOnceTaskQueue.refused = 0
    queue_ref = FullOnceTaskQueue.start(tmp_path, pubsub_ref, now_ms)
    link = FakeLink()
    fsm = start_fsm(queue_ref, pubsub_ref, timers, link, acceptance_timeout_ms=100)
    next_of(idle_events, AgentIdle)
    frame = offer(queue_ref.proxy(), fsm, link)

    flagged = next_of(idle_events, AgentIdle)  # idle again once the retried reclaim went through

    assert FullOnceTaskQueue.refused == 1
    assert flagged.unresponsive and fsm.is_alive()
    task = queue_ref.proxy().get(frame["task_id"]).get(timeout=5)
    assert task["history"][-1]["details"]["cause"] == "acceptance_timeout"
