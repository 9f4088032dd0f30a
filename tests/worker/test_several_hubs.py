"""Several hubs, one queue: the worker takes the hub URLs in turn (issue 10).

The settings and `HubRotation` in-process; then real hubs (`HubThread`) and
real worker processes: a dead first URL, a hub stopped under a connected
worker, and a task held across a change of hub (against scripted hubs, which
stand in for two hubs on one queue: each answers as the test says). Last, the
simulator's agents, which fail over with the same `HubRotation`.
"""

from __future__ import annotations

import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentcom.hub import HubThread
from agentcom.worker.config import ConfigError, load_config
from agentcom.worker.connection import Backoff, HubRotation, hub_is_leaving
from agentcom.worker.process import group_is_alive
from simulator import AgentSim
from simulator.__main__ import parse_args as simulator_args
from tests.waiting import wait_until
from tests.worker.harness import (
    HELD_COMMAND,
    Hubs,
    WorkerProcess,
    Workers,
    connected_agents,
    runs,
    submit,
    wait_for_status,
)
from tests.worker.scripted_hub import (
    TASK_A,
    TASK_B,
    ScriptedHub,
    assign,
    start_worker_running_task_a,
)

A, B, C = "ws://127.0.0.1:4001/ws", "ws://127.0.0.1:4002/ws", "ws://127.0.0.1:4003/ws"
IDENTITY = ["--agent-id", "alice", "--token", "t0k3n", "--exec", "true"]


def closed_port_url() -> str:
    """A ws:// URL on this machine where nothing listens: the port was bound, then let go."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"ws://127.0.0.1:{port}/ws"


def switches(worker: WorkerProcess) -> list[tuple[str, str, str, float]]:
    return [
        (e["from_hub"], e["to_hub"], e["why"], e["delay_s"])
        for e in worker.events()
        if e["event"] == "hub_switched"
    ]


# --- settings ---------------------------------------------------------------------------


def test_hub_flag_repeated_or_comma_separated_gives_the_urls_in_order() -> None:
    repeated = load_config(["--hub", A, "--hub", f"{B},{C}", *IDENTITY], {})
    single = load_config(["--hub", A, *IDENTITY], {})

    assert repeated.hubs == (A, B, C)
    assert (single.hubs, single.hub) == ((A,), A)


def test_hub_urls_from_the_env_var_or_a_list_in_the_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "worker.json"
    config_file.write_text(json.dumps({"hub": [B, A]}))

    from_env = load_config(IDENTITY, {"AGENTCOM_WORKER_HUB": f"{A}, {B},{A},"})
    from_file = load_config(["--config", str(config_file), *IDENTITY], {})

    assert from_env.hubs == (A, B)  # a URL named twice is tried once per pass
    assert from_file.hubs == (B, A)


@pytest.mark.parametrize(
    ("hubs", "message"),
    [
        (f"{A},http://127.0.0.1:4000", "--hub: expected a ws:// or wss:// URL"),
        (f"{A},ws://hub:4000/ws", "--hub: ws://hub:4000/ws is ws:// to another machine"),
        (" , ", "--hub: expected at least one hub URL"),
    ],
)
def test_every_hub_url_is_checked(hubs: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(["--hub", hubs, *IDENTITY], {})


# --- the rotation ------------------------------------------------------------------------


def steady_backoff() -> Backoff:
    return Backoff(uniform=lambda low, high: 1.0)  # no jitter: 1, 2, 4, ...


def test_one_url_waits_the_backoff_after_every_failure_as_before() -> None:
    hubs = HubRotation([A], steady_backoff())

    delays = [hubs.move_on() for _ in range(4)]

    assert delays == [1, 2, 4, 8]
    assert hubs.current == A


def test_the_backoff_comes_once_per_pass_over_the_urls() -> None:
    hubs = HubRotation([A, B, C], steady_backoff())

    tried = []
    for _ in range(6):
        url = hubs.current
        tried.append((url, hubs.move_on()))

    assert tried == [(A, 0), (B, 0), (C, 1), (A, 0), (B, 0), (C, 2)]
    assert hubs.current == A


def test_a_connection_resets_the_backoff_and_a_lost_one_moves_on() -> None:
    hubs = HubRotation([A, B, C], steady_backoff())
    for _ in range(3):
        hubs.move_on()  # a pass that failed: the next wait would be 2 s
    hubs.move_on()  # A unreachable
    hubs.connected()  # B identified us

    assert (hubs.move_on(), hubs.current) == (0, C)  # B lost: C at once
    assert hubs.move_on() == 1  # C unreachable, end of the pass: from 1 s again


def test_a_leaving_hub_is_followed_by_the_next_at_once_even_at_the_end_of_a_pass() -> None:
    hubs = HubRotation([A, B], steady_backoff())

    assert hubs.move_on(leaving=True) == 0  # A shut down: B
    assert hubs.move_on(leaving=True) == 0  # B shut down too: A at once, the wait put off
    assert hubs.move_on(leaving=True) == 1  # put off once per pass, not for ever
    assert hubs.move_on(leaving=True) == 0


def test_a_single_leaving_hub_still_gets_the_backoff() -> None:
    hubs = HubRotation([A], steady_backoff())

    assert hubs.move_on(leaving=True) == 1


@pytest.mark.parametrize(
    ("code", "reason", "leaving"),
    [
        (1001, "shutdown", True),
        (1001, None, True),
        (None, "hub_fenced", True),
        (4000, "replaced", False),
        (None, None, False),
    ],
)
def test_which_closes_say_the_hub_is_leaving(
    code: int | None, reason: str | None, leaving: bool
) -> None:
    assert hub_is_leaving(code, reason) is leaving


# --- real hubs, real workers --------------------------------------------------------------


def test_an_unreachable_first_hub_does_not_delay_the_second(hubs: Hubs, workers: Workers) -> None:
    hub = hubs.start()
    token = hub.create_token("alice")
    dead = closed_port_url()

    worker = workers.start([dead, hub.ws_url], token, exec="echo done")
    task_id = submit(hub, token, "past a dead hub")

    assert wait_for_status(hub, task_id, "completed")["result"]["stdout"] == "done\n"
    assert worker.saw("hub_connected", hub=hub.ws_url)
    assert [e["hub"] for e in worker.events() if e["event"] == "hub_connect_failed"] == [dead]
    assert switches(worker) == [(dead, hub.ws_url, "unreachable", 0)]


@pytest.fixture
def two_hubs(tmp_path: Path) -> Iterator[tuple[Hubs, Hubs, str]]:
    """Two hubs, each on a data dir of its own, and a token for alice both accept."""
    first, second = Hubs(tmp_path / "hub-a"), Hubs(tmp_path / "hub-b")
    token = first.start().create_token("alice")
    first.stop()
    shutil.copytree(first.data_dir, second.data_dir)  # tokens and all
    first.start()
    second.start()
    yield first, second, token
    for hubs in (first, second):
        if hubs.running is not None:
            hubs.stop()


def test_a_hub_stopped_under_the_worker_sends_it_to_the_next_hub(
    two_hubs: tuple[Hubs, Hubs, str], workers: Workers
) -> None:
    first, second, token = two_hubs
    hub_a, hub_b = first.running, second.running
    assert hub_a is not None and hub_b is not None
    worker = workers.start(f"{hub_a.ws_url},{hub_b.ws_url}", token, exec="echo done")
    wait_until(lambda: connected_agents(hub_a) == ["alice"] or connected_agents(hub_a))

    first.stop()  # closes every socket with 1001 "shutdown"
    wait_until(lambda: connected_agents(hub_b) == ["alice"] or connected_agents(hub_b))
    task_id = submit(hub_b, token, "on the second hub")

    assert wait_for_status(hub_b, task_id, "completed")["result"]["stdout"] == "done\n"
    assert switches(worker) == [(hub_a.ws_url, hub_b.ws_url, "leaving", 0)]


@pytest.fixture
def two_scripted_hubs() -> Iterator[tuple[ScriptedHub, ScriptedHub]]:
    with ScriptedHub() as first, ScriptedHub() as second:
        yield first, second


def recovering_on_the_second_hub(
    hubs: tuple[ScriptedHub, ScriptedHub],
    workers: Workers,
    directory: Path,
    close_code: int | None = None,
    close_reason: str | None = None,
) -> tuple[WorkerProcess, int]:
    """A worker running TASK_A for the first hub, dropped by it, asking the second about TASK_A."""
    first, second = hubs
    worker, pgid = start_worker_running_task_a(
        first, workers, directory, [second.ws_url], exec=HELD_COMMAND
    )
    first.drop_connection(close_code, close_reason)
    second.expect("identify", status="working")
    second.expect("task_recovering", task_id=TASK_A)
    return worker, pgid


def test_a_task_held_across_a_change_of_hub_is_recovered_on_the_new_one(
    two_scripted_hubs: tuple[ScriptedHub, ScriptedHub], workers: Workers, tmp_path: Path
) -> None:
    first, second = two_scripted_hubs
    worker, pgid = recovering_on_the_second_hub(
        two_scripted_hubs, workers, tmp_path, 4000, "replaced"
    )

    second.send({"type": "task_continue", "task_id": TASK_A, "generation": 1})
    (tmp_path / "release").touch()

    second.expect("task_complete", task_id=TASK_A, generation=1)
    assert runs(tmp_path) == [pgid]  # the command was not started again
    assert switches(worker) == [(first.ws_url, second.ws_url, "lost", 0)]
    assert worker.saw("hub_connection_lost", hub=first.ws_url, reason="replaced")


def test_a_task_the_new_hub_gives_to_someone_else_is_dropped(
    two_scripted_hubs: tuple[ScriptedHub, ScriptedHub], workers: Workers, tmp_path: Path
) -> None:
    _, second = two_scripted_hubs
    worker, pgid = recovering_on_the_second_hub(two_scripted_hubs, workers, tmp_path)

    second.send({"type": "task_reassign", "task_id": TASK_A})

    worker.wait_for_event("task_forgotten", task_id=TASK_A, why="reassigned")
    assert not group_is_alive(pgid)
    second.send(assign(TASK_B))
    second.expect("task_accepted", task_id=TASK_B)


# --- the simulator's agents: the same rotation ------------------------------------------


@pytest.fixture
def sims() -> Iterator[list[AgentSim]]:
    started: list[AgentSim] = []
    yield started
    for sim in started:
        sim.stop()


def test_simulator_hub_flag_repeated_or_comma_separated() -> None:
    args = simulator_args(["--hub", f"{A},{B}", "--hub", C, "--token", "t", "--agent-id", "x"])

    assert args.hub == (A, B, C)


def test_a_simulated_agent_gets_past_an_unreachable_hub(
    hub: HubThread, sims: list[AgentSim]
) -> None:
    dead = closed_port_url()
    sim = AgentSim([dead, hub.ws_url], "alice", hub.create_token("alice"))
    sims.append(sim)

    sim.start()
    sim.wait_identified()
    task_id = submit(hub, hub.create_token("boss"), "for a simulated agent")

    assert sim.hub_ws_url == hub.ws_url
    wait_for_status(hub, task_id, "completed")


def test_a_simulated_agent_moves_to_the_next_hub_when_its_hub_stops(
    two_hubs: tuple[Hubs, Hubs, str], sims: list[AgentSim]
) -> None:
    first, second, token = two_hubs
    hub_a, hub_b = first.running, second.running
    assert hub_a is not None and hub_b is not None
    sim = AgentSim([hub_a.ws_url, hub_b.ws_url], "alice", token)
    sims.append(sim)
    sim.start()
    sim.wait_identified()

    first.stop()
    wait_until(lambda: connected_agents(hub_b) == ["alice"] or connected_agents(hub_b))
    task_id = submit(hub_b, token, "on the second hub")

    wait_for_status(hub_b, task_id, "completed")
    wait_until(lambda: sim.completed_count == 1 or sim.completed_count, what="task_ack complete")
    assert sim.identified and sim.hub_ws_url == hub_b.ws_url


def test_a_simulated_agent_with_one_hub_still_never_reconnects(
    hubs: Hubs, sims: list[AgentSim]
) -> None:
    hub = hubs.start()
    sim = AgentSim(hub.ws_url, "alice", hub.create_token("alice"))
    sims.append(sim)
    sim.start()
    sim.wait_identified()

    hubs.restart()

    assert sim.wait_closed(timeout=10)
