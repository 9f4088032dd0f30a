"""EventFeed numbers HubEvents; EventHub keeps the ring, scopes, filters, cuts off slow
clients and wakes waiters. EventHub runs on an asyncio loop, here without sockets."""

from __future__ import annotations

import asyncio
import json
import queue
from typing import Any

import pykka
import pytest

from agentcom.actors.event_feed import EventFeed, WireEvent, wire_event
from agentcom.http.events import EventHub, View, redact_tokens
from agentcom.messages import EVENTS_TOPIC, HubEvent


def task_event(event_id: int, kind: str = "task_queued", **over: Any) -> WireEvent:
    fields = {"task_id": "t1", "agent_id": "w1", "submitted_by": "alice", **over}
    event = HubEvent(
        kind,
        1,
        fields,
        task_id=fields["task_id"],
        agent_id=fields["agent_id"],
        submitted_by=fields["submitted_by"],
    )
    return wire_event(event_id, event)


def message_event(event_id: int, sender: str, to: str | None) -> WireEvent:
    fields = {"message_id": "m", "from": sender, "to": to}
    return wire_event(event_id, HubEvent("message_sent", 1, fields, agent_id=sender))


class FakeConnection:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class FakeRequest:
    def __init__(self) -> None:
        self.connection = FakeConnection()


class FakeHandler:
    """What EventClient needs of a handler; ``stuck`` flushes never complete."""

    def __init__(self, stuck: bool = False) -> None:
        self.request = FakeRequest()
        self.written: list[str] = []
        self.stuck = stuck

    def write(self, text: str) -> None:
        self.written.append(text)

    def flush(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.stuck:
            future.set_result(None)
        return future

    def ids(self) -> list[int]:
        text = "".join(self.written)
        return [int(line[4:]) for line in text.split("\n") if line.startswith("id: ")]

    def types(self) -> list[str]:
        text = "".join(self.written)
        return [line[7:] for line in text.split("\n") if line.startswith("event: ")]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_resume_gets_exactly_what_it_missed_while_the_ring_holds_it() -> None:
    async def scenario() -> None:
        hub = EventHub(last_id=100, ring_size=5)
        hub.publish([task_event(i) for i in range(101, 109)])  # the ring: 104..108

        cases = {103: [104, 105, 106, 107, 108], 106: [107, 108], 108: []}
        for last, expected in cases.items():
            handler = FakeHandler()
            hub.attach(handler, View(None), last)  # type: ignore[arg-type]
            await settle()
            assert handler.ids() == expected, last
            assert "reset" not in handler.types()

        for too_old_or_unknown in (50, 102, 10**12, -1):
            if too_old_or_unknown == -1:
                too_old_or_unknown = hub.last_id + 1  # not yet given: from another run
            handler = FakeHandler()
            hub.attach(handler, View(None), too_old_or_unknown)  # type: ignore[arg-type]
            hub.publish([task_event(hub.last_id + 1)])
            await settle()
            assert handler.types() == ["reset", "task_queued"], too_old_or_unknown
            reset_id, next_id = handler.ids()
            assert next_id == reset_id + 1, "resuming from the reset's id misses nothing"

    run(scenario())


def test_a_fresh_client_gets_no_reset_and_then_live_events_in_order() -> None:
    async def scenario() -> None:
        hub = EventHub(last_id=0)
        hub.publish([task_event(1)])
        handler = FakeHandler()
        hub.attach(handler, View(None), None)  # type: ignore[arg-type]
        for i in range(2, 6):
            hub.publish([task_event(i)])
        await settle()
        assert handler.ids() == [2, 3, 4, 5]
        assert handler.written[0].startswith(":"), "a comment first: the headers go out"

    run(scenario())


def test_an_empty_ring_resumes_only_from_its_last_id() -> None:
    async def scenario() -> None:
        hub = EventHub(last_id=500)
        ok, bad = FakeHandler(), FakeHandler()
        hub.attach(ok, View(None), 500)  # type: ignore[arg-type]
        hub.attach(bad, View(None), 499)  # type: ignore[arg-type]
        await settle()
        assert ok.types() == [] and bad.types() == ["reset"]

    run(scenario())


def test_a_client_that_stops_reading_is_cut_off_and_the_others_go_on() -> None:
    async def scenario() -> None:
        hub = EventHub(last_id=0, client_queue=10)
        stuck, fine = FakeHandler(stuck=True), FakeHandler()
        slow = hub.attach(stuck, View(None), None)  # type: ignore[arg-type]
        hub.attach(fine, View(None), None)  # type: ignore[arg-type]
        for i in range(1, 11):
            hub.publish([task_event(i)])
            await settle()
        assert not slow.closed, "ten waiting events are allowed"
        hub.publish([task_event(11), task_event(12)])
        await settle()
        assert slow.closed and stuck.request.connection.closed
        assert slow.done.done()
        assert hub.clients == 1
        hub.publish([task_event(13)])
        await settle()
        assert fine.ids() == list(range(1, 14))

    run(scenario())


def test_filters_and_an_agent_tokens_scope() -> None:
    events = [
        task_event(1, submitted_by="alice", agent_id=None),
        task_event(2, "task_assigned", task_id="t2", submitted_by="bob", agent_id="w1"),
        task_event(3, "task_assigned", task_id="t3", submitted_by="bob", agent_id="w2"),
        wire_event(4, HubEvent("agent_joined", 1, {"agent_id": "w2"}, agent_id="w2")),
        message_event(5, "w2", "w1"),
        message_event(6, "w2", "w3"),
        message_event(7, "w3", None),
        wire_event(8, HubEvent("channel_published", 1, {"channel": "c"}, agent_id="w3")),
    ]

    def shown(view: View) -> list[int]:
        return [e.id for e in events if view.wants(e)]

    assert shown(View(None)) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert shown(View("alice")) == [1, 4, 7, 8]
    assert shown(View("w1")) == [2, 4, 5, 7, 8]
    assert shown(View("bob")) == [2, 3, 4, 7, 8]
    assert shown(View(None, task_id="t3")) == [3]
    assert shown(View(None, agent_id="w2")) == [3, 4, 5, 6]
    assert shown(View(None, agent_id="w1")) == [2, 5], "a message's recipient too"
    assert shown(View(None, types=frozenset({"message_sent", "agent_joined"}))) == [4, 5, 6, 7]
    assert shown(View("w1", types=frozenset({"task_assigned"}))) == [2], "scope and filter"


def test_waiters_wake_on_the_tasks_end_only() -> None:
    async def scenario() -> None:
        hub = EventHub(last_id=0)
        waiters = [hub.wait_for_end("t1") for _ in range(200)]
        other = hub.wait_for_end("t2")
        hub.publish([task_event(1, "task_progress"), task_event(2, "task_failed")])
        assert not any(w.done() for w in waiters)
        hub.publish([task_event(3, "task_dead_letter")])
        assert {w.result() for w in waiters} == {"task_dead_letter"}
        assert not other.done() and hub.waiting == 1
        hub.stop_waiting("t2", other)
        assert other.cancelled() and hub.waiting == 0

    run(scenario())


def test_tokens_in_uris_are_redacted() -> None:
    assert redact_tokens("/api/events?token=abc123&types=x") == (
        "/api/events?token=[redacted]&types=x"
    )
    assert redact_tokens("/dashboard?a=1&TOKEN=s3cret") == "/dashboard?a=1&TOKEN=[redacted]"
    assert redact_tokens("/api/events?types=a") == "/api/events?types=a"


def test_the_feed_numbers_events_in_order_and_hands_them_over_in_batches(
    pubsub_ref: pykka.ActorRef[Any],
) -> None:
    batches: queue.Queue[list[WireEvent]] = queue.Queue()
    feed = EventFeed.start(pubsub_ref, batches.put, 1000)
    feed.proxy().actor_urn.get(timeout=5)
    events = [HubEvent("agent_left", i, {"agent_id": f"a{i}"}, agent_id=f"a{i}") for i in range(50)]
    pubsub_ref.proxy().publish(EVENTS_TOPIC, events[:30]).get(timeout=5)
    pubsub_ref.proxy().publish(EVENTS_TOPIC, ["not an event", *events[30:]]).get(timeout=5)

    got: list[WireEvent] = []
    while len(got) < 50:
        got.extend(batches.get(timeout=5))
    assert [e.id for e in got] == list(range(1000, 1050))
    first = got[0]
    assert first.text == (
        'id: 1000\nevent: agent_left\ndata: {"id":1000,"type":"agent_left","timestamp":0,'
        '"agent_id":"a0"}\n\n'
    )
    assert json.loads(first.text.split("data: ")[1]) == {
        "id": 1000,
        "type": "agent_left",
        "timestamp": 0,
        "agent_id": "a0",
    }
    with pytest.raises(queue.Empty):
        batches.get(timeout=0.2)


def test_a_ping_comment_goes_to_every_client_and_a_close_ends_them_all() -> None:
    async def scenario() -> None:
        hub = EventHub(last_id=0)
        handlers = [FakeHandler(), FakeHandler()]
        clients = [hub.attach(h, View(None), None) for h in handlers]  # type: ignore[arg-type]
        waiter = hub.wait_for_end("t1")
        hub._send_ping()
        await settle()
        assert all("".join(h.written).endswith(": ping\n\n") for h in handlers)
        hub.close()
        assert all(c.closed and c.done.done() for c in clients)
        assert all(h.request.connection.closed for h in handlers)
        assert waiter.result() == "closing"

    run(scenario())
