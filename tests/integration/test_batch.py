"""``POST /api/tasks/batch`` against a real hub: order, lanes, all-or-nothing validation,
the limit, one commit, and durability across a SIGKILL right after the reply."""

from __future__ import annotations

import pytest

from tests.integration.helpers import HubProcess, WsAgent, http, new_token
from tests.integration.test_analytics_metrics import scrape


def batch(hub, tasks, token=None, **kw):
    kwargs = {} if token is None else {"token": token}
    return hub.api("POST", "/api/tasks/batch", {"tasks": tasks}, **kwargs, **kw)


def queued_count(hub):
    return hub.api("GET", "/api/tasks/stats").body["by_status"]["queued"]


def tasks_commits(http_url):
    _, samples = scrape(http_url)
    return samples[("agentcom_store_commit_seconds_count", (("store", "tasks"),))]


def test_a_batch_is_queued_in_order_in_its_lanes_in_one_commit(make_hub):
    hub = make_hub(sweep_interval_ms=3_600_000)  # no sweep commit in between
    bodies = [
        {"description": "low", "priority": "low"},
        {"description": "plain"},
        {"description": "urgent", "priority": "urgent", "metadata": {"n": 1}},
        {"description": "gpu", "needed_capabilities": ["gpu"], "max_retries": 0},
    ]
    commits_before = tasks_commits(hub.http_url)
    reply = batch(hub, bodies)
    assert reply.status == 201, reply
    assert tasks_commits(hub.http_url) == commits_before + 1
    queued = reply.body["tasks"]
    assert reply.body["count"] == 4
    assert [t["priority"] for t in queued] == ["low", "normal", "urgent", "normal"]
    assert all(t["status"] == "queued" for t in queued)
    ids = [t["task_id"] for t in queued]
    assert len(set(ids)) == 4
    stored = [hub.task(task_id) for task_id in ids]
    assert [t["description"] for t in stored] == ["low", "plain", "urgent", "gpu"]
    assert stored[2]["metadata"] == {"n": 1}
    assert stored[3]["needed_capabilities"] == ["gpu"] and stored[3]["max_retries"] == 0
    assert [t["submitted_by"] for t in stored] == ["submitter"] * 4

    # Lanes first, then submission order; the gpu task waits for a gpu agent.
    agent = hub.agent("a1")
    offered = []
    for _ in range(3):
        assign = agent.recv("task_assign")
        offered.append(assign["task_id"])
        agent.send({"type": "task_complete", "task_id": assign["task_id"], "generation": 1})
        agent.recv("task_ack", task_id=assign["task_id"], status="complete")
    assert offered == [ids[2], ids[1], ids[0]]


@pytest.mark.parametrize(
    "bad, error",
    [
        ({"priority": "low"}, "missing_field: tasks[2]: description"),
        ({"description": "x", "priority": "soon"}, "invalid_field: tasks[2]: priority must be"),
        ("just text", "invalid_body: tasks[2]: expected a JSON object"),
    ],
)
def test_one_bad_element_refuses_the_whole_batch_naming_its_index(hub, bad, error):
    reply = batch(hub, [{"description": "a"}, {"description": "b"}, bad, {"description": "d"}])
    assert reply.status == 400, reply
    assert reply.body["error"].startswith(error), reply.body
    assert reply.body["index"] == 2
    assert queued_count(hub) == 0


@pytest.mark.parametrize("size, status", [(0, 400), (1000, 201), (1001, 400)])
def test_a_batch_holds_one_to_a_thousand_tasks(hub, size, status):
    reply = batch(hub, [{"description": f"t{n}"} for n in range(size)])
    assert reply.status == status, reply.body if status == 201 else reply
    if status == 400:
        assert reply.body["error"] == "invalid_field: tasks must hold 1 to 1000 tasks"
    assert queued_count(hub) == (size if status == 201 else 0)


def test_what_the_batch_route_refuses(hub):
    viewer = hub.thread.create_token("watcher", role="viewer")
    assert batch(hub, [{"description": "a"}], token=viewer).status == 403
    reply = hub.api("POST", "/api/tasks/batch", {"description": "not a batch"})
    assert reply.body == {"error": "missing_field: tasks"}
    keyed = batch(hub, [{"description": "a"}], headers={"Idempotency-Key": "k1"})
    assert keyed.status == 400
    assert keyed.body["error"].startswith("idempotency_key_not_supported")
    assert hub.api("GET", "/api/tasks/batch").status == 405
    assert queued_count(hub) == 0


def test_a_batch_survives_sigkill_right_after_the_reply(tmp_path, clients, processes):
    data = tmp_path / "data"
    submitter, worker = new_token(data, "submitter"), new_token(data, "a1")
    first = HubProcess(data)
    processes.append(first)
    bodies = [{"description": f"task {n}", "metadata": {"n": n}} for n in range(200)]
    reply = http("POST", first.http_url + "/api/tasks/batch", {"tasks": bodies}, token=submitter)
    assert reply.status == 201
    ids = [t["task_id"] for t in reply.body["tasks"]]
    first.kill()

    second = HubProcess(data)
    processes.append(second)
    listed = http("GET", second.http_url + "/api/tasks?status=queued&limit=1000", token=submitter)
    assert [t["id"] for t in listed.body["tasks"]] == ids
    assert [t["metadata"]["n"] for t in listed.body["tasks"]] == list(range(200))
    agent = WsAgent(clients, second.ws_url)
    assert agent.identify("a1", worker)["type"] == "identified"
    assert agent.recv("task_assign")["task_id"] == ids[0]
    agent.close()
