"""Threads and message history, and who may see what (PROTOCOL.md Part 2 and Part 3)."""

from __future__ import annotations

from contextlib import closing
from urllib.parse import quote

import pytest

from tests.integration.helpers import now_ms
from tests.integration.messaging_helpers import (
    channel_post,
    create_channel,
    path,
    publish,
    send,
    token,
)


def ids(messages):
    return [m["id"] for m in messages]


@pytest.fixture
def talk(hub):
    """alice and bob talk in a tree; carol is an agent outside it; a viewer watches.

    root  alice -> bob
    ├── r1  bob -> alice
    │   └── r11  alice -> bob
    └── r2  alice -> bob
    """
    tokens = {name: token(hub, name) for name in ("alice", "bob", "carol")}
    tokens["viewer"] = token(hub, "watcher", role="viewer")
    alice, bob = tokens["alice"], tokens["bob"]
    root = send(hub, alice, {"t": "root"}, to="bob")
    r1 = send(hub, bob, {"t": "r1"}, to="alice", reply_to=root)
    r11 = send(hub, alice, {"t": "r11"}, to="bob", reply_to=r1)
    r2 = send(hub, alice, {"t": "r2"}, to="bob", reply_to=root)
    return tokens, {"root": root, "r1": r1, "r11": r11, "r2": r2}


def test_a_thread_is_the_whole_tree_by_timestamp_from_any_of_its_messages(hub, talk):
    tokens, m = talk
    for member in m.values():
        reply = hub.api("GET", f"/api/threads/{member}", token=tokens["alice"])
        assert reply.status == 200, reply
        assert reply.body["root"] == m["root"]
        assert ids(reply.body["messages"]) == [m["root"], m["r1"], m["r11"], m["r2"]]
        assert reply.body["count"] == 4
        stamps = [message["timestamp"] for message in reply.body["messages"]]
        assert stamps == sorted(stamps)
    first = hub.api("GET", f"/api/threads/{m['r1']}", token=tokens["bob"]).body["messages"][1]
    assert (first["from"], first["to"], first["reply_to"], first["payload"]) == (
        "bob",
        "alice",
        m["root"],
        {"t": "r1"},
    )


def test_replies_are_the_direct_replies_by_timestamp(hub, talk):
    tokens, m = talk
    reply = hub.api("GET", f"/api/threads/{m['root']}/replies", token=tokens["bob"])
    assert reply.status == 200, reply
    assert (reply.body["parent"], ids(reply.body["replies"]), reply.body["count"]) == (
        m["root"],
        [m["r1"], m["r2"]],
        2,
    )
    leaf = hub.api("GET", f"/api/threads/{m['r11']}/replies", token=tokens["bob"]).body
    assert (leaf["parent"], leaf["replies"], leaf["count"]) == (m["r11"], [], 0)


def test_root_walks_up_the_reply_to_chain(hub, talk):
    tokens, m = talk
    for member in m.values():
        reply = hub.api("GET", f"/api/threads/{member}/root", token=tokens["alice"])
        assert (reply.status, reply.body) == (200, {"message_id": member, "root": m["root"]})


@pytest.mark.parametrize(
    "route", ["/api/threads/{}", "/api/threads/{}/replies", "/api/threads/{}/root"]
)
@pytest.mark.parametrize("message_id", ["0123456789abcdef", "not-an-id", "x" * 300])
def test_an_unknown_message_is_404(hub, route, message_id):
    reply = hub.api("GET", route.format(quote(message_id)), token=token(hub, "alice"))
    assert (reply.status, reply.body) == (404, {"error": "message_not_found"})


def test_thread_routes_need_a_token(hub, talk):
    _, m = talk
    for route in ("/api/threads/{}", "/api/threads/{}/replies", "/api/threads/{}/root"):
        assert hub.api("GET", route.format(m["root"]), token=None).status == 401
    assert hub.api("GET", "/api/messages", token=None).status == 401


def test_a_missing_parent_ends_the_walk(hub):
    alice, bob = token(hub, "alice"), token(hub, "bob")
    orphan = send(hub, alice, {"t": "orphan"}, to="bob", reply_to="ffffffffffffffff")
    child = send(hub, bob, {"t": "child"}, to="alice", reply_to=orphan)

    root = hub.api("GET", f"/api/threads/{child}/root", token=alice)
    thread = hub.api("GET", f"/api/threads/{child}", token=alice)

    assert (root.status, root.body) == (200, {"message_id": child, "root": orphan})
    assert (thread.status, thread.body["root"]) == (200, orphan)
    assert ids(thread.body["messages"]) == [orphan, child]


def test_a_reply_to_loop_ends_the_walk(hub):
    """The hub makes ids, so no sender can close a loop; a damaged store can."""
    alice, bob = token(hub, "alice"), token(hub, "bob")
    first = send(hub, alice, {"t": "first"}, to="bob")
    second = send(hub, bob, {"t": "second"}, to="alice", reply_to=first)
    third = send(hub, alice, {"t": "third"}, to="bob", reply_to=second)
    with closing(hub.thread.hub.stores.connect("messages")) as db:
        db.execute("UPDATE messages SET reply_to = ? WHERE id = ?", (third, first))

    for route in ("/api/threads/{}", "/api/threads/{}/root", "/api/threads/{}/replies"):
        for member in (first, second, third):
            reply = hub.api("GET", route.format(member), token=alice)
            assert reply.status == 200, (route, reply)
    thread = hub.api("GET", f"/api/threads/{second}", token=alice).body
    assert sorted(ids(thread["messages"])) == sorted([first, second, third])
    assert thread["count"] == 3


# --- privacy -------------------------------------------------------------------------------


def test_an_agent_never_sees_other_agents_direct_messages(hub, talk):
    tokens, m = talk
    carol = tokens["carol"]
    for member in m.values():
        for route in ("/api/threads/{}", "/api/threads/{}/replies", "/api/threads/{}/root"):
            reply = hub.api("GET", route.format(member), token=carol)
            assert (reply.status, reply.body) == (404, {"error": "message_not_found"}), route
    history = hub.api("GET", "/api/messages", token=carol).body
    assert (history["messages"], history["count"]) == ([], 0)
    sent_by_alice = hub.api("GET", "/api/messages?from=alice", token=carol).body
    assert sent_by_alice["messages"] == []


def test_admin_and_viewer_see_every_message(hub, talk):
    tokens, m = talk
    for reader in (tokens["viewer"], hub.admin_token):
        thread = hub.api("GET", f"/api/threads/{m['r11']}", token=reader)
        assert thread.status == 200 and thread.body["count"] == 4, thread
        history = hub.api("GET", "/api/messages", token=reader).body
        assert ids(history["messages"]) == [m["root"], m["r1"], m["r11"], m["r2"]]


def test_an_agent_sees_what_it_sent_or_got_broadcasts_and_its_channels(hub, talk):
    tokens, m = talk
    alice, carol = tokens["alice"], tokens["carol"]
    create_channel(hub, alice, "ops")
    create_channel(hub, alice, "secret")
    channel_post(hub, carol, "ops", "subscribe")
    broadcast = send(hub, alice, {"t": "all"})
    to_carol = send(hub, alice, {"t": "hi carol"}, to="carol")
    from_carol = send(hub, carol, {"t": "hi bob"}, to="bob")
    in_ops = publish(hub, alice, "ops", {"t": "ops"})["id"]
    publish(hub, alice, "secret", {"t": "secret"})

    seen = hub.api("GET", "/api/messages", token=carol).body

    assert ids(seen["messages"]) == [broadcast, to_carol, from_carol, in_ops]
    assert hub.api("GET", f"/api/threads/{in_ops}", token=carol).status == 200
    # a reply carol may see, to a message she may not: the thread shows her part only
    reply_to_private = send(hub, alice, {"t": "fyi"}, to="carol", reply_to=m["root"])
    thread = hub.api("GET", f"/api/threads/{reply_to_private}", token=carol)
    assert thread.status == 200, thread
    assert ids(thread.body["messages"]) == [reply_to_private]
    replies = hub.api("GET", f"/api/threads/{m['r1']}/replies", token=tokens["bob"]).body
    assert ids(replies["replies"]) == [m["r11"]]


# --- /api/messages -------------------------------------------------------------------------


def test_messages_are_filtered_and_paged_by_an_exclusive_cursor(hub):
    alice, bob, carol = token(hub, "alice"), token(hub, "bob"), token(hub, "carol")
    create_channel(hub, alice, "ops")
    started = now_ms()
    to_bob = [send(hub, alice, {"n": n}, to="bob") for n in range(3)]
    to_carol = send(hub, bob, {"n": 9}, to="carol")
    in_ops = publish(hub, alice, "#Ops", {"n": 10})["id"]
    everything = [*to_bob, to_carol, in_ops]
    admin = hub.admin_token

    def query(**values):
        reply = hub.api("GET", path("/api/messages", **values), token=admin)
        assert reply.status == 200, reply
        return reply.body

    full = query()
    assert ids(full["messages"]) == everything and full["count"] == 5
    seqs = [message["seq"] for message in full["messages"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert full["cursor"] == seqs[-1]
    assert ids(query(**{"from": "alice"})["messages"]) == [*to_bob, in_ops]
    assert ids(query(to="carol")["messages"]) == [to_carol]
    assert ids(query(channel="OPS")["messages"]) == [in_ops]
    assert ids(query(since=started)["messages"]) == everything
    assert query(until=started - 1)["messages"] == []
    first = query(limit=2)
    assert ids(first["messages"]) == to_bob[:2] and first["cursor"] == seqs[1]
    rest = query(limit=2, cursor=first["cursor"])
    assert ids(rest["messages"]) == [to_bob[2], to_carol]
    last = query(cursor=seqs[-1])
    assert (last["messages"], last["count"], last["cursor"]) == ([], 0, seqs[-1])
    assert carol  # carol's own view is checked in the privacy tests


def test_messages_give_50_by_default_and_at_most_200(hub):
    alice, bob = token(hub, "alice"), token(hub, "bob")
    for n in range(201):
        send(hub, alice, {"n": n}, to="bob")
    assert hub.api("GET", "/api/messages", token=bob).body["count"] == 50
    assert hub.api("GET", "/api/messages?limit=200", token=bob).body["count"] == 200
    reply = hub.api("GET", "/api/messages?limit=201", token=bob)
    assert reply.status == 400 and reply.body["error"].startswith("invalid_query: limit"), reply


@pytest.mark.parametrize("name", ["since", "until", "cursor", "limit"])
@pytest.mark.parametrize("bad", ["-1", "1.5", "", "abc", "1e3", "99999999999999999999"])
def test_a_bad_number_in_the_history_query_is_400(hub, name, bad):
    reply = hub.api("GET", f"/api/messages?{name}={quote(bad)}", token=token(hub, "alice"))
    assert reply.status == 400, reply
    assert reply.body["error"].startswith(f"invalid_query: {name} must be an integer"), reply


def test_a_bad_filter_in_the_history_query_is_400(hub):
    alice = token(hub, "alice")
    for query in ("from=" + "x" * 256, "to=a&to=b", "channel=no%20spaces", "from=%FF"):
        reply = hub.api("GET", "/api/messages?" + query, token=alice)
        assert reply.status == 400, (query, reply)
