"""Tasks across several hubs on one PostgreSQL database (issue 10).

Real hubs (threads here; processes where one must die), real sockets, one
real database: a task goes to an idle agent on any hub, is claimed by one hub
only, is fenced on (task, generation, holder, hub), and a hub that stops
renewing its lease has its tasks rescued by the others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from simulator.scratch_database import scratch_database
from tests.cluster.conftest import CLUSTER_TIMING, StartHub
from tests.integration.conftest import QUIET_TIMING, LiveHub
from tests.integration.helpers import ClientLoop, HubProcess, WsAgent, events
from tests.pg_server import PostgresServer
from tests.waiting import wait_until


def sql(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def do(agent: WsAgent, task_id: str | None = None) -> dict[str, Any]:
    """Take the next assignment (of ``task_id``), accept and complete it."""
    assign = agent.recv("task_assign", **({} if task_id is None else {"task_id": task_id}))
    agent.send({"type": "task_accepted", "task_id": assign["task_id"]})
    agent.send(
        {"type": "task_complete", "task_id": assign["task_id"], "generation": assign["generation"]}
    )
    return assign


def test_a_task_submitted_on_one_hub_is_done_by_an_agent_on_another(
    start_hub: StartHub, shared_db: str
) -> None:
    first, second = start_hub(), start_hub()
    worker = second.agent("worker")
    task_id = first.submit("cross the hubs")
    do(worker, task_id)
    wait_until(lambda: first.task(task_id)["status"] == "completed", what="completed")
    task = first.task(task_id)
    assert [e["agent_id"] for e in events(task, "completed")] == ["worker"]
    assert second.task(task_id)["status"] == "completed"
    stats = first.api("GET", "/api/tasks/stats").body
    assert stats["by_status"]["completed"] == 1


def test_a_notice_not_the_poll_wakes_the_other_hub(start_hub: StartHub) -> None:
    """With the poll a minute away, only the NOTIFY can bring the task to hub 2 in time."""
    first, second = start_hub(cluster_poll_ms=60_000), start_hub(cluster_poll_ms=60_000)
    worker = second.agent("woken")
    task_id = first.submit("wake up")
    worker.recv("task_assign", task_id=task_id, timeout=5)


def test_a_holder_whose_task_was_cancelled_elsewhere_meanwhile_is_told(
    start_hub: StartHub,
) -> None:
    """The cancel commits on hub 2 before hub 1 handles the agent's report: the
    report is refused, and the agent still hears that its task is gone."""
    first, second = start_hub(), start_hub()
    holder = first.agent("raced")
    task_id = second.submit("raced")
    holder.recv("task_assign", task_id=task_id)
    reply = second.api("POST", f"/api/tasks/{task_id}/cancel", {"reason": "raced"})
    assert reply.status == 200, reply
    holder.send({"type": "task_accepted", "task_id": task_id})
    assert holder.recv("task_cancelled", task_id=task_id)["reason"] == "raced"


def test_two_hubs_never_assign_one_task_twice(start_hub: StartHub, shared_db: str) -> None:
    hubs = [start_hub(), start_hub()]
    agents = [hub.agent(f"agent-{n}-{i}") for n, hub in enumerate(hubs) for i in range(3)]
    task_ids = [hubs[n % 2].submit(f"task {n}") for n in range(120)]
    done: list[str] = []
    seen: set[tuple[str, int]] = set()

    def work() -> bool:
        for agent in agents:
            for assign in agent.pending("task_assign"):
                if (assign["task_id"], assign["generation"]) in seen:
                    continue  # pending() keeps what it shows
                seen.add((assign["task_id"], assign["generation"]))
                agent.send({"type": "task_accepted", "task_id": assign["task_id"]})
                agent.send(
                    {
                        "type": "task_complete",
                        "task_id": assign["task_id"],
                        "generation": assign["generation"],
                    }
                )
                done.append(assign["task_id"])
        completed = sql(shared_db, "SELECT count(*) FROM tasks WHERE status = 'completed'")
        return completed[0][0] == len(task_ids)

    wait_until(work, timeout=60, what="every task completed")
    assert sorted(done) == sorted(task_ids), "a task was assigned twice, or never"
    for task_id in task_ids:
        task = hubs[0].task(task_id)
        assert len(events(task, "completed")) == 1
        assert len(events(task, "assigned")) == 1, task["history"]
    assert sql(shared_db, "SELECT count(*) FROM tasks WHERE hub_id IS NOT NULL") == [(0,)]


def test_a_cancel_on_one_hub_reaches_the_holder_on_another(
    start_hub: StartHub, shared_db: str
) -> None:
    first, second = start_hub(), start_hub()
    holder = first.agent("holder")
    task_id = second.submit("call me off")
    assign = holder.recv("task_assign", task_id=task_id)
    holder.send({"type": "task_accepted", "task_id": task_id})
    accepted = "SELECT count(*) FROM tasks WHERE id = %s AND accepted_at IS NOT NULL"
    wait_until(lambda: sql(shared_db, accepted, task_id) == [(1,)], what="accepted")
    reply = second.api("POST", f"/api/tasks/{task_id}/cancel", {"reason": "changed my mind"})
    assert reply.status == 200, reply
    notice = holder.recv("task_cancelled", task_id=task_id)
    assert notice["reason"] == "changed my mind"
    holder.send({"type": "task_complete", "task_id": task_id, "generation": assign["generation"]})
    refused = holder.recv("error")
    assert refused["error"] == "task_complete_failed: not_assigned"
    assert first.task(task_id)["status"] == "cancelled"


def test_an_agent_moving_to_another_live_hub_keeps_or_gets_back_its_task_once(
    start_hub: StartHub,
) -> None:
    """Identifying on hub 2 replaces the connection on hub 1, whose task is then
    handled as on a local replace (reclaimed, cause ``replaced``), unless the
    agent's ``task_recovering`` on hub 2 took it over first. Either way the task
    is done once, by this agent."""
    first, second = start_hub(), start_hub()
    token = first.thread.create_token("mover")
    mover = first.socket()
    mover.identify("mover", token, capabilities=[])
    task_id = first.submit("follow me")
    mover.recv("task_assign", task_id=task_id)
    mover.send({"type": "task_accepted", "task_id": task_id})
    wait_until(lambda: first.task(task_id)["history"][-1]["event"] == "assigned")
    moved = second.socket()
    moved.identify("mover", token, capabilities=[])
    assert mover.wait_closed() == 4000 and mover.close_reason == "replaced"
    moved.send({"type": "task_recovering", "task_id": task_id})

    def next_generation() -> int | None:
        for kind in ("task_continue", "task_assign"):
            for frame in moved.pending(kind):
                if frame["task_id"] == task_id:
                    return int(frame["generation"])
        return None

    wait_until(lambda: next_generation() is not None, what="continue, or the task again")
    generation = next_generation()
    moved.send({"type": "task_complete", "task_id": task_id, "generation": generation})
    wait_until(lambda: second.task(task_id)["status"] == "completed", what="completed")
    task = second.task(task_id)
    assert [e["agent_id"] for e in events(task, "completed")] == ["mover"]
    assert {e["cause"] for e in events(task, "reclaimed")} <= {"replaced"}


def test_a_hub_that_lost_its_lease_fences_itself_and_joins_again(
    start_hub: StartHub, shared_db: str
) -> None:
    hub = start_hub()
    old_id = hub.thread.hub.cluster.hub_id
    agent = hub.agent("fenced-out")
    sql(shared_db, "UPDATE hubs SET lease_expires_at = now() - interval '1 second'")
    assert agent.wait_closed() == 1001
    assert agent.close_reason == "hub_fenced"
    wait_until(lambda: hub.thread.hub.cluster.hub_id != old_id, what="a new hub id")
    wait_until(lambda: not hub.thread.hub.cluster.fenced, what="unfenced")
    again = hub.agent("fenced-out")
    task_id = hub.submit("after the fence")
    do(again, task_id)
    wait_until(lambda: hub.task(task_id)["status"] == "completed", what="completed")


@pytest.fixture
def hub_process(shared_db: str, tmp_path: Path) -> Iterator[Callable[[], HubProcess]]:
    """``hub_process()``: a hub process on the test's database, killed at the end."""
    started: list[HubProcess] = []

    def start() -> HubProcess:
        lease = [f"--{name.replace('_', '-')}={value}" for name, value in CLUSTER_TIMING.items()]
        process = HubProcess(tmp_path / f"process{len(started)}", "--store", shared_db, *lease)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def test_a_killed_hubs_task_is_rescued_and_done_on_another(
    start_hub: StartHub, hub_process: Callable[[], HubProcess], clients: ClientLoop
) -> None:
    survivor_hub = start_hub()
    doomed = hub_process()
    victim = WsAgent(clients, doomed.ws_url)
    victim.identify("victim", survivor_hub.thread.create_token("victim"), capabilities=[])
    task_id = survivor_hub.submit("outlive the hub")
    victim.recv("task_assign", task_id=task_id)
    victim.send({"type": "task_accepted", "task_id": task_id})
    wait_until(lambda: survivor_hub.task(task_id)["status"] == "assigned", what="assigned")
    doomed.kill()
    survivor = survivor_hub.agent("survivor")
    do(survivor, task_id)
    wait_until(lambda: survivor_hub.task(task_id)["status"] == "completed", what="completed")
    task = survivor_hub.task(task_id)
    assert [e["cause"] for e in events(task, "reclaimed")] == ["hub_lost"]
    assert [e["agent_id"] for e in events(task, "completed")] == ["survivor"]


def test_an_agent_of_a_killed_hub_recovers_its_task_on_another_before_the_rescue(
    start_hub: StartHub,
    hub_process: Callable[[], HubProcess],
    clients: ClientLoop,
    shared_db: str,
) -> None:
    survivor_hub = start_hub()
    doomed = hub_process()
    token = survivor_hub.thread.create_token("phoenix")
    agent = WsAgent(clients, doomed.ws_url)
    agent.identify("phoenix", token, capabilities=[])
    task_id = survivor_hub.submit("keep working")
    assign = agent.recv("task_assign", task_id=task_id)
    agent.send({"type": "task_accepted", "task_id": task_id})
    wait_until(lambda: survivor_hub.task(task_id)["status"] == "assigned", what="assigned")
    doomed.kill()
    again = survivor_hub.socket()
    again.identify("phoenix", token, capabilities=[])
    again.send({"type": "task_recovering", "task_id": task_id})
    again.recv("task_continue", task_id=task_id)
    # Past the dead hub's lease and a poll (which forgets a dead hub once it holds
    # nothing): the rescue must have found nothing to do.
    hubs = "SELECT hub_id FROM hubs"
    survivor = [(survivor_hub.thread.hub.cluster.hub_id,)]
    wait_until(lambda: sql(shared_db, hubs) == survivor, timeout=15, what="dead hub forgotten")
    again.send({"type": "task_complete", "task_id": task_id, "generation": assign["generation"]})
    wait_until(lambda: survivor_hub.task(task_id)["status"] == "completed", what="completed")
    task = survivor_hub.task(task_id)
    assert events(task, "reclaimed") == []
    assert len(events(task, "completed")) == 1


def test_a_hub_cut_off_from_the_database_fences_itself_and_comes_back(
    private_postgres: PostgresServer, tmp_path: Path, clients: ClientLoop
) -> None:
    with scratch_database(private_postgres.dsn, "fence") as url:
        hub = LiveHub(tmp_path / "hub", clients, **{**QUIET_TIMING, **CLUSTER_TIMING, "store": url})
        try:
            first_id = hub.thread.hub.cluster.hub_id
            agent = hub.agent("cut-off")
            private_postgres.halt()
            # No renewal for a whole lease: the hub fences itself and lets its agents go.
            assert agent.wait_closed(timeout=10) == 1001
            assert agent.close_reason == "hub_fenced"
            refused = hub.socket()
            refused.send({"type": "identify", "agent_id": "cut-off", "token": "x" * 64})
            assert refused.recv("error")["error"] == "hub_fenced"
            private_postgres.launch()
            wait_until(lambda: not hub.thread.hub.cluster.fenced, timeout=20, what="rejoined")
            assert hub.thread.hub.cluster.hub_id != first_id
            back = hub.agent("cut-off")
            task_id = hub.submit("after the outage")
            do(back, task_id)
            wait_until(lambda: hub.task(task_id)["status"] == "completed", what="completed")
        finally:
            hub.close()


def test_a_cancel_that_keeps_meeting_another_hubs_change_is_409_and_changes_nothing(
    start_hub: StartHub, shared_db: str
) -> None:
    hub = start_hub()
    task_id = hub.submit("busy elsewhere")
    with psycopg.connect(shared_db) as other_hub:  # another hub's transaction, left open
        other_hub.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task_id,))
        reply = hub.api("POST", f"/api/tasks/{task_id}/cancel", {})
        assert (reply.status, reply.body) == (409, {"error": "task_changed"})
        other_hub.rollback()
    assert hub.task(task_id)["status"] == "queued"
    assert hub.api("POST", f"/api/tasks/{task_id}/cancel", {}).status == 200
