"""Query values over the wire: every bad form is a 400 naming it, pages are bounded."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from agentcom.messages import TaskSpec

BAD_NUMBERS = [
    "99999999999999999999999",
    "-1",
    "²",
    "1.5",
    "",
    "abc",
    "0x10",
    "1e2",
    "+5",
    "\uff11",
]


def submit_many(hub, count, by="submitter"):
    """``count`` tasks straight into TaskQueue, in a few group commits (fast)."""
    futures = [hub.thread.task_queue.submit(TaskSpec(f"t{n}", by)) for n in range(count)]
    return [future.get(timeout=30)["task_id"] for future in futures]


@pytest.mark.parametrize("route", ["/api/tasks", "/api/tasks/dead-letter"])
@pytest.mark.parametrize("name", ["limit", "cursor"])
@pytest.mark.parametrize("bad", [*BAD_NUMBERS, "1001"])
def test_a_bad_number_is_400_and_changes_nothing(hub, route, name, bad):
    if name == "cursor" and bad == "1001":
        bad = "9223372036854775808"  # past 64 bits
    task_id = hub.submit()
    worker = hub.agent("w1")
    worker.recv("task_assign", task_id=task_id)

    reply = hub.api("GET", f"{route}?{name}={quote(bad)}")

    assert reply.status == 400, reply
    assert reply.body["error"].startswith(f"invalid_query: {name} must be an integer"), reply
    # TaskQueue neither failed nor rebuilt itself: the assignment stands, the hub answers.
    assert hub.task(task_id)["assigned_to"] == "w1"
    assert hub.api("GET", f"{route}?{name}=5").status == 200


@pytest.mark.parametrize(
    "query",
    ["assigned_to=" + "x" * 256, "status=dead", "priority=2", "limit=1&limit=2", "limit=%FF"],
)
def test_bad_filters_are_400(hub, query):
    reply = hub.api("GET", "/api/tasks?" + query)
    assert reply.status == 400, reply
    assert reply.body["error"].startswith("invalid_query: "), reply


def test_a_list_gives_100_by_default_at_most_1000_and_a_cursor_to_the_rest(hub):
    submitted = submit_many(hub, 1_005)

    first = hub.api("GET", "/api/tasks").body
    assert first["count"] == 100
    assert [t["id"] for t in first["tasks"]] == submitted[:100]
    assert isinstance(first["next_cursor"], int)

    big = hub.api("GET", f"/api/tasks?limit=1000&cursor={first['next_cursor']}").body
    assert big["count"] == 905
    assert [t["id"] for t in big["tasks"]] == submitted[100:]
    assert big["next_cursor"] is None

    everything = hub.api("GET", "/api/tasks?limit=1000").body
    assert everything["count"] == 1000 and everything["next_cursor"] is not None
    assert hub.api("GET", "/api/tasks?limit=1001").status == 400


def test_the_dead_letter_list_is_paged_too(hub):
    doomed = [hub.submit(f"doomed {n}", max_retries=0) for n in range(3)]
    worker = hub.agent("w1")
    for task_id in doomed:
        assign = worker.recv("task_assign", task_id=task_id)
        worker.send({"type": "task_failed", "task_id": task_id, "generation": assign["generation"]})
        worker.recv("task_ack", task_id=task_id, status="dead_letter")

    page = hub.api("GET", "/api/tasks/dead-letter?limit=2").body
    assert [t["id"] for t in page["tasks"]] == doomed[:2]
    rest = hub.api("GET", f"/api/tasks/dead-letter?limit=2&cursor={page['next_cursor']}").body
    assert [t["id"] for t in rest["tasks"]] == doomed[2:]
    assert rest["next_cursor"] is None
