"""Channels over HTTP and the socket (PROTOCOL.md Part 2: Channels)."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from tests.integration.messaging_helpers import (
    HEX16,
    channel_post,
    create_channel,
    frames_in_order,
    mailbox,
    publish,
    send,
    token,
    ws_error,
)

BAD_NAMES = ["", "#", "-ops", "_ops", "a" * 65, "with space", "dot.ted", "émoji", "##ops"]


def test_a_channel_is_created_listed_and_described_by_its_normal_name(hub):
    alice = token(hub, "alice")

    reply = hub.api(
        "POST", "/api/channels", {"name": "#Ops", "description": "on call"}, token=alice
    )

    assert (reply.status, reply.body) == (201, {"status": "created", "channel": "ops"})
    create_channel(hub, alice, "alerts")
    listed = hub.api("GET", "/api/channels", token=alice)
    assert listed.status == 200
    assert [c["name"] for c in listed.body["channels"]] == ["alerts", "ops"]
    ops = listed.body["channels"][1]
    assert (ops["description"], ops["subscriber_count"], ops["created_by"]) == (
        "on call",
        0,
        "alice",
    )
    assert isinstance(ops["created_at"], int)
    info = hub.api("GET", "/api/channels/%23OPS", token=alice)
    assert info.status == 200, info
    assert info.body == {
        "name": "ops",
        "description": "on call",
        "subscribers": [],
        "subscriber_count": 0,
        "created_at": ops["created_at"],
        "created_by": "alice",
    }


def test_a_channel_name_is_taken_once_whatever_its_spelling(hub):
    alice = token(hub, "alice")
    create_channel(hub, alice, "ops")
    for spelling in ("ops", "#ops", "OPS"):
        reply = hub.api("POST", "/api/channels", {"name": spelling}, token=alice)
        assert (reply.status, reply.body) == (409, {"error": "channel_exists"})


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_channel_name_is_400_on_every_route(hub, name):
    alice = token(hub, "alice")
    reply = hub.api("POST", "/api/channels", {"name": name}, token=alice)
    assert (reply.status, reply.body) == (400, {"error": "invalid_channel_name"})
    if not name:
        return  # an empty path segment is another route
    segment = quote(name, safe="")
    for method, route, body in [
        ("GET", f"/api/channels/{segment}", None),
        ("DELETE", f"/api/channels/{segment}", None),
        ("POST", f"/api/channels/{segment}/subscribe", None),
        ("POST", f"/api/channels/{segment}/unsubscribe", None),
        ("POST", f"/api/channels/{segment}/publish", {"payload": {}}),
        ("GET", f"/api/channels/{segment}/history", None),
        ("GET", f"/api/messages?channel={segment}", None),
    ]:
        reply = hub.api(method, route, body, token=alice)
        assert (reply.status, reply.body) == (400, {"error": "invalid_channel_name"}), route
    assert hub.api("GET", "/api/channels", token=alice).body["channels"] == []


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "missing_field: name"),
        ({"name": 3}, "invalid_field: name must be a string"),
        ({"name": "ops", "description": 3}, "invalid_field: description must be a string"),
        ({"name": "ops", "description": "x" * 1025}, "invalid_field: description must be at"),
    ],
)
def test_a_bad_channel_body_is_400(hub, body, error):
    reply = hub.api("POST", "/api/channels", body, token=token(hub, "alice"))
    assert reply.status == 400 and reply.body["error"].startswith(error), reply


def test_an_unknown_channel_is_404_on_every_route(hub):
    alice = token(hub, "alice")
    for method, route, body in [
        ("GET", "/api/channels/ghost", None),
        ("DELETE", "/api/channels/ghost", None),
        ("POST", "/api/channels/ghost/subscribe", None),
        ("POST", "/api/channels/ghost/unsubscribe", None),
        ("POST", "/api/channels/ghost/publish", {"payload": {}}),
        ("GET", "/api/channels/ghost/history", None),
    ]:
        reply = hub.api(method, route, body, token=alice)
        assert (reply.status, reply.body) == (404, {"error": "channel_not_found"}), route


def test_channel_routes_need_a_token_and_a_viewer_only_reads(hub):
    alice = token(hub, "alice")
    viewer = token(hub, "watcher", role="viewer")
    create_channel(hub, alice, "ops")
    publish(hub, alice, "ops", {"n": 1})
    for route in ("/api/channels", "/api/channels/ops", "/api/channels/ops/history"):
        assert hub.api("GET", route, token=None).status == 401
        assert hub.api("GET", route, token=viewer).status == 200
    assert hub.api("GET", "/api/agents/alice/subscriptions", token=viewer).status == 200
    for method, route in [
        ("POST", "/api/channels"),
        ("DELETE", "/api/channels/ops"),
        ("POST", "/api/channels/ops/subscribe"),
        ("POST", "/api/channels/ops/publish"),
    ]:
        assert hub.api(method, route, {"name": "x", "payload": {}}, token=None).status == 401
        reply = hub.api(method, route, {"name": "x", "payload": {}}, token=viewer)
        assert (reply.status, reply.body) == (403, {"error": "forbidden"}), route


def test_a_channel_is_deleted_by_its_creator_or_an_admin_only(hub):
    alice, bob = token(hub, "alice"), token(hub, "bob")
    create_channel(hub, alice, "ops")
    create_channel(hub, alice, "alerts")

    reply = hub.api("DELETE", "/api/channels/ops", token=bob)
    assert (reply.status, reply.body) == (403, {"error": "forbidden"})
    reply = hub.api("DELETE", "/api/channels/%23OPS", token=alice)
    assert reply.status == 200 and reply.body["status"] == "deleted", reply
    reply = hub.api("DELETE", "/api/channels/alerts", token=hub.admin_token)
    assert reply.status == 200 and reply.body["status"] == "deleted", reply
    assert hub.api("GET", "/api/channels/ops", token=alice).status == 404
    assert hub.api("GET", "/api/channels", token=alice).body["channels"] == []


def test_subscribe_and_unsubscribe_over_http_say_what_they_did(hub):
    alice, bob = token(hub, "alice"), token(hub, "bob")
    create_channel(hub, alice, "ops")
    create_channel(hub, alice, "alerts")

    replies = [
        channel_post(hub, bob, "#Ops", "subscribe"),
        channel_post(hub, bob, "ops", "subscribe"),
        channel_post(hub, alice, "ops", "subscribe"),
        channel_post(hub, bob, "alerts", "subscribe"),
    ]

    assert [(r.status, r.body) for r in replies] == [
        (200, {"status": "subscribed", "channel": "ops"}),
        (200, {"status": "already_subscribed", "channel": "ops"}),
        (200, {"status": "subscribed", "channel": "ops"}),
        (200, {"status": "subscribed", "channel": "alerts"}),
    ]
    info = hub.api("GET", "/api/channels/ops", token=bob).body
    assert (sorted(info["subscribers"]), info["subscriber_count"]) == (["alice", "bob"], 2)
    reply = hub.api("GET", "/api/agents/bob/subscriptions", token=alice)
    assert reply.status == 200
    assert (reply.body["agent_id"], sorted(reply.body["channels"])) == ("bob", ["alerts", "ops"])

    reply = channel_post(hub, bob, "ops", "unsubscribe")
    assert (reply.status, reply.body) == (200, {"status": "unsubscribed", "channel": "ops"})
    reply = channel_post(hub, bob, "ops", "unsubscribe")  # idempotent
    assert (reply.status, reply.body) == (200, {"status": "unsubscribed", "channel": "ops"})
    assert hub.api("GET", "/api/agents/bob/subscriptions", token=bob).body["channels"] == ["alerts"]
    assert hub.api("GET", "/api/channels/ops", token=bob).body["subscribers"] == ["alice"]


def test_an_agent_without_subscriptions_has_an_empty_list(hub):
    reply = hub.api("GET", "/api/agents/nobody/subscriptions", token=token(hub, "alice"))
    assert (reply.status, reply.body) == (200, {"agent_id": "nobody", "channels": []})


# --- publishing ---------------------------------------------------------------------------


def test_a_publish_is_numbered_per_channel_and_pushed_to_connected_subscribers_but_the_publisher(
    hub,
):
    alice_token = token(hub, "alice")
    alice, bob, carol = hub.agent("alice", token=alice_token), hub.agent("bob"), hub.agent("carol")
    create_channel(hub, alice_token, "ops")
    create_channel(hub, alice_token, "alerts")
    for agent in (alice, bob):
        agent.send({"type": "channel_subscribe", "channel": "ops"})
        agent.recv("channel_subscribed")

    first = publish(hub, alice_token, "#OPS", {"text": "deploy"}, type="status", reply_to="ab")
    second = publish(hub, alice_token, "ops", {"text": "done"})
    other = publish(hub, alice_token, "alerts", {"text": "quiet"})

    assert first["status"] == "published" and first["channel"] == "ops"
    assert (first["seq"], second["seq"], other["seq"]) == (1, 2, 1)
    assert all(re.fullmatch(HEX16, p["id"]) for p in (first, second, other))
    pushed = bob.recv("channel_message", id=first["id"])
    assert pushed == {
        "type": "channel_message",
        "channel": "ops",
        "id": first["id"],
        "from": "alice",
        "message_type": "status",
        "payload": {"text": "deploy"},
        "reply_to": "ab",
        "timestamp": pushed["timestamp"],
        "seq": 1,
    }
    assert bob.recv("channel_message", id=second["id"])["seq"] == 2
    alice.round_trip()
    carol.round_trip()
    assert alice.pending("channel_message") == [] and carol.pending("channel_message") == []
    bob.round_trip()
    assert [m["id"] for m in bob.pending("channel_message")] == []  # nothing from alerts
    # Connected: the push only, no mailbox copy (*fix*).
    assert mailbox(hub, "bob", hub.admin_token)["count"] == 0


def test_an_offline_subscriber_gets_a_mailbox_copy_with_the_channel(hub):
    alice, carol = token(hub, "alice"), token(hub, "carol")
    create_channel(hub, alice, "ops")
    channel_post(hub, carol, "ops", "subscribe")
    channel_post(hub, alice, "ops", "subscribe")

    published = publish(hub, alice, "ops", {"text": "deploy"})

    [copy] = mailbox(hub, "carol", carol)["messages"]
    assert copy["id"] == published["id"] and copy["channel"] == "ops", copy
    assert (copy["from"], copy["payload"], copy["type"]) == ("alice", {"text": "deploy"}, "chat")
    assert copy["seq"] == 1  # the mailbox's seq, not the channel's
    assert mailbox(hub, "alice", alice)["count"] == 0  # the publisher gets no copy


def test_the_mailbox_copy_is_pushed_with_its_channel_when_the_subscriber_comes_back(hub):
    alice, carol_token = token(hub, "alice"), token(hub, "carol")
    create_channel(hub, alice, "ops")
    channel_post(hub, carol_token, "ops", "subscribe")
    published = publish(hub, alice, "ops", {"text": "deploy"})

    carol = hub.agent("carol", token=carol_token)

    [again] = frames_in_order(carol, "message", 1)
    assert (again["id"], again["channel"], again["seq"]) == (published["id"], "ops", 1)


def test_subscribing_over_http_acts_on_the_live_connection_at_once(hub):
    alice, bob_token = token(hub, "alice"), token(hub, "bob")
    bob = hub.agent("bob", token=bob_token)
    create_channel(hub, alice, "ops")

    channel_post(hub, bob_token, "ops", "subscribe")
    live = publish(hub, alice, "ops", {"n": 1})
    assert bob.recv("channel_message", id=live["id"])["seq"] == 1

    channel_post(hub, bob_token, "ops", "unsubscribe")
    publish(hub, alice, "ops", {"n": 2})
    barrier = send(hub, alice, {"barrier": 1}, to="bob")
    bob.recv("message", id=barrier)
    bob.round_trip()
    assert bob.pending("channel_message") == []
    assert [m["id"] for m in mailbox(hub, "bob", bob_token)["messages"]] == [barrier]


def test_other_connected_subscribers_hear_joins_and_leaves(hub):
    alice_token = token(hub, "alice")
    alice, bob = hub.agent("alice", token=alice_token), hub.agent("bob")
    outsider = hub.agent("dan")
    create_channel(hub, alice_token, "ops")
    channel_post(hub, alice_token, "ops", "subscribe")

    bob.send({"type": "channel_subscribe", "channel": "ops"})
    bob.recv("channel_subscribed")
    joined = alice.recv("channel_agent_joined")
    bob.send({"type": "channel_unsubscribe", "channel": "ops"})
    bob.recv("channel_unsubscribed")
    left = alice.recv("channel_agent_left")

    assert joined == {"type": "channel_agent_joined", "channel": "ops", "agent_id": "bob"}
    assert left == {"type": "channel_agent_left", "channel": "ops", "agent_id": "bob"}
    outsider.round_trip()
    assert outsider.pending("channel_agent_joined") == []


def test_a_bad_publish_is_refused_and_stores_nothing(hub):
    alice = token(hub, "alice")
    create_channel(hub, alice, "ops")
    for body, status, error in [
        ({}, 400, "missing_field: payload"),
        ({"payload": {}, "type": 1}, 400, "invalid_field: type must be a string"),
        ({"payload": {}, "reply_to": 1}, 400, "invalid_field: reply_to must be a string"),
        ({"payload": "x" * (64 * 1024 - 1)}, 413, "payload_too_large"),
    ]:
        reply = channel_post(hub, alice, "ops", "publish", body)
        assert reply.status == status and reply.body["error"].startswith(error), reply
    history = hub.api("GET", "/api/channels/ops/history", token=hub.admin_token)
    assert history.body["count"] == 0
    assert publish(hub, alice, "ops", None)["seq"] == 1


# --- history ------------------------------------------------------------------------------


def test_history_gives_the_last_limit_after_since_ascending(hub):
    alice = token(hub, "alice")
    create_channel(hub, alice, "ops")
    channel_post(hub, alice, "ops", "subscribe")
    ids = [publish(hub, alice, "ops", {"n": n})["id"] for n in range(6)]

    reply = hub.api("GET", "/api/channels/%23Ops/history?since=1&limit=3", token=alice)

    assert reply.status == 200, reply
    assert (reply.body["channel"], reply.body["count"]) == ("ops", 3)
    entries = reply.body["messages"]
    assert [e["seq"] for e in entries] == [4, 5, 6]
    assert [e["message"]["id"] for e in entries] == ids[3:]
    entry = entries[0]
    assert isinstance(entry["stored_at"], int)
    message = entry["message"]
    assert (message["from"], message["payload"], message["type"]) == ("alice", {"n": 3}, "chat")
    everything = hub.api("GET", "/api/channels/ops/history", token=alice).body
    assert [e["seq"] for e in everything["messages"]] == [1, 2, 3, 4, 5, 6]
    assert hub.api("GET", "/api/channels/ops/history?since=6", token=alice).body["count"] == 0


def test_only_subscribers_an_admin_or_a_viewer_read_a_channels_history(hub):
    alice, bob = token(hub, "alice"), token(hub, "bob")
    viewer = token(hub, "watcher", role="viewer")
    create_channel(hub, alice, "ops")
    channel_post(hub, bob, "ops", "subscribe")
    publish(hub, bob, "ops", {"n": 1})

    reply = hub.api("GET", "/api/channels/ops/history", token=alice)  # its creator, even
    assert (reply.status, reply.body) == (403, {"error": "forbidden"})
    outsider = hub.agent("alice", token=alice)
    refused = ws_error(outsider, {"type": "channel_history", "channel": "ops"})
    assert refused == {"type": "error", "error": "forbidden"}
    for reader in (bob, viewer, hub.admin_token):
        assert hub.api("GET", "/api/channels/ops/history", token=reader).body["count"] == 1
    admin = hub.agent("operator", token=hub.admin_token)
    admin.send({"type": "channel_history", "channel": "ops"})
    assert len(admin.recv("channel_history")["messages"]) == 1


@pytest.mark.parametrize("name", ["since", "limit"])
@pytest.mark.parametrize("bad", ["-1", "1.5", "", "x", "1e3", "99999999999999999999"])
def test_a_bad_history_query_is_400(hub, name, bad):
    alice = token(hub, "alice")
    create_channel(hub, alice, "ops")
    reply = hub.api("GET", f"/api/channels/ops/history?{name}={quote(bad)}", token=alice)
    assert reply.status == 400, reply
    assert reply.body["error"].startswith(f"invalid_query: {name} must be an integer"), reply
    assert hub.api("GET", "/api/channels/ops/history?limit=1001", token=alice).status == 400


def test_a_channel_keeps_its_last_channel_history_max_and_seq_goes_on(make_hub):
    hub = make_hub(channel_history_max=3)
    alice = token(hub, "alice")
    create_channel(hub, alice, "ops")
    for n in range(5):
        publish(hub, alice, "ops", {"n": n})
    history = hub.api("GET", "/api/channels/ops/history", token=hub.admin_token).body
    assert [e["seq"] for e in history["messages"]] == [3, 4, 5]
    assert publish(hub, alice, "ops", {"n": 5})["seq"] == 6


# --- the socket's channel frames ------------------------------------------------------------


def test_channel_frames_over_the_socket(hub):
    alice_token = token(hub, "alice")
    alice, bob = hub.agent("alice", token=alice_token), hub.agent("bob")
    create_channel(hub, alice_token, "ops", "on call")

    bob.send({"type": "channel_subscribe", "channel": "#OPS"})
    assert bob.recv("channel_subscribed") == {"type": "channel_subscribed", "channel": "ops"}
    bob.send({"type": "channel_subscribe", "channel": "ops"})
    assert bob.recv("channel_subscribed") == {
        "type": "channel_subscribed",
        "channel": "ops",
        "note": "already_subscribed",
    }

    alice.send(
        {"type": "channel_publish", "channel": "Ops", "payload": {"n": 1}, "message_type": "x"}
    )
    published = alice.recv("channel_published")
    assert published["channel"] == "ops" and published["seq"] == 1, published
    assert re.fullmatch(HEX16, published["id"])
    pushed = bob.recv("channel_message", id=published["id"])
    assert (pushed["message_type"], pushed["payload"]) == ("x", {"n": 1})

    bob.send({"type": "channel_history", "channel": "ops"})
    history = bob.recv("channel_history")
    assert history["channel"] == "ops"
    assert [(e["seq"], e["message"]["id"]) for e in history["messages"]] == [(1, published["id"])]
    bob.send({"type": "channel_history", "channel": "ops", "since": 1, "limit": 5})
    assert bob.recv("channel_history")["messages"] == []

    alice.send({"type": "list_channels"})
    channels = alice.recv("channels")["channels"]
    assert [(c["name"], c["description"], c["subscriber_count"]) for c in channels] == [
        ("ops", "on call", 1)
    ]

    bob.send({"type": "channel_unsubscribe", "channel": "ops"})
    assert bob.recv("channel_unsubscribed") == {"type": "channel_unsubscribed", "channel": "ops"}
    assert hub.api("GET", "/api/agents/bob/subscriptions", token=alice_token).body["channels"] == []


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "channel_subscribe", "channel": "ghost"},
        {"type": "channel_unsubscribe", "channel": "ghost"},
        {"type": "channel_publish", "channel": "ghost", "payload": {}},
        {"type": "channel_history", "channel": "ghost"},
    ],
)
def test_an_unknown_channel_frame_gets_channel_not_found(hub, frame):
    alice = hub.agent("alice")
    assert ws_error(alice, frame) == {"type": "error", "error": "channel_not_found"}


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ({"type": "channel_subscribe"}, "missing_field: channel"),
        ({"type": "channel_subscribe", "channel": 5}, "invalid_field: channel must be a string"),
        ({"type": "channel_subscribe", "channel": "bad name"}, "invalid_channel_name"),
        ({"type": "channel_unsubscribe", "channel": ""}, "invalid_channel_name"),
        ({"type": "channel_publish", "channel": "ops"}, "missing_field: payload"),
        ({"type": "channel_publish", "channel": "#", "payload": {}}, "invalid_channel_name"),
        (
            {"type": "channel_publish", "channel": "ops", "payload": {}, "message_type": 1},
            "invalid_field: message_type must be a string",
        ),
        (
            {"type": "channel_publish", "channel": "ops", "payload": "x" * 65536},
            "payload_too_large",
        ),
        ({"type": "channel_history", "channel": "ops", "since": -1}, "invalid_field: since"),
        ({"type": "channel_history", "channel": "ops", "limit": "5"}, "invalid_field: limit"),
        ({"type": "channel_history", "channel": "ops", "limit": 1001}, "invalid_field: limit"),
        ({"type": "channel_history", "channel": "-ops"}, "invalid_channel_name"),
    ],
)
def test_a_bad_channel_frame_gets_an_error_naming_it_and_changes_nothing(hub, frame, error):
    alice_token = token(hub, "alice")
    alice = hub.agent("alice", token=alice_token)
    create_channel(hub, alice_token, "ops")

    refused = ws_error(alice, frame)

    assert refused["error"].startswith(error), refused
    assert hub.api("GET", "/api/channels/ops", token=alice_token).body["subscribers"] == []
    history = hub.api("GET", "/api/channels/ops/history", token=hub.admin_token)
    assert history.body["count"] == 0
