"""The hub as a process: SIGKILL loses nothing acknowledged, SIGTERM/SIGINT stop it with
exit 0, and the token command line works against a running hub."""

from __future__ import annotations

import signal
import socket

import pytest

from tests.integration.helpers import HubProcess, WsAgent, events, http, new_token, token_cli
from tests.waiting import wait_until


def start(processes, data_dir, *flags, env=None):
    process = HubProcess(data_dir, *flags, env=env)
    processes.append(process)
    return process


def connect(clients, process, agent_id, token):
    agent = WsAgent(clients, process.ws_url)
    assert agent.identify(agent_id, token) == {"type": "identified", "agent_id": agent_id}
    return agent


# On PostgreSQL a restarted hub is a new member of its cluster: what the killed
# one held comes back when the killed one's lease runs out (cause hub_lost), long
# enough for a1 to recover its task first, short enough for the test.
LEASE = ("--hub-lease-ms", "6000", "--cluster-poll-ms", "200")


def test_acknowledged_work_survives_sigkill(tmp_path, clients, processes, store_kind):
    data = tmp_path / "data"
    submitter = new_token(data, "submitter")  # the hub is not running yet
    tokens = {agent_id: new_token(data, agent_id) for agent_id in ("a1", "a2")}
    hub = start(processes, data, *LEASE)

    def api(process, method, path, body=None):
        return http(method, process.http_url + path, body, token=submitter)

    submitted = []
    for n in range(6):
        reply = api(hub, "POST", "/api/tasks", {"description": f"task {n}", "metadata": {"n": n}})
        assert reply.status == 201
        submitted.append(reply.body["task_id"])
    held, done, unaccepted, *queued = submitted

    a1 = connect(clients, hub, "a1", tokens["a1"])
    assign = a1.recv("task_assign", task_id=held)
    a1.send({"type": "task_accepted", "task_id": held})
    a1.recv("task_ack", task_id=held, status="accepted")

    a2 = connect(clients, hub, "a2", tokens["a2"])
    a2_assign = a2.recv("task_assign", task_id=done)
    a2.send(
        {
            "type": "task_complete",
            "task_id": done,
            "generation": a2_assign["generation"],
            "result": {"ok": True},
            "tokens_used": 7,
        }
    )
    a2.recv("task_ack", task_id=done, status="complete")
    a2.recv("task_assign", task_id=unaccepted)

    hub.signal(signal.SIGKILL)
    assert hub.wait() == -signal.SIGKILL
    a1.wait_closed()
    a2.wait_closed()

    hub = start(
        processes, data, "--acceptance-timeout-ms", "1500", "--sweep-interval-ms", "100", *LEASE
    )
    listed = api(hub, "GET", "/api/tasks").body
    assert sorted(t["id"] for t in listed["tasks"]) == sorted(submitted)
    tasks = {t["id"]: t for t in listed["tasks"]}
    assert tasks[held]["status"] == "assigned"
    assert tasks[held]["assigned_to"] == "a1"
    assert tasks[held]["generation"] == assign["generation"]
    assert tasks[done]["status"] == "completed"
    assert tasks[done]["result"] == {"ok": True}
    assert tasks[done]["tokens_used"] == 7
    assert events(tasks[done]).count("completed") == 1
    for task_id in queued:
        assert tasks[task_id]["status"] == "queued"
    assert tasks[queued[0]]["metadata"] == {"n": 3}

    # The holder comes back and carries on under the same generation.
    a1 = connect(clients, hub, "a1", tokens["a1"])
    a1.send({"type": "task_recovering", "task_id": held})
    assert a1.recv("task_continue") == {
        "type": "task_continue",
        "task_id": held,
        "generation": assign["generation"],
    }
    state = api(hub, "GET", "/api/agents/a1/state").body
    assert state["current_task_id"] == held
    a1.send(
        {
            "type": "task_complete",
            "task_id": held,
            "generation": assign["generation"],
            "result": "recovered",
        }
    )
    a1.recv("task_ack", task_id=held, status="complete")
    task = api(hub, "GET", f"/api/tasks/{held}").body
    assert task["status"] == "completed"
    assert task["result"] == "recovered"
    assert events(task) == ["queued", "assigned", "completed"]

    # a2 never comes back: its never-accepted task returns after the acceptance
    # timeout (SQLite: the restarted hub holds it), or once the killed hub's lease
    # ran out (PostgreSQL: the killed hub held it).
    wait_until(
        lambda: (
            "reclaimed" in (seen := events(api(hub, "GET", f"/api/tasks/{unaccepted}").body))
            or seen
        ),
        what="the unaccepted task back in the queue",
    )
    reclaimed = events(api(hub, "GET", f"/api/tasks/{unaccepted}").body, "reclaimed")
    assert reclaimed[0]["cause"] == ("acceptance_timeout" if store_kind == "sqlite" else "hub_lost")

    hub.signal(signal.SIGTERM)
    assert hub.wait() == 0


def test_location_and_timing_from_the_environment(tmp_path, clients, processes):
    data = tmp_path / "env-data"
    token = new_token(data, "a1")
    env = {
        "AGENTCOM_HOST": "127.0.0.1",
        "AGENTCOM_PORT": "0",
        "AGENTCOM_DATA_DIR": str(data),
        "AGENTCOM_ACCEPTANCE_TIMEOUT_MS": "300",
    }
    hub = start(processes, data, env=env)
    assert hub.http_url.startswith("http://127.0.0.1:")
    reply = http("POST", hub.http_url + "/api/tasks", {"description": "x"}, token=token)
    assert reply.status == 201  # the token from the data dir in AGENTCOM_DATA_DIR
    task_id = reply.body["task_id"]
    agent = connect(clients, hub, "a1", token)
    first = agent.recv("task_assign", task_id=task_id)
    agent.recv("task_assign", task_id=task_id, generation=first["generation"] + 1)
    task = http("GET", f"{hub.http_url}/api/tasks/{task_id}", token=token).body
    assert events(task, "reclaimed")[0]["cause"] == "acceptance_timeout"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_hub_cleanly(tmp_path, clients, processes, signum):
    data = tmp_path / "data"
    token = new_token(data, "a1")
    hub = start(processes, data)
    task_id = http("POST", hub.http_url + "/api/tasks", {"description": "x"}, token=token).body[
        "task_id"
    ]
    agent = connect(clients, hub, "a1", token)
    agent.recv("task_assign", task_id=task_id)

    hub.signal(signum)
    assert hub.wait() == 0
    agent.wait_closed()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", hub.port), timeout=2).close()

    # a clean stop, like a crash, leaves the assignment for the agent to recover
    hub = start(processes, data)
    task = http("GET", f"{hub.http_url}/api/tasks/{task_id}", token=token).body
    assert task["status"] == "assigned"
    assert task["assigned_to"] == "a1"


def test_token_cli_against_a_running_hub(tmp_path, clients, processes):
    data = tmp_path / "data"
    hub = start(processes, data)

    token = new_token(data, "cli-agent")
    assert http("GET", hub.http_url + "/api/tasks", token=token).status == 200
    connect(clients, hub, "cli-agent", token).close()

    admin = new_token(data, "cli-admin", role="admin")
    listing = http("GET", hub.http_url + "/admin/tokens", token=admin)
    assert listing.status == 200
    assert {(r["agent_id"], r["role"]) for r in listing.body["tokens"]} == {
        ("cli-agent", "agent"),
        ("cli-admin", "admin"),
    }

    listed = token_cli(data, "list")
    assert listed.returncode == 0, listed.stderr
    lines = [line.split() for line in listed.stdout.strip().splitlines()]
    by_agent = {fields[0]: fields for fields in lines}
    assert set(by_agent) == {"cli-agent", "cli-admin"}
    assert by_agent["cli-agent"][1] == "agent"
    assert by_agent["cli-admin"][1] == "admin"
    prefix = by_agent["cli-agent"][2].rstrip("…")
    assert prefix and token.startswith(prefix)
    assert token not in listed.stdout
    assert admin not in listed.stdout

    # a token made over HTTP shows up in the command line's list
    made = http("POST", hub.http_url + "/admin/tokens", {"agent_id": "http-agent"}, token=admin)
    assert made.status == 201
    assert "http-agent" in token_cli(data, "list").stdout

    revoked = token_cli(data, "revoke", "cli-agent")
    assert revoked.returncode == 0, revoked.stderr
    refused = http("GET", hub.http_url + "/api/tasks", token=token)
    assert refused.status == 401
    assert refused.body == {"error": "unauthorized"}
    agent = WsAgent(clients, hub.ws_url)
    assert agent.identify("cli-agent", token) == {"type": "error", "error": "invalid_token"}
    agent.close()
    assert http("GET", hub.http_url + "/api/tasks", token=admin).status == 200
