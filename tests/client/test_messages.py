"""Client and AsyncClient: messages, mailboxes, channels and threads against a real hub."""

from __future__ import annotations

from typing import Any

import pytest

from agentcom.client import Conflict, Forbidden, NotFound
from tests.integration.conftest import LiveHub

pytestmark = pytest.mark.stores("sqlite")  # over HTTP only: the store is not what is tested


@pytest.fixture
def alice(connect: Any, hub: LiveHub) -> Any:
    return connect(hub.http_url, hub.thread.create_token("alice"))


@pytest.fixture
def bob(connect: Any, hub: LiveHub) -> Any:
    return connect(hub.http_url, hub.thread.create_token("bob"))


def test_send_then_read_and_ack_the_mailbox(alice: Any, bob: Any) -> None:
    message_id = alice.send("bob", {"text": "review PR 42?"}, type="request")
    box = bob.mailbox("bob")
    assert box.agent_id == "bob" and box.count == 1 and box.evicted == 0
    [message] = box.messages
    assert (message.id, message.sender, message.to, message.type) == (
        message_id,
        "alice",
        "bob",
        "request",
    )
    assert message.payload == {"text": "review PR 42?"} and message.seq == box.last_seq
    assert bob.ack("bob", box.last_seq) == box.last_seq
    assert bob.mailbox("bob").messages == []
    assert bob.mailbox("bob", since=0, limit=10).count == 0


def test_a_broadcast_lands_in_the_mailbox_of_an_agent_away(alice: Any, bob: Any) -> None:
    message_id = alice.broadcast({"text": "standup"})
    [message] = bob.mailbox("bob").messages
    assert (message.id, message.to, message.sender) == (message_id, None, "alice")


def test_an_unknown_recipient_is_not_found(alice: Any) -> None:
    with pytest.raises(NotFound) as unknown:
        alice.send("nobody", {"text": "hello?"})
    assert unknown.value.error == "unknown_recipient"


def test_another_agents_mailbox_is_forbidden(alice: Any, bob: Any) -> None:
    with pytest.raises(Forbidden):
        alice.mailbox("bob")


def test_channels_create_list_subscribe_publish_history(alice: Any, bob: Any) -> None:
    assert alice.create_channel("#Builds", "CI news") == "builds"
    with pytest.raises(Conflict) as exists:
        alice.create_channel("builds")
    assert exists.value.error == "channel_exists"
    [listed] = bob.channels()
    assert (listed.name, listed.description, listed.created_by) == ("builds", "CI news", "alice")
    assert bob.subscribe("builds") == "subscribed"
    assert bob.subscribe("builds") == "already_subscribed"
    assert bob.channel("builds").subscribers == ["bob"]
    published = alice.publish("builds", {"text": "main is green"}, type="status")
    assert (published.channel, published.seq) == ("builds", 1)
    [post] = bob.history("builds")
    assert post.seq == 1 and post.message.id == published.id
    assert (post.message.sender, post.message.payload) == ("alice", {"text": "main is green"})
    assert bob.history("builds", since=1) == []
    assert bob.unsubscribe("builds") == "unsubscribed"
    with pytest.raises(NotFound) as missing:
        bob.channel("nope")
    assert missing.value.error == "channel_not_found"


def test_a_thread_holds_the_request_and_its_reply(alice: Any, bob: Any) -> None:
    request = alice.send("bob", {"text": "can you?"})
    reply = bob.send("alice", {"text": "on it"}, reply_to=request)
    thread = alice.thread(reply)
    assert thread.root == request
    assert [message.id for message in thread.messages] == [request, reply]
    assert thread.messages[1].reply_to == request
    with pytest.raises(NotFound):
        alice.thread("0000000000000000")
