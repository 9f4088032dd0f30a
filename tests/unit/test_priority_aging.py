"""Priority aging: the effective lane of a queued task, in matching and on the wire."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pykka
import pytest

from agentcom.actors.task_queue import TaskQueue
from agentcom.config import config_from_args
from agentcom.matching import QueuedIndex, effective_priority
from agentcom.messages import IdleAgent, Priority, TaskSpec

from .conftest import ManualClock

PERIOD = 1_000


class Aging:
    """A QueuedIndex with aging, and the queue times it looks up."""

    def __init__(self, aging_ms: int = PERIOD) -> None:
        self.queued_at: dict[str, int] = {}
        self.index = QueuedIndex(aging_ms, self.queued_at.__getitem__)

    def add(self, task_id: str, seq: int, priority: Priority, needs: Any, queued_at: int) -> None:
        self.queued_at[task_id] = queued_at
        self.index.add(task_id, seq, priority, needs)


def agent(agent_id: str, *caps: str) -> IdleAgent:
    return IdleAgent(agent_id, frozenset(caps))


def test_the_effective_lane_rises_one_per_full_period_up_to_urgent() -> None:
    lanes = [effective_priority(Priority.LOW, 0, now, PERIOD) for now in (999, 1000, 2999, 3000)]
    assert lanes == [Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.URGENT]
    assert effective_priority(Priority.LOW, 0, 10 * PERIOD, PERIOD) is Priority.URGENT
    assert effective_priority(Priority.LOW, 0, 10 * PERIOD, 0) is Priority.LOW


def test_a_low_task_aged_three_periods_competes_as_urgent_and_the_older_goes_first() -> None:
    aging = Aging()
    aging.add("low-old", 1, Priority.LOW, (), queued_at=0)
    aging.add("urgent-new", 2, Priority.URGENT, (), queued_at=3 * PERIOD)
    aging.add("urgent-newer", 3, Priority.URGENT, (), queued_at=3 * PERIOD)

    pairs = aging.index.match([agent("a")], now=3 * PERIOD)

    assert pairs == [("low-old", "a")]


def test_short_of_three_periods_a_low_task_waits_behind_urgent() -> None:
    aging = Aging()
    aging.add("low-old", 1, Priority.LOW, (), queued_at=0)
    aging.add("urgent-new", 2, Priority.URGENT, (), queued_at=2 * PERIOD)
    aging.add("high-new", 3, Priority.HIGH, (), queued_at=2 * PERIOD)

    pairs = aging.index.match([agent("a"), agent("b"), agent("c")], now=3 * PERIOD - 1)

    # low-old competes as high (two periods): older than high-new, after urgent
    assert [task for task, _ in pairs] == ["urgent-new", "low-old", "high-new"]


def test_aging_zero_keeps_strict_lanes() -> None:
    aging = Aging(0)
    aging.add("low-old", 1, Priority.LOW, (), queued_at=0)
    aging.add("urgent-new", 2, Priority.URGENT, (), queued_at=100 * PERIOD)

    assert aging.index.match([agent("a")], now=1_000 * PERIOD) == [("urgent-new", "a")]


def test_an_aged_task_still_goes_only_to_an_agent_that_can_serve_it() -> None:
    aging = Aging()
    aging.add("low-needs-gpu", 1, Priority.LOW, ("gpu",), queued_at=0)
    aging.add("low-plain", 2, Priority.LOW, (), queued_at=0)
    aging.add("urgent-plain", 3, Priority.URGENT, (), queued_at=5 * PERIOD)

    pairs = aging.index.match([agent("plain"), agent("gpu-box", "gpu")], now=5 * PERIOD)

    # both low tasks compete as urgent and are older; the gpu task can only go
    # to gpu-box, the plain one goes to the first agent in order
    assert sorted(pairs) == [("low-needs-gpu", "gpu-box"), ("low-plain", "plain")]
    assert [task for task, _ in pairs] == ["low-needs-gpu", "low-plain"]
    assert "urgent-plain" in aging.index


def test_with_aging_on_agents_are_still_taken_in_the_order_given() -> None:
    aging = Aging()
    aging.add("t1", 1, Priority.NORMAL, (), queued_at=0)
    aging.add("t2", 2, Priority.NORMAL, (), queued_at=0)

    assert aging.index.match([agent("longest-idle"), agent("newest")], now=0) == [
        ("t1", "longest-idle"),
        ("t2", "newest"),
    ]


def test_with_aging_on_a_task_nobody_can_take_blocks_nothing() -> None:
    aging = Aging()
    aging.add("needs-gpu", 1, Priority.LOW, ("gpu",), queued_at=0)
    aging.add("plain-normal", 2, Priority.NORMAL, (), queued_at=0)

    assert aging.index.match([agent("a")], now=10 * PERIOD) == [("plain-normal", "a")]
    assert len(aging.index) == 1


@pytest.fixture
def aging_queue(tmp_path: Path, pubsub_ref: pykka.ActorRef[Any], clock: ManualClock) -> Any:
    ref = TaskQueue.start(tmp_path, pubsub_ref, clock, priority_aging_ms=PERIOD)
    yield ref.proxy()
    ref.stop()


def test_a_queued_task_shows_its_effective_priority_and_keeps_its_own(
    aging_queue: Any, clock: ManualClock
) -> None:
    spec = TaskSpec(description="later", submitted_by="tester", priority=Priority.LOW)
    task_id = aging_queue.submit(spec).get(timeout=5)["task_id"]
    assert aging_queue.get(task_id).get(timeout=5)["effective_priority"] == "low"

    clock.advance(2 * PERIOD)
    task = aging_queue.get(task_id).get(timeout=5)
    assert (task["priority"], task["effective_priority"]) == ("low", "high")
    assert [entry["event"] for entry in task["history"]] == ["queued"]

    aging_queue.assign_next([agent("a")]).get(timeout=5)
    task = aging_queue.get(task_id).get(timeout=5)
    assert (task["priority"], task["effective_priority"]) == ("low", None)


def test_the_aging_period_is_a_flag_and_an_env_var(capsys: pytest.CaptureFixture[str]) -> None:
    assert config_from_args([], {}).priority_aging_ms == 60_000
    assert config_from_args([], {"AGENTCOM_PRIORITY_AGING_MS": "0"}).priority_aging_ms == 0
    assert config_from_args(["--priority-aging-ms", "1000"], {}).priority_aging_ms == 1000
    with pytest.raises(SystemExit):
        config_from_args(["--priority-aging-ms", "-1"], {})
    assert "priority_aging_ms must be 0" in capsys.readouterr().err
