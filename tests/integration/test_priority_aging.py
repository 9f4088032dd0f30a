"""Sustained urgent overload: aging gets a low task served; strict lanes starve it.

One agent takes 200 ms per task while urgent tasks arrive at 10 per second for
10 s (twice what it can do), with one low task submitted at the start.
"""

from __future__ import annotations

import threading
import time
from typing import Any, NamedTuple

from tests.integration.helpers import WsAgent, work_through

WORK_S = 0.2
URGENT_PER_S = 10
STREAM_S = 10.0


def paced_until(moment: float) -> None:
    """Pace a loop by the clock: return at ``moment`` (time.monotonic)."""
    threading.Event().wait(max(0.0, moment - time.monotonic()))


class Overload(NamedTuple):
    low_after: float | None  # seconds from the start; None: not by the stream's end
    before: list[str]  # the tasks the agent was given before the low one
    low: str
    urgent: list[str]
    agent: WsAgent


def overload(hub: Any) -> Overload:
    """Run the overload until the low task is assigned or the stream ends."""
    agent = hub.agent("worker")
    start = time.monotonic()
    # the first urgent task keeps the agent busy, so the low one has to queue
    urgent = [hub.submit("urgent-0", priority="urgent")]
    low = hub.submit("low", priority="low")

    def stream() -> None:
        for n in range(1, int(URGENT_PER_S * STREAM_S)):
            paced_until(start + n / URGENT_PER_S)
            urgent.append(hub.submit(f"urgent-{n}", priority="urgent"))

    submitter = threading.Thread(target=stream)
    submitter.start()
    before: list[str] = []
    low_after = None
    try:
        while time.monotonic() < start + STREAM_S:
            assign = agent.recv("task_assign", timeout=STREAM_S)
            if assign["task_id"] == low:
                low_after = time.monotonic() - start
                break
            before.append(assign["task_id"])
            paced_until(time.monotonic() + WORK_S)
            agent.send(
                {
                    "type": "task_complete",
                    "task_id": assign["task_id"],
                    "generation": assign["generation"],
                }
            )
    finally:
        submitter.join(timeout=STREAM_S + 5)
    return Overload(low_after, before, low, urgent, agent)


def test_with_aging_a_low_task_is_served_under_sustained_urgent_load(make_hub):
    hub = make_hub(priority_aging_ms=1000)

    low_after, before, low, urgent, _ = overload(hub)

    # three periods make it urgent, and it is older than every urgent task
    assert low_after is not None and low_after < 6.0, (low_after, len(before))
    assert set(before) <= set(urgent)
    task = hub.task(low)
    assert (task["priority"], task["status"]) == ("low", "assigned")
    assert [entry["event"] for entry in task["history"]] == ["queued", "assigned"]
    # the urgent stream was still backed up when the low task went
    assert any(hub.task(task_id)["status"] == "queued" for task_id in urgent)


def test_with_strict_lanes_a_low_task_waits_until_the_urgent_stream_ends(make_hub):
    hub = make_hub(priority_aging_ms=0)

    low_after, before, low, urgent, agent = overload(hub)

    assert low_after is None, low_after
    assert len(urgent) == URGENT_PER_S * STREAM_S
    assert hub.task(low)["status"] == "queued"
    assert hub.task(low)["effective_priority"] == "low"
    # it goes only once every urgent task has been served
    order = work_through(agent, len(urgent) - len(before) + 1)
    assert order[-1] == low
