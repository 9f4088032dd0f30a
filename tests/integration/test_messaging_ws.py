"""Messages over the socket: send, push, acknowledge, re-push after reconnect, bad frames."""

from __future__ import annotations

import re

import pytest

from tests.integration.messaging_helpers import (
    HEX16,
    frames_in_order,
    mailbox,
    send,
    token,
    ws_error,
    ws_send,
)


def connect(hub, agent_id, agent_token):
    """An identified socket, and every frame it got, in order, up to ``identified``."""
    agent = hub.socket()
    agent.send({"type": "identify", "agent_id": agent_id, "token": agent_token})
    seen = [agent.recv()]
    while seen[-1]["type"] not in ("identified", "error"):
        seen.append(agent.recv())
    assert seen[-1] == {"type": "identified", "agent_id": agent_id}, seen
    agent.agent_id = agent_id
    return agent, seen[:-1]


def test_a_message_frame_is_answered_message_sent_and_pushed_with_seq(hub):
    alice, bob = hub.agent("alice"), hub.agent("bob")

    alice.send(
        {
            "type": "message",
            "to": "bob",
            "message_type": "request",
            "payload": {"text": "hi"},
            "reply_to": None,
            "from": "mallory",
        }
    )

    sent = alice.recv("message_sent")
    assert set(sent) == {"type", "id"} and re.fullmatch(HEX16, sent["id"]), sent
    pushed = bob.recv("message", id=sent["id"])
    assert pushed == {
        "type": "message",
        "id": sent["id"],
        "from": "alice",
        "to": "bob",
        "message_type": "request",
        "payload": {"text": "hi"},
        "reply_to": None,
        "timestamp": pushed["timestamp"],
        "seq": 1,
    }


def test_mailbox_ack_deletes_up_to_seq_and_answers_mailbox_acked(hub):
    alice = hub.agent("alice")
    bob_token = token(hub, "bob")
    bob = hub.agent("bob", token=bob_token)
    for n in range(3):
        ws_send(alice, {"n": n}, to="bob")
    seqs = [bob.recv("message", payload={"n": n})["seq"] for n in range(3)]
    assert seqs == [1, 2, 3]

    bob.send({"type": "mailbox_ack", "seq": 2})

    assert bob.recv("mailbox_acked") == {"type": "mailbox_acked", "up_to": 2}
    assert [m["seq"] for m in mailbox(hub, "bob", bob_token)["messages"]] == [3]


def test_unacknowledged_messages_are_pushed_again_oldest_first_right_after_identified(hub):
    alice = token(hub, "alice")
    bob_token = token(hub, "bob")
    bob, before = connect(hub, "bob", bob_token)
    assert before == []
    first = send(hub, alice, {"n": 0}, to="bob")
    bob.recv("message", id=first)  # pushed, never acknowledged
    bob.close()
    later = [send(hub, alice, {"n": n}, to="bob") for n in range(1, 4)]  # bob is offline

    bob, before = connect(hub, "bob", bob_token)

    assert [f for f in before if f["type"] == "message"] == []  # nothing before identified
    repushed = frames_in_order(bob, "message", 4)
    assert [(m["id"], m["seq"]) for m in repushed] == [
        (first, 1),
        *zip(later, [2, 3, 4], strict=True),
    ]
    assert repushed[0]["from"] == "alice" and repushed[0]["payload"] == {"n": 0}


def test_acknowledged_messages_are_not_pushed_again(hub):
    alice = token(hub, "alice")
    bob_token = token(hub, "bob")
    bob = hub.agent("bob", token=bob_token)
    ids = [send(hub, alice, {"n": n}, to="bob") for n in range(3)]
    for message_id in ids:
        bob.recv("message", id=message_id)
    bob.send({"type": "mailbox_ack", "seq": 2})
    bob.recv("mailbox_acked")
    bob.close()

    bob, _ = connect(hub, "bob", bob_token)

    assert [m["id"] for m in frames_in_order(bob, "message", 1)] == [ids[2]]
    bob.round_trip()
    assert bob.pending("message") == []


def test_a_broadcast_frame_reaches_every_other_connected_agent_but_not_the_sender(hub):
    alice, bob, carol = hub.agent("alice"), hub.agent("bob"), hub.agent("carol")
    message_id = ws_send(alice, {"all": 1})
    for agent in (bob, carol):
        pushed = agent.recv("message", id=message_id)
        assert pushed["to"] is None and pushed["from"] == "alice"
    alice.round_trip()
    assert alice.pending("message") == []


def test_an_unknown_recipient_gets_an_error_frame_and_the_socket_stays(hub):
    alice = hub.agent("alice")
    error = ws_error(alice, {"type": "message", "to": "nobody", "payload": {}})
    assert error == {"type": "error", "error": "unknown_recipient"}
    assert hub.api("GET", "/api/messages", token=hub.admin_token).body["count"] == 0


def test_an_agent_whose_token_was_made_after_the_sender_identified_is_known(hub):
    alice = hub.agent("alice")
    alice.round_trip()
    dan = token(hub, "dan")  # the hub's snapshot of tokens is older than this one

    ws_send(alice, {"hi": "dan"}, to="dan")

    assert mailbox(hub, "dan", dan)["count"] == 1


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ({"type": "message", "to": "bob"}, "missing_field: payload"),
        ({"type": "message", "to": 7, "payload": {}}, "invalid_field: to must be a string"),
        (
            {"type": "message", "to": "bob", "message_type": [], "payload": {}},
            "invalid_field: message_type must be a string",
        ),
        (
            {"type": "message", "to": "bob", "reply_to": 12, "payload": {}},
            "invalid_field: reply_to must be a string",
        ),
        (
            {"type": "message", "to": "bob", "payload": "x" * (64 * 1024 - 1)},
            "payload_too_large",
        ),
        ({"type": "mailbox_ack"}, "missing_field: seq"),
        ({"type": "mailbox_ack", "seq": -1}, "invalid_field: seq must be >= 0"),
        ({"type": "mailbox_ack", "seq": "1"}, "invalid_field: seq must be an integer"),
        ({"type": "mailbox_ack", "seq": 0.5}, "invalid_field: seq must be an integer"),
    ],
)
def test_a_bad_message_frame_gets_an_error_naming_it_and_changes_nothing(hub, frame, error):
    bob_token = token(hub, "bob")
    alice, bob = hub.agent("alice"), hub.agent("bob", token=bob_token)
    kept = ws_send(alice, {"keep": 1}, to="bob")
    bob.recv("message", id=kept)

    refused = ws_error(alice if frame["type"] == "message" else bob, frame)

    assert refused["error"].startswith(error), refused
    if error == "payload_too_large":
        assert refused == {"type": "error", "error": error, "limit_bytes": 65536}
    bob.round_trip()
    assert [m["id"] for m in bob.pending("message")] == []
    assert [m["id"] for m in mailbox(hub, "bob", bob_token)["messages"]] == [kept]


def test_a_payload_of_exactly_64_kib_is_taken(hub):
    alice, bob = hub.agent("alice"), hub.agent("bob")
    payload = "x" * (64 * 1024 - 2)  # its JSON encoding adds two quotes
    message_id = ws_send(alice, payload, to="bob")
    assert bob.recv("message", id=message_id)["payload"] == payload


def test_a_null_payload_becomes_an_empty_object_on_the_socket_too(hub):
    alice, bob = hub.agent("alice"), hub.agent("bob")
    alice.send({"type": "message", "to": "bob", "payload": None})
    message_id = alice.recv("message_sent")["id"]
    pushed = bob.recv("message", id=message_id)
    assert (pushed["payload"], pushed["message_type"]) == ({}, "chat")


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "message", "to": "bob", "payload": {}},
        {"type": "mailbox_ack", "seq": 1},
        {"type": "channel_subscribe", "channel": "general"},
        {"type": "list_channels"},
    ],
)
def test_messaging_frames_need_identify_first(hub, frame):
    socket = hub.socket()
    socket.send(frame)
    assert socket.recv("error") == {"type": "error", "error": "not_identified"}


def test_a_message_sent_over_http_and_one_over_the_socket_share_the_mailbox_seq(hub):
    alice_token = token(hub, "alice")
    alice = hub.agent("alice", token=alice_token)
    bob = hub.agent("bob")
    over_http = send(hub, alice_token, {"via": "http"}, to="bob")
    over_ws = ws_send(alice, {"via": "ws"}, to="bob")
    assert [m["seq"] for m in frames_in_order(bob, "message", 2)] == [1, 2]
    assert {over_http, over_ws} == {
        m["id"] for m in mailbox(hub, "bob", hub.admin_token)["messages"]
    }
