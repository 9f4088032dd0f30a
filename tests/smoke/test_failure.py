"""TEST-02: an agent whose connection dies mid-task loses the task to a survivor.

Proves two truths: killing one agent's connection mid-task returns its task to
the queue and the remaining agent completes it; and nothing is completed twice
after the kill and the recovery.

The victim is alone when the work is submitted, so it is certain to hold a
task when killed; the survivor connects just before the kill and takes the
task only once the hub has reclaimed it. The hub's sweeps are set long (see
conftest), so a prompt `reclaimed` event with cause `disconnected` shows that
the recovery came from the dropped connection, not from a sweep.
"""

from __future__ import annotations

import time

import pytest

from agentcom.config import HubConfig
from agentcom.hub import HubThread
from simulator import AgentSim, Behaviour
from tests.smoke.helpers.agents import AgentPool
from tests.smoke.helpers.assertions import (
    assert_all_completed,
    assert_completed_exactly_once,
    assert_no_error_frames,
    assert_task_completed,
    history_events,
    wait_for,
    wait_for_completion_acks,
)
from tests.smoke.helpers.http import submit_task

pytestmark = pytest.mark.smoke

ASSIGN_TIMEOUT_S = 5.0
RECOVERY_TIMEOUT_S = 60.0
ACK_TIMEOUT_S = 5.0
# A reclaim on disconnect takes milliseconds; a sweep could not run for minutes.
MAX_RECLAIM_AFTER_KILL_MS = 2_000


def wait_until_holding_a_task(sim: AgentSim) -> None:
    wait_for(
        lambda: bool(sim.received_tasks) or "no task_assign yet",
        ASSIGN_TIMEOUT_S,
        f"task for {sim.agent_id}",
    )


def test_killed_agents_task_is_reclaimed_and_completed_by_survivor(
    hub: HubThread, hub_config: HubConfig, agents: AgentPool, submitter_token: str
) -> None:
    """TEST-02: one task; its holder is killed mid-task; the survivor completes it once."""
    assert hub_config.sweep_interval_ms > 100 * MAX_RECLAIM_AFTER_KILL_MS, "sweeps must be long"
    victim = agents.start("smoke-victim", Behaviour.delay(10_000))
    task_id = submit_task(hub.http_url, "Write number 1 to file", submitter_token)
    wait_until_holding_a_task(victim)
    survivor = agents.start("smoke-survivor", Behaviour.complete())

    killed_at_ms = time.time_ns() // 1_000_000
    victim.kill_connection()

    task = assert_task_completed(hub, task_id, timeout=RECOVERY_TIMEOUT_S)
    assert task["status"] == "completed"
    assert task["assigned_to"] == survivor.agent_id
    assert_completed_exactly_once(task)

    reclaims = history_events(task, "reclaimed")
    assert [entry["details"]["cause"] for entry in reclaims] == ["disconnected"], task["history"]
    reclaim_delay_ms = reclaims[0]["timestamp"] - killed_at_ms
    assert reclaim_delay_ms < MAX_RECLAIM_AFTER_KILL_MS, task["history"]

    # The survivor works under a new generation, so a late completion from
    # the victim's assignment could never be accepted.
    (victim_assignment,) = victim.received_tasks
    (survivor_assignment,) = survivor.received_tasks
    assert victim_assignment.generation < survivor_assignment.generation == task["generation"]

    completed_by_agent = wait_for_completion_acks([victim, survivor], 1, timeout=ACK_TIMEOUT_S)
    assert completed_by_agent == {victim.agent_id: 0, survivor.agent_id: 1}
    assert_no_error_frames([victim, survivor])


def test_all_tasks_complete_when_one_of_two_agents_is_killed(
    hub: HubThread, agents: AgentPool, submitter_token: str
) -> None:
    """TEST-02b: five tasks; one agent is killed holding one; all five complete once."""
    victim = agents.start("smoke-victim", Behaviour.delay(5_000))
    task_ids = [
        submit_task(hub.http_url, f"Write number {n} to file", submitter_token) for n in range(1, 6)
    ]
    wait_until_holding_a_task(victim)
    survivor = agents.start("smoke-survivor", Behaviour.complete())

    victim.kill_connection()

    tasks = assert_all_completed(hub, task_ids, timeout=RECOVERY_TIMEOUT_S)
    for task in tasks:
        assert_completed_exactly_once(task)
    completed_by_agent = wait_for_completion_acks(
        [victim, survivor], len(task_ids), timeout=ACK_TIMEOUT_S
    )
    assert sum(completed_by_agent.values()) == len(task_ids), completed_by_agent
    assert_no_error_frames([victim, survivor])
