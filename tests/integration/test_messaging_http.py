"""Messages and mailboxes over HTTP (PROTOCOL.md Part 2: Messages, Mailbox over HTTP)."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from tests.integration.messaging_helpers import HEX16, ack, mailbox, send, token
from tests.waiting import wait_until

BAD_NUMBERS = ["-1", "1.5", "", "abc", "0x10", "1e2", "+5", "²", "99999999999999999999"]


def test_a_direct_message_is_stored_then_pushed_to_its_connected_recipient(hub):
    alice, bob_token = token(hub, "alice"), token(hub, "bob")
    bob = hub.agent("bob", token=bob_token)

    reply = hub.api(
        "POST",
        "/api/message",
        {"to": "bob", "type": "request", "payload": {"text": "hi"}, "reply_to": None},
        token=alice,
    )

    assert reply.status == 200, reply
    assert reply.body["status"] == "sent" and re.fullmatch(HEX16, reply.body["id"]), reply
    pushed = bob.recv("message", id=reply.body["id"])
    assert pushed == {
        "type": "message",
        "id": reply.body["id"],
        "from": "alice",
        "to": "bob",
        "message_type": "request",
        "payload": {"text": "hi"},
        "reply_to": None,
        "timestamp": pushed["timestamp"],
        "seq": 1,
    }
    assert isinstance(pushed["timestamp"], int)
    # Pushed is not acknowledged: the mailbox holds it until bob acks.
    box = mailbox(hub, "bob", bob_token)
    assert box["messages"] == [
        {
            "id": reply.body["id"],
            "from": "alice",
            "to": "bob",
            "type": "request",
            "payload": {"text": "hi"},
            "reply_to": None,
            "timestamp": pushed["timestamp"],
            "seq": 1,
        }
    ]


def test_the_sender_is_the_token_whatever_the_body_says(hub):
    alice, carol = token(hub, "alice"), token(hub, "carol")
    send(hub, alice, {"n": 1}, to="carol", **{"from": "mallory"})
    [message] = mailbox(hub, "carol", carol)["messages"]
    assert message["from"] == "alice"


def test_an_offline_known_agent_finds_the_message_in_its_mailbox(hub):
    alice, carol = token(hub, "alice"), token(hub, "carol")  # carol never connects
    first = send(hub, alice, {"n": 1}, to="carol")
    second = send(hub, alice, {"n": 2}, to="carol", type="note", reply_to=first)

    box = mailbox(hub, "carol", carol)

    assert [(m["id"], m["seq"], m["type"]) for m in box["messages"]] == [
        (first, 1, "chat"),
        (second, 2, "note"),
    ]
    assert box["messages"][1]["reply_to"] == first
    assert (box["agent_id"], box["last_seq"], box["count"], box["evicted"]) == ("carol", 2, 2, 0)


def test_a_message_to_no_known_agent_is_refused_and_stored_nowhere(hub):
    alice = token(hub, "alice")
    reply = hub.api("POST", "/api/message", {"to": "nobody", "payload": {}}, token=alice)
    assert (reply.status, reply.body) == (404, {"error": "unknown_recipient"})
    assert hub.api("GET", "/api/messages", token=hub.admin_token).body["count"] == 0


def test_a_viewer_only_id_is_no_recipient(hub):
    alice = token(hub, "alice")
    token(hub, "dashboard", role="viewer")
    reply = hub.api("POST", "/api/message", {"to": "dashboard", "payload": {}}, token=alice)
    assert (reply.status, reply.body) == (404, {"error": "unknown_recipient"})


def test_a_token_created_a_moment_ago_makes_a_known_recipient(hub):
    alice = token(hub, "alice")
    assert hub.api("POST", "/api/message", {"to": "dan", "payload": {}}, token=alice).status == 404
    dan = token(hub, "dan")
    send(hub, alice, {"n": 1}, to="dan")
    assert mailbox(hub, "dan", dan)["count"] == 1


@pytest.mark.parametrize("to", ["absent", None, "broadcast"])
def test_a_broadcast_reaches_connected_agents_not_the_sender_and_mailboxes_the_others(hub, to):
    alice_token = token(hub, "alice")
    alice = hub.agent("alice", token=alice_token)
    bob, dan = hub.agent("bob"), hub.agent("dan")
    carol = token(hub, "carol")
    token(hub, "carol")  # a second token: still one copy for carol
    body = {"payload": {"all": "hands"}} if to == "absent" else {"to": to, "payload": {"all": 1}}

    reply = hub.api("POST", "/api/message", body, token=alice_token)

    assert reply.status == 200, reply
    message_id = reply.body["id"]
    for agent in (bob, dan):
        pushed = agent.recv("message", id=message_id)
        assert (pushed["from"], pushed["to"]) == ("alice", None)
    alice.round_trip()
    assert alice.pending("message") == []  # *fix*: the original echoed it
    carols = mailbox(hub, "carol", carol)["messages"]
    assert [(m["id"], m["to"], m["seq"]) for m in carols] == [(message_id, None, 1)]
    # The connected got the push only; the sender nothing at all.
    assert mailbox(hub, "bob", hub.admin_token)["count"] == 0
    assert mailbox(hub, "alice", alice_token)["count"] == 0


def test_a_null_payload_becomes_an_empty_object(hub):
    alice, carol = token(hub, "alice"), token(hub, "carol")
    reply = hub.api("POST", "/api/message", {"to": "carol", "payload": None}, token=alice)
    assert reply.status == 200, reply
    assert mailbox(hub, "carol", carol)["messages"][0]["payload"] == {}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"to": "carol"}, "missing_field: payload"),
        ({"to": 5, "payload": {}}, "invalid_field: to must be a string"),
        ({"to": ["carol"], "payload": {}}, "invalid_field: to must be a string"),
        ({"to": "carol", "type": 3, "payload": {}}, "invalid_field: type must be a string"),
        (
            {"to": "carol", "reply_to": {}, "payload": {}},
            "invalid_field: reply_to must be a string",
        ),
        ({"to": "", "payload": {}}, "invalid_field: to must not be empty"),
        ([{"to": "carol", "payload": {}}], "invalid_body: expected a JSON object"),
    ],
)
def test_a_bad_message_is_400_and_changes_nothing(hub, body, error):
    alice, carol = token(hub, "alice"), token(hub, "carol")
    reply = hub.api("POST", "/api/message", body, token=alice)
    assert reply.status == 400, reply
    assert reply.body["error"].startswith(error), reply
    assert mailbox(hub, "carol", carol)["count"] == 0


def test_a_payload_over_64_kib_is_413(hub):
    alice, carol = token(hub, "alice"), token(hub, "carol")
    fits = {"t": "x" * (64 * 1024 - len('{"t":""}'))}
    assert send(hub, alice, fits, to="carol")
    reply = hub.api(
        "POST", "/api/message", {"to": "carol", "payload": {"t": fits["t"] + "x"}}, token=alice
    )
    assert (reply.status, reply.body) == (
        413,
        {"error": "payload_too_large", "limit_bytes": 65536},
    )
    assert mailbox(hub, "carol", carol)["count"] == 1


def test_sending_needs_a_token_and_a_viewer_cannot_send(hub):
    token(hub, "carol")
    viewer = token(hub, "watcher", role="viewer")
    body = {"to": "carol", "payload": {}}
    assert hub.api("POST", "/api/message", body, token=None).status == 401
    assert hub.api("POST", "/api/message", body, token="f" * 64).status == 401
    reply = hub.api("POST", "/api/message", body, token=viewer)
    assert (reply.status, reply.body) == (403, {"error": "forbidden"})


# --- reading and acknowledging -------------------------------------------------------------


def test_since_and_limit_page_the_mailbox_and_reading_deletes_nothing(hub):
    alice, carol = token(hub, "alice"), token(hub, "carol")
    ids = [send(hub, alice, {"n": n}, to="carol") for n in range(5)]

    page = mailbox(hub, "carol", carol, since=1, limit=2)
    assert [m["id"] for m in page["messages"]] == ids[1:3]
    assert (page["last_seq"], page["count"]) == (3, 2)
    empty = mailbox(hub, "carol", carol, since=5)
    assert (empty["messages"], empty["last_seq"], empty["count"]) == ([], 5, 0)
    assert mailbox(hub, "carol", carol)["count"] == 5


def test_a_mailbox_reads_100_by_default_and_at_most_1000(hub):
    alice, carol = token(hub, "alice"), token(hub, "carol")
    for n in range(101):
        send(hub, alice, {"n": n}, to="carol")
    assert mailbox(hub, "carol", carol)["count"] == 100
    assert mailbox(hub, "carol", carol, limit=1000)["count"] == 101
    assert hub.api("GET", "/api/mailbox/carol?limit=1001", token=carol).status == 400


def test_an_ack_deletes_up_to_seq_and_seq_is_never_reused(hub):
    alice, carol = token(hub, "alice"), token(hub, "carol")
    for n in range(3):
        send(hub, alice, {"n": n}, to="carol")

    reply = ack(hub, "carol", carol, 2)

    assert (reply.status, reply.body) == (200, {"status": "acked", "up_to": 2})
    assert [m["seq"] for m in mailbox(hub, "carol", carol)["messages"]] == [3]
    assert ack(hub, "carol", carol, 3).status == 200
    send(hub, alice, {"n": 3}, to="carol")
    assert [m["seq"] for m in mailbox(hub, "carol", carol)["messages"]] == [4]


def test_acking_past_the_last_seq_leaves_later_messages(hub):
    alice, carol = token(hub, "alice"), token(hub, "carol")
    send(hub, alice, {}, to="carol")
    assert ack(hub, "carol", carol, 50).body == {"status": "acked", "up_to": 50}
    send(hub, alice, {}, to="carol")
    assert mailbox(hub, "carol", carol)["count"] == 1


def test_only_the_owner_or_an_admin_reads_and_acks_a_mailbox_a_viewer_only_reads(hub):
    alice, carol = token(hub, "alice"), token(hub, "carol")
    viewer = token(hub, "watcher", role="viewer")
    send(hub, alice, {"secret": 1}, to="carol")

    for reply in (
        hub.api("GET", "/api/mailbox/carol", token=alice),
        ack(hub, "carol", alice, 1),
        ack(hub, "carol", viewer, 1),
    ):
        assert (reply.status, reply.body) == (403, {"error": "forbidden"})
    assert hub.api("GET", "/api/mailbox/carol", token=None).status == 401
    assert mailbox(hub, "carol", viewer)["count"] == 1
    assert mailbox(hub, "carol", hub.admin_token)["count"] == 1
    assert ack(hub, "carol", hub.admin_token, 1).status == 200
    assert mailbox(hub, "carol", carol)["count"] == 0


@pytest.mark.parametrize("name", ["since", "limit"])
@pytest.mark.parametrize("bad", BAD_NUMBERS)
def test_bad_since_or_limit_is_400(hub, name, bad):
    carol = token(hub, "carol")
    reply = hub.api("GET", f"/api/mailbox/carol?{name}={quote(bad)}", token=carol)
    assert reply.status == 400, reply
    assert reply.body["error"].startswith(f"invalid_query: {name} must be an integer"), reply


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"seq": -1}, "invalid_field: seq must be >= 0"),
        ({"seq": "1"}, "invalid_field: seq must be an integer"),
        ({"seq": 1.5}, "invalid_field: seq must be an integer"),
        ({"seq": True}, "invalid_field: seq must be an integer"),
        ({"seq": None}, "missing_field: seq"),
        ({}, "missing_field: seq"),
        ({"seq": 2**64}, "invalid_field: integers must fit in 64 bits"),
    ],
)
def test_a_bad_ack_is_400_and_deletes_nothing(hub, body, error):
    alice, carol = token(hub, "alice"), token(hub, "carol")
    send(hub, alice, {}, to="carol")
    reply = hub.api("POST", "/api/mailbox/carol/ack", body, token=carol)
    assert reply.status == 400, reply
    assert reply.body["error"].startswith(error), reply
    assert mailbox(hub, "carol", carol)["count"] == 1


# --- retention --------------------------------------------------------------------------------


def test_retention_is_read_with_any_token_and_changed_by_an_admin_only(hub):
    viewer = token(hub, "watcher", role="viewer")
    alice = token(hub, "alice")
    default = {"mailbox_ttl_ms": 7 * 24 * 3600 * 1000, "mailbox_max": 1000}
    for reader in (alice, viewer, hub.admin_token):
        reply = hub.api("GET", "/api/config/mailbox-retention", token=reader)
        assert (reply.status, reply.body) == (200, default), reply
    assert hub.api("GET", "/api/config/mailbox-retention", token=None).status == 401
    for caller in (alice, viewer):
        reply = hub.api("PUT", "/api/config/mailbox-retention", {"mailbox_max": 5}, token=caller)
        assert (reply.status, reply.body) == (403, {"error": "forbidden"})

    reply = hub.api(
        "PUT", "/api/config/mailbox-retention", {"mailbox_ttl_ms": 60_000}, token=hub.admin_token
    )

    assert reply.status == 200, reply
    assert reply.body["mailbox_ttl_ms"] == 60_000 and reply.body["mailbox_max"] == 1000
    reply = hub.api("GET", "/api/config/mailbox-retention", token=alice)
    assert reply.body == {"mailbox_ttl_ms": 60_000, "mailbox_max": 1000}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "missing_field: mailbox_ttl_ms or mailbox_max"),
        ({"mailbox_ttl_ms": None, "mailbox_max": None}, "missing_field"),
        ({"mailbox_ttl_ms": 0}, "invalid_field: mailbox_ttl_ms must be > 0"),
        ({"mailbox_max": -3}, "invalid_field: mailbox_max must be > 0"),
        ({"mailbox_max": "10"}, "invalid_field: mailbox_max must be an integer"),
        ({"mailbox_ttl_ms": 1.5}, "invalid_field: mailbox_ttl_ms must be an integer"),
    ],
)
def test_a_bad_retention_change_is_400_and_changes_nothing(hub, body, error):
    reply = hub.api("PUT", "/api/config/mailbox-retention", body, token=hub.admin_token)
    assert reply.status == 400, reply
    assert reply.body["error"].startswith(error), reply
    reply = hub.api("GET", "/api/config/mailbox-retention")
    assert reply.body["mailbox_max"] == 1000


def test_a_lower_mailbox_max_drops_the_oldest_at_once_and_counts_them(hub):
    alice, carol = token(hub, "alice"), token(hub, "carol")
    for n in range(5):
        send(hub, alice, {"n": n}, to="carol")

    reply = hub.api(
        "PUT", "/api/config/mailbox-retention", {"mailbox_max": 2}, token=hub.admin_token
    )

    assert reply.status == 200 and reply.body["mailbox_max"] == 2, reply
    box = mailbox(hub, "carol", carol)
    assert ([m["seq"] for m in box["messages"]], box["evicted"]) == ([4, 5], 3)
    send(hub, alice, {"n": 5}, to="carol")
    box = mailbox(hub, "carol", carol)
    assert ([m["seq"] for m in box["messages"]], box["evicted"]) == ([5, 6], 4)


def test_a_shorter_ttl_drops_what_is_older_and_counts_it(hub):
    alice, carol = token(hub, "alice"), token(hub, "carol")
    send(hub, alice, {"n": 1}, to="carol")
    send(hub, alice, {"n": 2}, to="carol")

    reply = hub.api(
        "PUT", "/api/config/mailbox-retention", {"mailbox_ttl_ms": 1}, token=hub.admin_token
    )

    assert reply.status == 200 and reply.body["mailbox_ttl_ms"] == 1, reply

    def evicted():
        box = mailbox(hub, "carol", carol)
        return (box["count"], box["evicted"]) == (0, 2) or box

    wait_until(evicted, timeout=5, what="eviction by the new TTL")


def test_a_full_mailbox_drops_its_oldest_and_counts_them(make_hub):
    hub = make_hub(mailbox_max=3)
    alice, carol = token(hub, "alice"), token(hub, "carol")
    for n in range(5):
        send(hub, alice, {"n": n}, to="carol")
    box = mailbox(hub, "carol", carol)
    assert ([m["payload"]["n"] for m in box["messages"]], box["evicted"]) == ([2, 3, 4], 2)


def test_messages_older_than_the_ttl_are_dropped_and_counted(make_hub):
    hub = make_hub(mailbox_ttl_ms=300)
    alice, carol = token(hub, "alice"), token(hub, "carol")
    send(hub, alice, {"n": 1}, to="carol")
    send(hub, alice, {"n": 2}, to="carol")

    def evicted():
        box = mailbox(hub, "carol", carol)
        return (box["count"], box["evicted"]) == (0, 2) or box

    wait_until(evicted, timeout=10, what="TTL eviction")
    send(hub, alice, {"n": 3}, to="carol")
    assert [m["seq"] for m in mailbox(hub, "carol", carol)["messages"]] == [3]


@pytest.mark.parametrize("agent_id", ["team/a b", "ünï", "a%2Fb"])
def test_the_mailbox_path_takes_any_agent_id_percent_encoded(hub, agent_id):
    owner, alice = token(hub, agent_id), token(hub, "alice")
    send(hub, alice, {}, to=agent_id)
    box = mailbox(hub, agent_id, owner)
    assert (box["agent_id"], box["count"]) == (agent_id, 1)
    assert ack(hub, agent_id, owner, 1).status == 200
