"""Analytics and /metrics against a real hub: counts from real tasks and messages that
survive a clean stop and a SIGKILL, and Prometheus figures that move as tasks complete."""

from __future__ import annotations

import signal
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agentcom.config import HubConfig
from agentcom.hub import HubThread
from tests.integration.helpers import (
    HubProcess,
    WsAgent,
    fail_to_dead_letter,
    http,
    new_token,
)
from tests.waiting import wait_until


def complete(agent: WsAgent, task_id: str) -> None:
    assign = agent.recv("task_assign", task_id=task_id)
    agent.send({"type": "task_accepted", "task_id": task_id})
    agent.recv("task_ack", task_id=task_id, status="accepted")
    agent.send(
        {
            "type": "task_complete",
            "task_id": task_id,
            "generation": assign["generation"],
            "result": {"ok": True},
        }
    )
    agent.recv("task_ack", task_id=task_id, status="complete")


def scrape(http_url: str) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """``GET /metrics`` without a token: the text and every sample in it."""
    with urllib.request.urlopen(http_url + "/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return text, found


def test_metrics_need_no_token_name_no_task_or_agent_and_move_as_tasks_complete(hub):
    _, before = scrape(hub.http_url)
    assert before[("agentcom_tasks_completed_total", ())] == 0
    assert before[("agentcom_websocket_connections", ())] == 0

    agent = hub.agent("metrics-worker-7")
    done = hub.submit("counted", priority="high")
    complete(agent, done)
    dead = hub.submit("doomed", max_retries=0)
    fail_to_dead_letter(agent, dead)
    agent.round_trip()

    def moved() -> Any:
        _, found = scrape(hub.http_url)
        return found[("agentcom_tasks_completed_total", ())] == 1 or found

    wait_until(moved, what="the completed counter at 1")
    text, found = scrape(hub.http_url)
    assert found[("agentcom_tasks_submitted_total", ())] == 2
    assert found[("agentcom_tasks_assigned_total", ())] == 2
    assert found[("agentcom_tasks_dead_lettered_total", ())] == 1
    assert found[("agentcom_task_assign_latency_seconds_count", ())] == 2
    assert found[("agentcom_task_completion_latency_seconds_count", ())] == 1
    assert found[("agentcom_tasks", (("status", "completed"),))] == 1
    assert found[("agentcom_tasks", (("status", "dead_letter"),))] == 1
    assert found[("agentcom_tasks_by_lane", (("lane", "high"),))] == 1
    assert found[("agentcom_agents", (("state", "idle"),))] == 1
    assert found[("agentcom_websocket_connections", ())] == 1
    assert found[("agentcom_store_commit_seconds_count", (("store", "tasks"),))] >= 1
    for secret in (done, dead, "metrics-worker-7", "submitter", "counted", "doomed"):
        assert secret not in text


def test_analytics_routes_need_a_token_and_a_viewer_may_read(hub):
    viewer = hub.thread.create_token("watcher", role="viewer")
    for path in ("/summary", "/agents", "/agents/x/hourly"):
        assert hub.api("GET", "/api/analytics" + path, token=None).status == 401
        assert hub.api("GET", "/api/analytics" + path, token=viewer).status == 200
    hourly = hub.api("GET", "/api/analytics/agents/x/hourly", token=viewer).body
    assert hourly["agent_id"] == "x"
    assert len(hourly["hourly"]) == 24


def test_analytics_count_real_work_and_survive_a_clean_stop_and_a_sigkill(
    tmp_path, clients, processes
):
    data = tmp_path / "data"
    submitter = new_token(data, "submitter")
    worker_token = new_token(data, "worker")
    new_token(data, "bob")

    def run() -> HubProcess:
        process = HubProcess(data)
        processes.append(process)
        return process

    def agents(process: HubProcess) -> dict[str, dict[str, Any]]:
        body = http("GET", process.http_url + "/api/analytics/agents", token=submitter).body
        return {a["agent_id"]: a for a in body["agents"]}

    def counts(process: HubProcess) -> dict[str, int]:
        seen = agents(process)
        return {
            "worker_completed": seen.get("worker", {}).get("tasks_completed_24h", 0),
            "worker_failed": seen.get("worker", {}).get("tasks_failed_24h", 0),
            "submitter_sent": seen.get("submitter", {}).get("messages_sent_24h", 0),
            "bob_received": seen.get("bob", {}).get("messages_received_24h", 0),
        }

    def reach(process: HubProcess, expected: dict[str, int]) -> None:
        wait_until(lambda: counts(process) == expected or counts(process), what=str(expected))

    hub = run()

    def submit(body: dict[str, Any]) -> str:
        reply = http("POST", hub.http_url + "/api/tasks", body, token=submitter)
        assert reply.status == 201, reply
        return str(reply.body["task_id"])

    worker = WsAgent(clients, hub.ws_url)
    assert worker.identify("worker", worker_token)["type"] == "identified"
    complete(worker, submit({"description": "one"}))
    fail_to_dead_letter(worker, submit({"description": "two", "max_retries": 0}))
    message = {"to": "bob", "payload": {"text": "hi"}}
    assert http("POST", hub.http_url + "/api/message", message, token=submitter).status == 200
    expected = {"worker_completed": 1, "worker_failed": 1, "submitter_sent": 1, "bob_received": 1}
    reach(hub, expected)
    assert agents(hub)["worker"]["connected"] is True
    summary = http("GET", hub.http_url + "/api/analytics/summary", token=submitter).body
    assert summary["total_messages_24h"] == 1
    assert summary["total_tasks_completed_24h"] == 1
    hourly = http("GET", hub.http_url + "/api/analytics/agents/worker/hourly", token=submitter)
    assert sum(h["tasks_completed"] for h in hourly.body["hourly"]) == 1

    hub.signal(signal.SIGINT)
    assert hub.wait() == 0
    worker.wait_closed()

    hub = run()
    assert counts(hub) == expected
    worker_after = agents(hub)["worker"]
    assert worker_after["connected"] is False
    assert worker_after["total_connections"] == 1
    assert worker_after["connection_time_24h_ms"] > 0

    # What a read has shown is committed: a reply follows its batch's commit.
    assert http("POST", hub.http_url + "/api/message", message, token=submitter).status == 200
    reach(hub, {**expected, "submitter_sent": 2, "bob_received": 2})
    hub.signal(signal.SIGKILL)
    assert hub.wait() == -signal.SIGKILL

    hub = run()
    assert counts(hub) == {**expected, "submitter_sent": 2, "bob_received": 2}


def test_events_gathered_for_the_watchers_are_counted_when_the_hub_stops(
    tmp_path, clients, processes
):
    """A window far longer than the test: the counts can only come from the stop handing on
    what PubSub gathered before Analytics stops."""
    data = tmp_path / "data"
    submitter = new_token(data, "submitter")
    worker_token = new_token(data, "worker")
    hub = HubProcess(data, "--event-gather-ms", "600000")
    processes.append(hub)

    def completed(process: HubProcess) -> int:
        body = http("GET", process.http_url + "/api/analytics/agents", token=submitter).body
        seen = {a["agent_id"]: a for a in body["agents"]}
        return int(seen.get("worker", {}).get("tasks_completed_24h", 0))

    worker = WsAgent(clients, hub.ws_url)
    assert worker.identify("worker", worker_token)["type"] == "identified"
    reply = http("POST", hub.http_url + "/api/tasks", {"description": "one"}, token=submitter)
    assert reply.status == 201, reply
    complete(worker, str(reply.body["task_id"]))
    assert completed(hub) == 0  # still gathered: the window has not ended

    hub.signal(signal.SIGINT)
    assert hub.wait() == 0
    worker.wait_closed()
    hub = HubProcess(data)
    processes.append(hub)
    assert completed(hub) == 1


def test_the_hub_stops_every_part_when_pubsub_is_already_gone(tmp_path):
    thread = HubThread(HubConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "data"))
    thread.start()
    hub = thread.hub
    hub.pubsub_ref.stop()
    thread.stop()  # raised ActorDeadError when the stop asked PubSub to hand on what it gathered
    assert not any(
        ref.is_alive() for ref in (hub.event_feed_ref, hub.analytics_ref, hub.metrics_ref)
    )
