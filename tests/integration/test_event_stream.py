"""The event stream (``GET /api/events``) and ``?wait=`` against a real hub."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

import pytest

from agentcom.messages import TaskSpec
from tests.integration.helpers import fail_to_dead_letter, http
from tests.integration.sse import SseClient
from tests.waiting import wait_until

TASK_TYPES = {
    "task_queued",
    "task_assigned",
    "task_accepted",
    "task_progress",
    "task_completed",
    "task_failed",
    "task_reclaimed",
    "task_rejected",
    "task_dead_letter",
    "task_requeued",
}


@pytest.fixture
def streams():
    opened: list[SseClient] = []
    yield opened
    for client in opened:
        client.close()


def stream(hub, streams, query: str = "", token: Any = None, **headers: str) -> SseClient:
    token = hub.admin_token if token is None else token
    client = SseClient(
        hub.http_url, f"/api/events{query}", {"Authorization": f"Bearer {token}", **headers}
    )
    streams.append(client)
    assert client.status == 200, client.body
    return client


def work(agent, task_id: str, progress: float = 50) -> None:
    assign = agent.recv("task_assign", task_id=task_id)
    agent.send({"type": "task_accepted", "task_id": task_id})
    agent.recv("task_ack", task_id=task_id, status="accepted")
    agent.send({"type": "task_progress", "task_id": task_id, "progress": progress})
    agent.send({"type": "task_complete", "task_id": task_id, "generation": assign["generation"]})
    agent.recv("task_ack", task_id=task_id, status="complete")


def test_every_event_type_streams_in_order_with_increasing_ids(hub, streams):
    events = stream(hub, streams)
    assert events.content_type.startswith("text/event-stream")
    worker = hub.agent("w1", ["py"])
    done = hub.submit("first", needed_capabilities=["py"], priority="high")
    work(worker, done, progress=42.5)

    retried = hub.submit("second", max_retries=2)
    assign = worker.recv("task_assign", task_id=retried)
    worker.send({"type": "task_failed", "task_id": retried, "generation": assign["generation"]})
    worker.recv("task_ack", task_id=retried, status="retried")
    worker.recv("task_assign", task_id=retried)
    worker.send({"type": "task_rejected", "task_id": retried, "reason": "busy"})
    worker.recv("task_ack", task_id=retried, status="rejected")
    worker.close()  # "busy" holds its next offer back a second; then it is gone
    other = hub.agent("w2")
    other.recv("task_assign", task_id=retried)
    other.close()  # reclaimed: disconnected
    doomed = hub.submit("third", max_retries=0)
    w3 = hub.agent("w3")
    fail_to_dead_letter(w3, retried)  # the older one comes first
    fail_to_dead_letter(w3, doomed)
    w3.close()
    assert hub.api("POST", f"/api/tasks/{doomed}/retry").status == 200
    hub.api("POST", "/api/message", {"to": "w1", "payload": {"secret": "not shown"}})
    hub.api("POST", "/api/channels", {"name": "ops"}, token=hub.admin_token)
    hub.api("POST", "/api/channels/ops/publish", {"payload": {"x": 1}}, token=hub.admin_token)
    seen = [events.next()]
    while seen[-1].event != "channel_published":
        seen.append(events.next())
    last = seen[-1]
    ids = [e.id for e in seen]
    assert ids == sorted(set(ids)), "strictly increasing"
    assert all(e.data["id"] == e.id and e.data["type"] == e.event for e in seen)
    assert all(isinstance(e.data["timestamp"], int) for e in seen)
    assert {e.event for e in seen} == TASK_TYPES | {
        "agent_joined",
        "agent_left",
        "agent_state",
        "message_sent",
        "channel_published",
    }

    def life(task_id: str) -> list[tuple[str, Any]]:
        return [(e.event, e.data.get("agent_id")) for e in seen if e.data.get("task_id") == task_id]

    assert life(done) == [
        ("task_queued", None),
        ("task_assigned", "w1"),
        ("task_accepted", "w1"),
        ("task_progress", "w1"),
        ("task_completed", "w1"),
    ]
    assert life(retried) == [
        ("task_queued", None),
        ("task_assigned", "w1"),
        ("task_failed", "w1"),
        ("task_assigned", "w1"),
        ("task_rejected", "w1"),
        ("task_assigned", "w2"),
        ("task_reclaimed", "w2"),
        ("task_assigned", "w3"),
        ("task_dead_letter", "w3"),
    ]
    assert [e for e, _ in life(doomed)][-2:] == ["task_dead_letter", "task_requeued"]
    by_type = {e.event: e.data for e in seen if e.data.get("task_id") in (done, retried, None)}
    assert by_type["task_queued"]["priority"] in ("high", "normal")
    first = [e.data for e in seen if e.data.get("task_id") == done]
    assert first[0] == {
        "id": first[0]["id"],
        "type": "task_queued",
        "timestamp": first[0]["timestamp"],
        "task_id": done,
        "priority": "high",
        "needed_capabilities": ["py"],
        "submitted_by": "submitter",
    }
    assert first[3]["progress"] == 42.5
    assert "result" not in first[4] and first[4]["generation"] == 1
    reclaimed = next(e.data for e in seen if e.event == "task_reclaimed")
    assert reclaimed["cause"] == "disconnected"
    dead = next(e.data for e in seen if e.event == "task_dead_letter")
    assert (dead["agent_id"], dead["error"]) == ("w3", "boom")
    failed = next(e.data for e in seen if e.event == "task_failed")
    assert failed["retry_count"] == 1
    joined = next(e.data for e in seen if e.event == "agent_joined")
    assert (joined["agent_id"], joined["capabilities"]) == ("w1", ["py"])
    states = [
        e.data["fsm_state"] for e in seen if e.event == "agent_state" and e.data["agent_id"] == "w1"
    ]
    assert states[:4] == ["idle", "assigned", "working", "idle"]
    assert any(e.event == "agent_left" and e.data["agent_id"] == "w2" for e in seen)
    sent = next(e.data for e in seen if e.event == "message_sent")
    assert (sent["from"], sent["to"], "payload" in sent) == ("submitter", "w1", False)
    assert (last.data["channel"], last.data["from"], last.data["seq"]) == ("ops", "operator", 1)


def test_filters_by_task_agent_and_type(hub, streams):
    first = hub.submit()
    by_task = stream(hub, streams, f"?task_id={first}")
    by_agent = stream(hub, streams, "?agent_id=w2")
    by_type = stream(hub, streams, "?types=task_completed,agent_joined")
    worker = hub.agent("w1")
    work(worker, first)
    second = hub.submit(needed_capabilities=["two"])
    w2 = hub.agent("w2", ["two"])
    work(w2, second)
    hub.submit("marker")

    # Its task_queued may still be on its way to the loop as the stream opens.
    assert [e.event for e in by_task.drain() if e.event != "task_queued"] == [
        "task_assigned",
        "task_accepted",
        "task_progress",
        "task_completed",
    ]
    agent_events = by_agent.drain()
    assert {e.data.get("agent_id") for e in agent_events} == {"w2"}
    assert [e.event for e in agent_events][:2] == ["agent_joined", "agent_state"]
    assert "task_completed" in [e.event for e in agent_events]
    assert [(e.event, e.data.get("task_id")) for e in by_type.drain()] == [
        ("agent_joined", None),
        ("task_completed", first),
        ("agent_joined", None),
        ("task_completed", second),
    ]


@pytest.mark.parametrize(
    "query",
    ["?types=task_done", "?types=task_queued,bogus", "?last_event_id=x", "?task_id=a&task_id=b"],
)
def test_bad_filters_are_400(hub, query):
    reply = http("GET", f"{hub.http_url}/api/events{query}", token=hub.admin_token)
    assert reply.status == 400 and reply.body["error"].startswith("invalid_query"), reply


def test_no_token_or_a_wrong_one_is_401(hub):
    assert http("GET", f"{hub.http_url}/api/events").status == 401
    assert http("GET", f"{hub.http_url}/api/events?token=nope").status == 401
    assert http("GET", f"{hub.http_url}/api/events", token="nope").status == 401


def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(hub, streams):
    first = stream(hub, streams)
    tasks = [hub.submit(f"t{i}") for i in range(5)]
    got = first.take(5)
    assert [e.data["task_id"] for e in got] == tasks
    first.close()
    more = [hub.submit(f"u{i}") for i in range(5)]

    resumed = stream(hub, streams, **{"Last-Event-ID": str(got[2].id)})
    again = resumed.take(7)
    assert [e.data["task_id"] for e in again] == tasks[3:] + more
    assert [e.id for e in again] == list(range(got[2].id + 1, got[2].id + 8))
    by_query = stream(hub, streams, f"?last_event_id={got[4].id}")
    assert [e.data["task_id"] for e in by_query.take(5)] == more
    assert resumed.drain() == [] and by_query.drain() == []


def test_an_id_the_hub_does_not_hold_gets_a_reset_first(hub, streams):
    stream(hub, streams).next("task_queued", task_id=hub.submit())  # the hub has it
    client = stream(hub, streams, **{"Last-Event-ID": "12"})
    reset = client.next()
    assert reset.event == "reset" and reset.data["type"] == "reset"
    task_id = hub.submit()
    following = client.next()
    assert following.id == reset.id + 1 and following.data["task_id"] == task_id


def test_an_agent_token_is_scoped(hub, streams):
    alice = hub.thread.create_token("alice")
    worker = hub.agent("w1")
    scoped = stream(hub, streams, token=alice)
    everything = stream(hub, streams)
    theirs = hub.submit("the submitter's")
    work(worker, theirs)
    own = http("POST", f"{hub.http_url}/api/tasks", {"description": "a"}, token=alice)
    own_id = own.body["task_id"]
    work(worker, own_id)
    hub.api("POST", "/api/message", {"to": "w1", "payload": {}})
    hub.api("POST", "/api/message", {"to": "alice", "payload": {}})
    hub.api("POST", "/api/message", {"payload": {}})
    everything.next("message_sent", to=None)
    w2 = hub.agent("w2")
    everything.next("agent_joined", agent_id="w2")
    w2.close()
    everything.next("agent_left", agent_id="w2")

    shown = scoped.drain()
    task_ids = {e.data["task_id"] for e in shown if "task_id" in e.data}
    assert task_ids == {own_id}
    assert [e.data["to"] for e in shown if e.event == "message_sent"] == ["alice", None]
    assert {e.event for e in shown} >= {"agent_joined", "agent_left", "agent_state"}
    assert theirs in {e.data.get("task_id") for e in everything.drain()} | {theirs}


def test_the_token_in_the_uri_is_never_logged(hub, streams, caplog):
    secret = hub.thread.create_token("watcher", role="viewer")
    with caplog.at_level(logging.DEBUG):
        client = SseClient(hub.http_url, f"/api/events?token={secret}&types=task_queued")
        streams.append(client)
        assert client.status == 200
        hub.submit()
        client.next("task_queued")
        client.close()
        refused = http("GET", f"{hub.http_url}/api/events?token={secret}&types=nope")
        assert refused.status == 400
        http("GET", f"{hub.http_url}/api/tasks/none?token={secret}", token=hub.token)
        # The stream's access line is written when the server sees it close.
        wait_until(
            lambda: any("types=task_queued" in r.getMessage() for r in caplog.records),
            what="the event stream's access line",
        )
    lines = [record.getMessage() for record in caplog.records]
    access = [line for line in lines if "/api/events" in line]
    assert access, lines
    assert all(secret not in line for line in lines)
    assert any("token=[redacted]" in line for line in access)


def test_a_client_that_never_reads_is_cut_off_and_the_hub_keeps_serving(hub, streams):
    host, port = hub.http_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET /api/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {hub.admin_token}"
        "\r\n\r\n".encode()
    )
    reader = stream(hub, streams, "?types=task_queued")
    # Big events (long capability names), published straight into TaskQueue: far
    # more than the kernel buffers and the client's queue of 1,000 events hold.
    capabilities = tuple(f"capability-{i:03d}-" + "x" * 80 for i in range(40))
    started = time.monotonic()
    for i in range(1_500):
        hub.thread.task_queue.submit(TaskSpec(f"t{i}", "load", needed_capabilities=capabilities))
    hub.thread.task_queue.stats().get(timeout=30)
    assert hub.api("GET", "/api/tasks/stats").body["by_status"]["queued"] == 1_500
    assert len(reader.take(1_500, timeout=30)) == 1_500, "a reading client gets them all"
    elapsed = time.monotonic() - started

    sock.settimeout(10)
    received = 0
    try:
        while chunk := sock.recv(65536):
            received += len(chunk)
    except ConnectionResetError:
        pass
    assert received < 1_500 * 3_000, "cut off before it got everything"
    assert _events_hub(hub).clients == 1, "only the reading client is left"
    assert elapsed < 30
    sock.close()


def test_wait_answers_on_completion_well_before_the_deadline(hub, clients):
    task_id = hub.submit()
    worker = hub.agent("w1")
    answers: list[Any] = []

    def wait() -> None:
        started = time.monotonic()
        reply = hub.api("GET", f"/api/tasks/{task_id}?wait=20")
        answers.append((reply, time.monotonic() - started))

    waiting = threading.Thread(target=wait)
    waiting.start()
    _wait_until_waiting(hub, 1)
    work(worker, task_id)
    waiting.join(10)
    reply, took = answers[0]
    assert reply.status == 200 and reply.body["status"] == "completed"
    assert took < 5


def test_wait_answers_on_dead_letter_and_at_once_when_already_ended(hub):
    task_id = hub.submit(max_retries=0)
    worker = hub.agent("w1")
    answers: list[Any] = []
    waiting = threading.Thread(
        target=lambda: answers.append(hub.api("GET", f"/api/tasks/{task_id}?wait=20"))
    )
    waiting.start()
    _wait_until_waiting(hub, 1)
    fail_to_dead_letter(worker, task_id)
    waiting.join(10)
    assert answers[0].body["status"] == "dead_letter"
    started = time.monotonic()
    assert hub.api("GET", f"/api/tasks/{task_id}?wait=30").body["status"] == "dead_letter"
    assert time.monotonic() - started < 1


def test_wait_times_out_with_the_current_state(hub):
    task_id = hub.submit()
    worker = hub.agent("w1")
    worker.recv("task_assign", task_id=task_id)
    started = time.monotonic()
    reply = hub.api("GET", f"/api/tasks/{task_id}?wait=0.5")
    assert 0.5 <= time.monotonic() - started < 3
    assert reply.status == 200 and reply.body["status"] == "assigned"
    assert _events_hub(hub).waiting == 0


@pytest.mark.parametrize("wait", ["0", "61", "-1", "x", "1e3", "60.0001"])
def test_a_bad_wait_is_400(hub, wait):
    task_id = hub.submit()
    reply = hub.api("GET", f"/api/tasks/{task_id}?wait={wait}")
    assert reply.status == 400 and reply.body["error"].startswith("invalid_query: wait"), reply


def test_wait_is_scoped_like_get(hub):
    task_id = hub.submit()
    stranger = hub.thread.create_token("stranger")
    started = time.monotonic()
    reply = hub.api("GET", f"/api/tasks/{task_id}?wait=5", token=stranger)
    assert reply.status == 404 and time.monotonic() - started < 2
    assert _events_hub(hub).waiting == 0


def test_two_hundred_waiters_cost_no_threads(hub, clients):
    task_id = hub.submit()
    worker = hub.agent("w1")
    hub.api("GET", f"/api/tasks/{task_id}?wait=0.1")  # warm up: executor, pools
    before = threading.active_count()

    async def wait_all() -> list[int]:
        reader_writers = []
        for _ in range(200):
            reader, writer = await asyncio.open_connection(*_address(hub))
            writer.write(
                f"GET /api/tasks/{task_id}?wait=30 HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {hub.token}\r\n\r\n".encode()
            )
            reader_writers.append((reader, writer))
        await asyncio.sleep(0)
        return reader_writers  # type: ignore[return-value]

    connections = clients.run(wait_all())
    _wait_until_waiting(hub, 200)
    during = threading.active_count()
    work(worker, task_id)

    async def read_all() -> list[bytes]:
        answers = []
        for reader, writer in connections:  # type: ignore[attr-defined]
            answers.append(await asyncio.wait_for(reader.read(65536), 10))
            writer.close()
        return answers

    answers = clients.run(read_all(), timeout=30)
    assert all(b" 200 " in a.split(b"\r\n")[0] and b'"completed"' in a for a in answers)
    assert during - before <= 1, (before, during)


def _address(hub) -> tuple[str, int]:
    host, port = hub.http_url.removeprefix("http://").split(":")
    return host, int(port)


def _events_hub(hub):
    return hub.thread.hub.events


def _wait_until_waiting(hub, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _events_hub(hub).waiting < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{_events_hub(hub).waiting} waiters, not {count}")
        time.sleep(0.02)
