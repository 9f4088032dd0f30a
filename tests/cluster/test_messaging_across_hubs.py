"""Messages between agents on different hubs of one PostgreSQL database (issue 10).

Two real hubs, real sockets: a direct message, a broadcast and a channel
publish made on one hub reach an agent connected to the other, pushed there
from its mailbox with its seq; what is acknowledged is gone on every hub;
messages to one agent from both hubs at once arrive each once, in seq order.
"""

from __future__ import annotations

import threading

from tests.cluster.conftest import StartHub, tokens_known
from tests.integration.helpers import WsAgent
from tests.integration.messaging_helpers import (
    create_channel,
    mailbox,
    publish,
    send,
    token,
    ws_send,
)
from tests.waiting import wait_until


def test_a_direct_message_from_one_hub_is_pushed_to_its_recipient_on_the_other(
    start_hub: StartHub,
) -> None:
    first, second = start_hub(), start_hub()
    bob_token = token(second, "bob")
    tokens_known(first, second)
    alice = first.agent("alice")
    bob = second.agent("bob", token=bob_token)

    message_id = ws_send(alice, {"text": "across"}, to="bob", message_type="request")

    pushed = bob.recv("message", id=message_id)
    assert pushed == {
        "type": "message",
        "id": message_id,
        "from": "alice",
        "to": "bob",
        "message_type": "request",
        "payload": {"text": "across"},
        "reply_to": None,
        "timestamp": pushed["timestamp"],
        "seq": 1,
    }
    bob.send({"type": "mailbox_ack", "seq": 1})
    assert bob.recv("mailbox_acked") == {"type": "mailbox_acked", "up_to": 1}
    for hub in (first, second):
        assert mailbox(hub, "bob", bob_token)["messages"] == []


def test_a_broadcast_reaches_the_agents_of_both_hubs(start_hub: StartHub) -> None:
    first, second = start_hub(), start_hub()
    there_token = token(second, "there")
    tokens_known(first, second)
    sender, here = first.agent("sender"), first.agent("here")
    there = second.agent("there", token=there_token)

    message_id = ws_send(sender, {"text": "all hands"})

    assert here.recv("message", id=message_id)["payload"] == {"text": "all hands"}
    pushed = there.recv("message", id=message_id)
    assert (pushed["from"], pushed["to"], pushed["seq"]) == ("sender", None, 1)
    sender.round_trip()
    assert sender.pending("message") == []


def test_a_channel_publish_reaches_a_subscriber_on_the_other_hub(start_hub: StartHub) -> None:
    first, second = start_hub(), start_hub()
    publisher_token = token(first, "publisher")
    subscriber_token = token(second, "subscriber")
    tokens_known(first, second)
    subscriber = second.agent("subscriber", token=subscriber_token)
    create_channel(first, publisher_token, "builds")
    subscriber.send({"type": "channel_subscribe", "channel": "builds"})
    subscriber.recv("channel_subscribed", channel="builds")

    published = publish(first, publisher_token, "builds", {"status": "green"})

    pushed = subscriber.recv("message", id=published["id"])
    assert (pushed["channel"], pushed["from"], pushed["payload"]) == (
        "builds",
        "publisher",
        {"status": "green"},
    )
    assert pushed["seq"] == 1  # a mailbox copy: acknowledged like any other
    subscriber.round_trip()
    assert subscriber.pending("channel_message") == []


def test_an_agent_connecting_to_the_other_hub_gets_what_was_sent_while_it_was_away(
    start_hub: StartHub,
) -> None:
    first, second = start_hub(), start_hub()
    alice_token = token(first, "alice")
    token(second, "late")
    tokens_known(first, second)
    sent = [send(first, alice_token, {"n": n}, to="late") for n in range(3)]

    late = second.agent("late")

    assert [late.recv("message", id=message_id)["seq"] for message_id in sent] == [1, 2, 3]


def test_messages_from_both_hubs_at_once_arrive_each_once_in_seq_order(
    start_hub: StartHub,
) -> None:
    first, second = start_hub(), start_hub()
    bob_token = token(second, "bob")
    tokens_known(first, second)
    near, far = second.agent("near"), first.agent("far")
    bob = second.agent("bob", token=bob_token)
    count = 40

    def send_from(agent: WsAgent, name: str) -> None:
        for n in range(count):
            agent.send({"type": "message", "to": "bob", "payload": {"from": name, "n": n}})
        for _ in range(count):
            agent.recv("message_sent")

    senders = [
        threading.Thread(target=send_from, args=(agent, name))
        for agent, name in ((near, "near"), (far, "far"))
    ]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(timeout=30)
    pushed = [bob.recv("message") for _ in range(2 * count)]

    assert [frame["seq"] for frame in pushed] == list(range(1, 2 * count + 1))
    for name in ("near", "far"):
        numbers = [f["payload"]["n"] for f in pushed if f["payload"]["from"] == name]
        assert numbers == list(range(count))
    bob.round_trip()
    assert bob.pending("message") == [], "a message was pushed twice"


def test_what_an_agent_acknowledged_is_not_pushed_again_when_it_moves_hubs(
    start_hub: StartHub,
) -> None:
    first, second = start_hub(), start_hub()
    bob_token = token(second, "bob")
    tokens_known(first, second)
    alice = first.agent("alice")
    bob = second.agent("bob", token=bob_token)
    sent = [ws_send(alice, {"n": n}, to="bob") for n in range(3)]
    assert [bob.recv("message", id=message_id)["seq"] for message_id in sent] == [1, 2, 3]
    bob.send({"type": "mailbox_ack", "seq": 2})
    bob.recv("mailbox_acked")

    moved = first.agent("bob", token=bob_token)

    assert moved.recv("message")["seq"] == 3
    wait_until(lambda: bob.closed.is_set(), what="the older socket closed")
    moved.round_trip()
    assert moved.pending("message") == []
