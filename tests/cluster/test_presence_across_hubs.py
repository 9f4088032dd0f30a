"""Who is connected, across the hubs of one PostgreSQL database (issue 10).

Two real hubs, real sockets: each hub lists the agents of both (each entry
with its ``hub_id``, the other hub's FSM state read from the tasks it holds);
an agent that identifies on the other hub replaces its older connection there
(4000 ``replaced``); the agents of one hub hear of joins and leaves on the
other; a fenced hub refuses ``identify`` (1001 ``hub_fenced``) and closes the
sockets it holds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agentcom.actors.presence import ConnectedElsewhere
from tests.cli.conftest import Cli
from tests.cluster.conftest import StartHub, hub_id
from tests.integration.conftest import LiveHub
from tests.waiting import wait_until


def listed(hub: LiveHub, path: str = "/api/agents") -> dict[str, dict[str, Any]]:
    reply = hub.api("GET", path, token=hub.admin_token)
    assert reply.status == 200, reply
    return {agent["agent_id"]: agent for agent in reply.body["agents"]}


def on_loop(hub: LiveHub, call: Any) -> None:
    """Run ``call()`` on the hub's IOLoop (as HubLease's ``on_fenced`` does)."""
    loop = hub.thread._loop
    assert loop is not None

    async def run() -> None:
        call()

    asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=5)


def test_each_hub_lists_the_agents_of_both_with_their_hub(start_hub: StartHub) -> None:
    first, second = start_hub(), start_hub()
    first.agent("here", ["code"], name="Here", status="reading")
    second.agent("there", [{"name": "review"}], name="There")

    for hub in (first, second):
        agents = listed(hub)
        assert set(agents) == {"here", "there"}
        assert (agents["here"]["hub_id"], agents["there"]["hub_id"]) == (
            hub_id(first),
            hub_id(second),
        )
        assert agents["there"] == {
            "agent_id": "there",
            "name": "There",
            "status": "idle",
            "capabilities": [{"name": "review"}],
            "connected_at": agents["there"]["connected_at"],
            "fsm_state": "idle",
            "hub_id": hub_id(second),
        }
        assert agents["here"]["status"] == "reading"


def test_the_other_hubs_agents_show_the_state_of_the_task_they_hold(start_hub: StartHub) -> None:
    first, second = start_hub(), start_hub()
    worker = second.agent("worker", ["gpu"])
    task_id = first.submit("render", needed_capabilities=["gpu"])
    worker.recv("task_assign", task_id=task_id)

    def state() -> object:
        shown = listed(first, "/api/agents/states").get("worker")
        if shown is None:
            return "worker not listed"
        return (shown["fsm_state"], shown["current_task_id"]) == ("assigned", task_id) or shown

    wait_until(state, what="worker assigned on the other hub")
    worker.send({"type": "task_accepted", "task_id": task_id})
    worker.recv("task_ack", task_id=task_id, status="accepted")
    one = first.api("GET", "/api/agents/worker/state", token=first.admin_token).body
    assert (one["fsm_state"], one["hub_id"], one["flags"]) == ("working", hub_id(second), [])
    assert listed(first)["worker"]["fsm_state"] == "working"


def test_an_agent_that_leaves_the_other_hub_is_no_longer_listed(start_hub: StartHub) -> None:
    first, second = start_hub(), start_hub()
    leaving = second.agent("leaving")
    assert "leaving" in listed(first)

    leaving.close()

    wait_until(lambda: "leaving" not in listed(first) or listed(first), what="leaving gone")
    assert first.api("GET", "/api/agents/leaving/state", token=first.admin_token).status == 404


def test_identify_on_the_other_hub_replaces_the_older_connection(start_hub: StartHub) -> None:
    first, second = start_hub(), start_hub()
    mover_token = first.thread.create_token("mover")
    older = first.agent("mover", token=mover_token)

    newer = second.agent("mover", token=mover_token)

    assert older.wait_closed() == 4000
    assert older.close_reason == "replaced"
    newer.round_trip()
    assert not newer.closed.is_set()
    wait_until(
        lambda: listed(first).get("mover", {}).get("hub_id") == hub_id(second) or listed(first),
        what="mover listed on the second hub",
    )
    assert set(listed(second)) == {"mover"}


def test_a_notice_older_than_the_connection_here_does_not_close_it(start_hub: StartHub) -> None:
    first, second = start_hub(), start_hub()
    mover_token = first.thread.create_token("mover")
    first.agent("mover", token=mover_token)
    on_second = second.agent("mover", token=mover_token)
    back_on_first = first.agent("mover", token=mover_token)
    assert on_second.wait_closed() == 4000

    # The second hub's notice, heard only now (a listener that lagged behind):
    late = ConnectedElsewhere("mover", hub_id(second))
    first.thread.hub.presence_ref.tell(late)

    assert listed(first)["mover"]["hub_id"] == hub_id(first)  # Presence handled it
    back_on_first.round_trip()
    assert not back_on_first.closed.is_set()
    assert listed(second)["mover"]["hub_id"] == hub_id(first)


def test_agents_hear_of_joins_and_leaves_on_the_other_hub(start_hub: StartHub) -> None:
    first, second = start_hub(), start_hub()
    watcher = first.agent("watcher")

    visitor = second.agent("visitor", ["code"], name="Visitor")

    joined = watcher.recv("agent_joined")
    assert joined["agent"] == {
        "agent_id": "visitor",
        "name": "Visitor",
        "status": "idle",
        "capabilities": ["code"],
        "connected_at": joined["agent"]["connected_at"],
    }
    visitor.close()
    assert watcher.recv("agent_left") == {"type": "agent_left", "agent_id": "visitor"}


def test_an_agent_moving_to_this_hub_is_not_said_to_have_left(start_hub: StartHub) -> None:
    first, second = start_hub(), start_hub()
    watcher = second.agent("watcher")
    mover_token = first.thread.create_token("mover")
    older = first.agent("mover", token=mover_token)
    assert watcher.recv("agent_joined")["agent"]["agent_id"] == "mover"

    second.agent("mover", token=mover_token)  # moves to the watcher's hub
    assert watcher.recv("agent_joined")["agent"]["agent_id"] == "mover"
    older.wait_closed()
    first.agent("marker")  # after the first hub said mover left it

    assert watcher.recv("agent_joined")["agent"]["agent_id"] == "marker"
    assert watcher.pending("agent_left") == [], "it moved here; it did not leave"


def test_a_fenced_hub_refuses_identify_and_closes_its_sockets(start_hub: StartHub) -> None:
    hub = start_hub()
    connected = hub.agent("connected")
    cluster = hub.thread.hub.cluster
    assert cluster is not None
    cluster.fenced = True  # as HubLease sets it when the lease lapsed

    refused = hub.socket()
    answer = refused.identify("refused", hub.thread.create_token("refused"))
    assert answer == {"type": "error", "error": "hub_fenced"}
    assert refused.wait_closed() == 1001
    assert refused.close_reason == "hub_fenced"

    on_loop(hub, lambda: hub.thread.hub.sockets.close_all("hub_fenced"))
    assert connected.wait_closed() == 1001
    assert connected.close_reason == "hub_fenced"

    cluster.fenced = False  # joined again: agents are taken as before
    again = hub.agent("connected")
    again.round_trip()


def test_the_command_line_shows_which_hub_each_agent_is_on(
    start_hub: StartHub, tmp_path: Path
) -> None:
    first, second = start_hub(), start_hub()
    first.agent("on-first")
    second.agent("on-second")
    table = Cli(second, tmp_path).ok("agents")
    header, *rows = table.splitlines()
    assert header.split()[-1] == "HUB"
    where = {row.split()[0]: row.split()[-1] for row in rows}
    assert where == {"on-first": hub_id(first), "on-second": hub_id(second)}
