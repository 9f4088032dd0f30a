import queue
from pathlib import Path
from typing import Any

import pykka
import pytest

from agentcom.actors.base import HubActor
from agentcom.actors.scheduler import OFFER_PER_GROUP, Scheduler, SchedulerTiming
from agentcom.actors.task_queue import TaskQueue
from agentcom.messages import (
    AGENTS_TOPIC,
    QUEUE_TOPIC,
    AgentIdle,
    AgentLeft,
    Assignment,
    AssignmentMade,
    IdleAgent,
    Priority,
    TaskQueued,
    TaskSpec,
)
from agentcom.timers import Timers
from tests.waiting import wait_until

from .conftest import ManualClock

LONG = SchedulerTiming(
    stuck_threshold_ms=600_000, acceptance_timeout_ms=600_000, sweep_interval_ms=600_000
)


class CountingTaskQueue(TaskQueue):
    """The real TaskQueue, counting matching rounds (the scheduler must not spin) and
    the most agents offered in one round (a round must not scan every idle agent)."""

    rounds = 0
    most_offered = 0

    def assign_next(self, agents: Any) -> list[Assignment]:
        CountingTaskQueue.rounds += 1
        CountingTaskQueue.most_offered = max(CountingTaskQueue.most_offered, len(agents))
        return super().assign_next(agents)


class FakeFsm(HubActor):
    """Takes offers (or refuses them) and reports each to the test."""

    def __init__(
        self, agent_id: str, offers: queue.Queue[tuple[str, Assignment]], takes: bool
    ) -> None:
        super().__init__()
        self.agent_id, self.offers, self.takes = agent_id, offers, takes

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, AssignmentMade):
            self.offers.put((self.agent_id, message.assignment))
            return self.takes
        return None


class Rig:
    def __init__(
        self,
        tmp_path: Path,
        pubsub_ref: pykka.ActorRef[Any],
        timers: Timers,
        timing: SchedulerTiming,
        queue_class: type[CountingTaskQueue] = CountingTaskQueue,
    ) -> None:
        CountingTaskQueue.rounds = 0
        CountingTaskQueue.most_offered = 0
        self.pubsub_ref = pubsub_ref
        self.queue_ref = queue_class.start(tmp_path, pubsub_ref, ManualClock())
        self.task_queue = self.queue_ref.proxy()
        self.scheduler_ref = Scheduler.start(self.queue_ref, pubsub_ref, timers, timing)
        self.scheduler_ref.proxy().idle_agents().get(timeout=5)  # subscribed: on_start is done
        self.offers: queue.Queue[tuple[str, Assignment]] = queue.Queue()

    def agent(
        self, agent_id: str, *caps: str, unresponsive: bool = False, takes: bool = True
    ) -> pykka.ActorRef[Any]:
        ref = FakeFsm.start(agent_id, self.offers, takes)
        idle = AgentIdle(agent_id, ref.actor_urn, ref, frozenset(caps), unresponsive)
        self.pubsub_ref.proxy().publish(AGENTS_TOPIC, [idle]).get(timeout=5)
        return ref

    def submit(self, description: str, **fields: Any) -> str:
        return str(
            self.task_queue.submit(TaskSpec(description, "tester", **fields)).get(timeout=5)[
                "task_id"
            ]
        )

    def settle(self) -> None:
        """Every event published so far has reached the scheduler and been handled."""
        self.pubsub_ref.proxy().publish(QUEUE_TOPIC, []).get(timeout=5)  # PubSub drained
        self.scheduler_ref.proxy().idle_agents().get(timeout=5)  # its events handled
        self.scheduler_ref.proxy().idle_agents().get(timeout=5)  # and the round they asked for

    def next_offer(self) -> tuple[str, str]:
        agent_id, assignment = self.offers.get(timeout=5)
        return agent_id, assignment.description


@pytest.fixture
def rig(tmp_path: Path, pubsub_ref: pykka.ActorRef[Any], timers: Timers) -> Rig:
    return Rig(tmp_path, pubsub_ref, timers, LONG)


def test_the_agent_idle_longest_gets_the_next_task(rig: Rig) -> None:
    for agent_id in ("first", "second", "third"):
        rig.agent(agent_id)
    rig.settle()

    for n in range(3):
        rig.submit(f"t{n}")
        assert rig.next_offer() == (["first", "second", "third"][n], f"t{n}")


def test_unresponsive_agents_get_work_only_when_no_other_capable_agent_is_idle(rig: Rig) -> None:
    rig.agent("flaky", unresponsive=True)
    rig.agent("steady")
    rig.settle()

    rig.submit("one")
    assert rig.next_offer() == ("steady", "one")
    rig.submit("two")
    assert rig.next_offer() == ("flaky", "two")


def test_tasks_needing_capabilities_wait_for_a_capable_agent(rig: Rig) -> None:
    rig.agent("plain")
    rig.settle()
    rig.submit("needs gpu", needed_capabilities=("gpu",))
    rig.submit("anyone", priority=Priority.LOW)
    assert rig.next_offer() == ("plain", "anyone")

    rig.agent("gpu-box", "gpu")
    assert rig.next_offer() == ("gpu-box", "needs gpu")


def test_a_refused_offer_goes_back_to_the_queue_at_once(rig: Rig) -> None:
    rig.agent("leaving", takes=False)
    rig.settle()
    task_id = rig.submit("work")
    rig.next_offer()

    rig.agent("stays")

    assert rig.next_offer() == ("stays", "work")
    history = rig.task_queue.get(task_id).get(timeout=5)["history"]
    assert [h["event"] for h in history] == ["queued", "assigned", "reclaimed", "assigned"]


def test_an_offer_to_a_stopped_fsm_goes_back_to_the_queue(rig: Rig) -> None:
    gone = rig.agent("gone")
    rig.settle()
    gone.stop()
    task_id = rig.submit("work")

    rig.agent("stays")

    assert rig.next_offer() == ("stays", "work")
    assert rig.task_queue.get(task_id).get(timeout=5)["assigned_to"] == "stays"


def test_an_agent_that_left_is_not_offered_work(rig: Rig) -> None:
    ref = rig.agent("left")
    rig.pubsub_ref.proxy().publish(AGENTS_TOPIC, [AgentLeft("left", ref.actor_urn)]).get(timeout=5)
    rig.settle()

    assert rig.scheduler_ref.proxy().idle_agents().get(timeout=5) == []


def test_a_burst_of_events_is_one_round_not_a_storm(rig: Rig) -> None:
    rig.agent("only", takes=True)
    rig.settle()
    rounds_before = CountingTaskQueue.rounds
    burst = [TaskQueued(f"task-{n}", "submitted") for n in range(200)]

    rig.pubsub_ref.proxy().publish(QUEUE_TOPIC, burst).get(timeout=5)
    rig.settle()

    assert CountingTaskQueue.rounds - rounds_before <= 2


def test_no_idle_agent_means_no_matching_round(rig: Rig) -> None:
    for n in range(20):
        rig.submit(f"t{n}")
    rig.settle()

    assert CountingTaskQueue.rounds == 0


def test_the_sweep_runs_on_its_interval(
    tmp_path: Path, pubsub_ref: pykka.ActorRef[Any], timers: Timers
) -> None:
    timing = SchedulerTiming(stuck_threshold_ms=1, acceptance_timeout_ms=1, sweep_interval_ms=50)
    clock = ManualClock()
    queue_ref = TaskQueue.start(tmp_path, pubsub_ref, clock)
    task_queue = queue_ref.proxy()
    task_id = task_queue.submit(TaskSpec("work", "tester")).get(timeout=5)["task_id"]
    task_queue.assign_next([IdleAgent("a1", frozenset())]).get(timeout=5)
    clock.advance(10)

    Scheduler.start(queue_ref, pubsub_ref, timers, timing)

    wait_until(
        lambda: task_queue.get(task_id).get(timeout=5)["status"] == "queued" or "not yet",
        what="sweep reclaiming the stuck task",
    )


def test_a_round_offers_a_bounded_number_of_agents_and_rounds_chain_until_done(rig: Rig) -> None:
    many = OFFER_PER_GROUP * 2 + 10
    for n in range(many):
        rig.agent(f"a{n}")
    rig.settle()

    for n in range(many):
        rig.submit(f"t{n}")

    offered_to = {rig.next_offer()[0] for _ in range(many)}
    assert len(offered_to) == many, "every idle agent got one task"
    assert CountingTaskQueue.most_offered <= OFFER_PER_GROUP


class FailingOnceTaskQueue(CountingTaskQueue):
    """The real TaskQueue whose first matching round fails, as when the commit of the
    batch holding it fails (a full disk): every reply of that batch is an error."""

    failed = False

    def assign_next(self, agents: Any) -> list[Assignment]:
        if not FailingOnceTaskQueue.failed:
            FailingOnceTaskQueue.failed = True
            raise RuntimeError("the batch holding this round was not committed")
        return super().assign_next(agents)


def test_a_failed_matching_round_does_not_stop_the_scheduler(
    tmp_path: Path, pubsub_ref: pykka.ActorRef[Any], timers: Timers
) -> None:
    FailingOnceTaskQueue.failed = False
    rig = Rig(tmp_path, pubsub_ref, timers, LONG, FailingOnceTaskQueue)
    rig.agent("a1")
    rig.submit("first")  # its round fails
    rig.settle()
    assert FailingOnceTaskQueue.failed
    assert rig.scheduler_ref.is_alive()
    rig.submit("second")  # the next event starts a round that works
    assert rig.next_offer() == ("a1", "first")
