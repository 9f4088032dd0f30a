"""TEST-01: the basic pipeline, from HTTP submission to completion by WebSocket agents.

Proves three truths: 10 trivial tasks complete across 2 agents, 10/10, within
30 s; each is assigned within 5 s of its submission; each reports under 500
tokens.

Both agents identify before anything is submitted, and each task goes in only
once the one before it is completed. So both agents are idle whenever a task
arrives, and the hub's choice of agent, not which agent happens to be free,
decides who works: both must get some of the work.
"""

from __future__ import annotations

import time

import pytest

from agentcom.hub import HubThread
from tests.smoke.helpers.agents import AgentPool
from tests.smoke.helpers.assertions import assert_task_completed, wait_for_completion_acks
from tests.smoke.helpers.http import submit_task

pytestmark = pytest.mark.smoke

TASK_COUNT = 10
COMPLETION_TIMEOUT_S = 30.0
ACK_TIMEOUT_S = 5.0
MAX_ASSIGNMENT_LATENCY_MS = 5_000
MAX_TOKENS_PER_TASK = 500


def test_ten_tasks_complete_across_two_agents(
    hub: HubThread, agents: AgentPool, submitter_token: str
) -> None:
    """TEST-01: 10 tasks, 2 agents, every task completed promptly and cheaply."""
    sims = agents.start_many("smoke-basic", 2)

    deadline = time.monotonic() + COMPLETION_TIMEOUT_S
    tasks = []
    for n in range(1, TASK_COUNT + 1):
        task_id = submit_task(hub.http_url, f"Write number {n} to file", submitter_token)
        tasks.append(assert_task_completed(hub, task_id, timeout=deadline - time.monotonic()))

    latencies = {task["id"]: task["assigned_at"] - task["created_at"] for task in tasks}
    assert all(latency < MAX_ASSIGNMENT_LATENCY_MS for latency in latencies.values()), latencies

    tokens_used = {task["id"]: task["tokens_used"] for task in tasks}
    assert all((tokens or 0) < MAX_TOKENS_PER_TASK for tokens in tokens_used.values()), tokens_used

    completed_by_agent = wait_for_completion_acks(sims, TASK_COUNT, timeout=ACK_TIMEOUT_S)
    assert all(count > 0 for count in completed_by_agent.values()), completed_by_agent
