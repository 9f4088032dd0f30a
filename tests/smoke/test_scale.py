"""TEST-03: four agents share a mixed-priority load evenly, and no lane starves.

Proves two truths: 4 agents processing 20 tasks each complete 3 to 7 (5 ± 2);
and no priority lane starves when urgent, high, normal and low are mixed.

TEST-03 queues the whole batch before the agents connect, lowest lane first.
So all 20 tasks wait together, and only the hub's lane order can get the
urgent ones assigned before the low ones: first-in first-out across lanes, or
lanes walked the wrong way, would hand out the low ones first. TEST-03b feeds
tasks to agents that are already connected, so low tasks keep arriving
between urgent ones and must still be picked up.
"""

from __future__ import annotations

from collections import Counter
from statistics import mean

import pytest

from agentcom.hub import HubThread
from tests.smoke.helpers.agents import AgentPool
from tests.smoke.helpers.assertions import (
    Task,
    assert_all_completed,
    wait_for_completion_acks,
)
from tests.smoke.helpers.http import submit_task

pytestmark = pytest.mark.smoke

AGENT_COUNT = 4
LOWEST_LANE_FIRST = ["low"] * 4 + ["normal"] * 8 + ["high"] * 4 + ["urgent"] * 4
ALTERNATING_LANES = ["urgent", "low"] * 6
MIN_PER_AGENT, MAX_PER_AGENT = 3, 7
COMPLETION_TIMEOUT_S = 30.0
ACK_TIMEOUT_S = 5.0


def submit_in_lanes(hub: HubThread, token: str, lanes: list[str]) -> list[str]:
    """One task per entry of `lanes`, submitted one after another; the task ids."""
    return [
        submit_task(hub.http_url, f"Write number {n} to file", token, priority=lane)
        for n, lane in enumerate(lanes, start=1)
    ]


def completed_per_lane(tasks: list[Task]) -> Counter[str]:
    return Counter(task["priority"] for task in tasks if task["status"] == "completed")


def test_twenty_mixed_priority_tasks_spread_evenly_over_four_agents(
    hub: HubThread, agents: AgentPool, submitter_token: str
) -> None:
    """TEST-03: 4 urgent + 4 high + 8 normal + 4 low tasks at once, 4 agents."""
    task_ids = submit_in_lanes(hub, submitter_token, LOWEST_LANE_FIRST)
    sims = agents.start_many("smoke-scale", AGENT_COUNT)

    tasks = assert_all_completed(hub, task_ids, timeout=COMPLETION_TIMEOUT_S)

    completed_by_agent = wait_for_completion_acks(sims, len(task_ids), timeout=ACK_TIMEOUT_S)
    uneven = [n for n in completed_by_agent.values() if not MIN_PER_AGENT <= n <= MAX_PER_AGENT]
    assert not uneven, completed_by_agent

    assert completed_per_lane(tasks) == Counter(LOWEST_LANE_FIRST)

    assigned_at = {
        lane: mean(task["assigned_at"] for task in tasks if task["priority"] == lane)
        for lane in ("urgent", "low")
    }
    assert assigned_at["urgent"] <= assigned_at["low"], assigned_at


def test_low_priority_tasks_complete_between_urgent_ones(
    hub: HubThread, agents: AgentPool, submitter_token: str
) -> None:
    """TEST-03b: 12 tasks submitted one at a time, alternating urgent and low."""
    agents.start_many("smoke-lanes", AGENT_COUNT)
    task_ids = submit_in_lanes(hub, submitter_token, ALTERNATING_LANES)

    tasks = assert_all_completed(hub, task_ids, timeout=COMPLETION_TIMEOUT_S)

    assert completed_per_lane(tasks) == Counter(ALTERNATING_LANES)
