"""PostOffice in-process: a real actor on a temp store, agents as FakeLinks.

Pushes go out after the commit and before the replies of their batch, so once
a test has a reply, every frame that request caused is already in the links'
queues: ``drain`` reads them without waiting, and an empty queue means none.
"""

from __future__ import annotations

import itertools
import queue
import sqlite3
import time
from pathlib import Path
from typing import Any

import pykka
import pytest
import structlog.testing

from agentcom.actors.post_office import MAX_SUBSCRIPTIONS, THREAD_MAX, PostOffice
from agentcom.config import HubConfig, config_from_args
from agentcom.messages import (
    EVENTS_TOPIC,
    AgentOnline,
    AgentStopped,
    HubEvent,
    Letter,
    MailboxSweepDue,
    MessageRefused,
    Reader,
    Retention,
    StorageFull,
)
from agentcom.store import MESSAGES_DB
from agentcom.timers import Timers

from .conftest import FakeLink, ManualClock, next_event
from .full_disk import FillableDisk, OnFillableDisk

DAY_MS = 24 * 60 * 60 * 1000
RETENTION = Retention(mailbox_max=1000, mailbox_ttl_ms=7 * DAY_MS, channel_history_max=1000)
KNOWN = frozenset({"alice", "bob", "carol", "dave"})
ADMIN = Reader("root", sees_all=True)
_urns = itertools.count()


class FillablePostOffice(OnFillableDisk, PostOffice):
    """A PostOffice on a disk the test fills."""


class Office:
    """Starts a PostOffice on one data dir, and again after a stop (a restart)."""

    def __init__(
        self, data_dir: Path, pubsub_ref: pykka.ActorRef[Any], timers: Timers, clock: ManualClock
    ) -> None:
        self.data_dir, self.pubsub_ref, self.timers, self.clock = (
            data_dir,
            pubsub_ref,
            timers,
            clock,
        )
        self.ref: pykka.ActorRef[Any] | None = None

    def start(self, retention: Retention = RETENTION, kind: type[PostOffice] = PostOffice) -> Any:
        self.ref = kind.start(self.data_dir, retention, self.pubsub_ref, self.timers, self.clock)
        post = self.ref.proxy()
        barrier(post)  # started: its file and tables exist
        return post

    def restart(self, retention: Retention = RETENTION) -> Any:
        assert self.ref is not None
        self.ref.stop(block=True, timeout=5)
        return self.start(retention)


class Agent:
    """An agent's connection as PostOffice sees it: AgentOnline, then AgentStopped."""

    def __init__(self, post: Any, agent_id: str) -> None:
        self.post, self.agent_id = post, agent_id
        self.link = FakeLink()
        self.urn = f"urn:fsm:{agent_id}:{next(_urns)}"

    def connect(self) -> Agent:
        self.post.actor_ref.tell(AgentOnline(self.agent_id, self.urn, self.link))
        barrier(self.post)  # the mailbox replay went out before this reply
        return self

    def disconnect(self) -> None:
        self.post.actor_ref.tell(AgentStopped(self.agent_id, self.urn, None, None, "gone"))
        barrier(self.post)

    def reconnect(self) -> Agent:
        self.disconnect()
        again = Agent(self.post, self.agent_id)
        return again.connect()

    def frames(self) -> list[dict[str, Any]]:
        return drain(self.link)


def barrier(post: Any) -> None:
    post.retention().get(timeout=5)


def drain(link: FakeLink) -> list[dict[str, Any]]:
    found = []
    while True:
        try:
            found.append(link.frames.get_nowait())
        except queue.Empty:
            return found


def letter(
    sender: str,
    to: str | None = None,
    payload: Any = None,
    type_: str = "chat",
    reply_to: str | None = None,
) -> Letter:
    return Letter(sender, to, type_, {} if payload is None else payload, reply_to)


def send(post: Any, sender: str, to: str | None = None, **fields: Any) -> str:
    return str(post.send(letter(sender, to, **fields), KNOWN).get(timeout=5)["id"])


def mailbox(post: Any, agent_id: str, since: int = 0, limit: int = 1000) -> dict[str, Any]:
    return dict(post.mailbox(agent_id, since, limit).get(timeout=5))


def seqs(box: dict[str, Any]) -> list[int]:
    return [m["seq"] for m in box["messages"]]


def refused(call: Any) -> MessageRefused:
    with pytest.raises(MessageRefused) as caught:
        call.get(timeout=5)
    return caught.value


def wait_until(check: Any, timeout: float = 5.0, what: str = "condition") -> None:
    """check() returns True, or what it saw."""
    deadline = time.monotonic() + timeout
    while (seen := check()) is not True:
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout}s; saw {seen!r}")
        time.sleep(0.02)


@pytest.fixture
def office(
    tmp_path: Path, pubsub_ref: pykka.ActorRef[Any], timers: Timers, clock: ManualClock
) -> Office:
    return Office(tmp_path, pubsub_ref, timers, clock)


@pytest.fixture
def post(office: Office) -> Any:
    return office.start()


@pytest.fixture
def events(
    pubsub_ref: pykka.ActorRef[Any], recorder: tuple[pykka.ActorRef[Any], queue.Queue[object]]
) -> queue.Queue[object]:
    ref, seen = recorder
    pubsub_ref.proxy().subscribe(EVENTS_TOPIC, ref).get(timeout=5)
    return seen


# --- direct messages ------------------------------------------------------------------


def test_a_direct_message_is_on_disk_before_the_reply_then_pushed_with_its_seq(
    post: Any, office: Office, clock: ManualClock, events: queue.Queue[object]
) -> None:
    bob = Agent(post, "bob").connect()
    sent = post.send(
        letter("alice", "bob", {"text": "hi"}, "request", reply_to="0123456789abcdef"), KNOWN
    ).get(timeout=5)

    assert set(sent) == {"id", "timestamp"} and sent["timestamp"] == clock.now
    assert len(sent["id"]) == 16 and int(sent["id"], 16) >= 0 and sent["id"].islower()
    # Committed: another connection to the file sees the mailbox entry already.
    other = sqlite3.connect(office.data_dir / MESSAGES_DB)
    assert other.execute("SELECT agent_id, seq, message_id FROM mailbox").fetchall() == [
        ("bob", 1, sent["id"])
    ]
    other.close()
    assert bob.frames() == [
        {
            "type": "message",
            "id": sent["id"],
            "from": "alice",
            "to": "bob",
            "message_type": "request",
            "payload": {"text": "hi"},
            "reply_to": "0123456789abcdef",
            "timestamp": clock.now,
            "seq": 1,
        }
    ]
    box = mailbox(post, "bob")
    assert box["messages"] == [
        {
            "id": sent["id"],
            "from": "alice",
            "to": "bob",
            "type": "request",
            "payload": {"text": "hi"},
            "reply_to": "0123456789abcdef",
            "timestamp": clock.now,
            "seq": 1,
        }
    ]
    assert (box["agent_id"], box["last_seq"], box["count"], box["evicted"]) == ("bob", 1, 1, 0)
    assert next_event(events, "message_sent") == HubEvent(
        "message_sent",
        clock.now,
        {"message_id": sent["id"], "from": "alice", "to": "bob"},
        agent_id="alice",
    )


def test_an_unknown_recipient_is_refused_and_nothing_is_stored(
    post: Any, events: queue.Queue[object]
) -> None:
    error = refused(post.send(letter("alice", "nobody"), KNOWN))
    assert (str(error), error.error, error.status) == (
        "unknown_recipient",
        "unknown_recipient",
        404,
    )
    assert mailbox(post, "nobody")["messages"] == []
    assert post.history(ADMIN).get(timeout=5)["messages"] == []
    # A connected agent without a token is known, though.
    Agent(post, "visitor").connect()
    send(post, "alice", "visitor")
    assert seqs(mailbox(post, "visitor")) == [1]
    assert next_event(events, "message_sent").fields["to"] == "visitor", "none for the refused one"


def test_reading_a_mailbox_pages_by_since_and_limit_and_deletes_nothing(post: Any) -> None:
    for _ in range(5):
        send(post, "alice", "bob")
    page = mailbox(post, "bob", since=1, limit=2)
    assert (seqs(page), page["last_seq"], page["count"]) == ([2, 3], 3, 2)
    empty = mailbox(post, "bob", since=5)
    assert (empty["messages"], empty["last_seq"], empty["count"]) == ([], 5, 0)
    assert seqs(mailbox(post, "bob")) == [1, 2, 3, 4, 5]


def test_an_offline_recipient_gets_its_mailbox_pushed_oldest_first_after_identify(
    post: Any,
) -> None:
    sent = [send(post, "alice", "bob", payload={"n": n}) for n in range(3)]
    bob = Agent(post, "bob").connect()
    replayed = bob.frames()
    assert [(f["type"], f["id"], f["seq"]) for f in replayed] == [
        ("message", sent[0], 1),
        ("message", sent[1], 2),
        ("message", sent[2], 3),
    ]
    assert replayed[0]["message_type"] == "chat" and replayed[0]["payload"] == {"n": 0}


def test_delivery_is_at_least_once_until_acked_then_only_newer_ones(post: Any) -> None:
    bob = Agent(post, "bob").connect()
    for _ in range(3):
        send(post, "alice", "bob")
    assert [f["seq"] for f in bob.frames()] == [1, 2, 3]

    bob = bob.reconnect()  # nothing acked: everything again, oldest first
    assert [f["seq"] for f in bob.frames()] == [1, 2, 3]

    assert post.ack("bob", 2).get(timeout=5) == {"up_to": 2}
    assert seqs(mailbox(post, "bob")) == [3]
    bob = bob.reconnect()
    assert [f["seq"] for f in bob.frames()] == [3]

    post.ack("bob", 3).get(timeout=5)
    bob = bob.reconnect()
    assert bob.frames() == []


def test_seq_strictly_increases_and_is_never_reused_after_an_ack(post: Any) -> None:
    send(post, "alice", "bob")
    send(post, "carol", "bob")
    post.ack("bob", 2).get(timeout=5)
    assert mailbox(post, "bob")["messages"] == []
    send(post, "alice", "bob")
    assert seqs(mailbox(post, "bob")) == [3]
    post.ack("bob", 100).get(timeout=5)  # past the end: everything goes, nothing breaks
    send(post, "alice", "bob")
    assert seqs(mailbox(post, "bob")) == [4]
    assert seqs(mailbox(post, "alice")) == [], "mailboxes count apart"
    send(post, "bob", "alice")
    assert seqs(mailbox(post, "alice")) == [1]


def test_a_stale_stop_notice_does_not_take_a_newer_connection_offline(post: Any) -> None:
    first = Agent(post, "bob").connect()
    second = Agent(post, "bob").connect()  # a reconnect before the old FSM's notice
    first.disconnect()
    send(post, "alice", "bob")
    assert [f["seq"] for f in second.frames()] == [1]
    assert first.frames() == []

    second.disconnect()
    send(post, "alice", "bob")
    assert second.frames() == [], "offline: stored, not pushed"
    assert seqs(mailbox(post, "bob")) == [1, 2]


def test_a_message_to_itself_is_allowed(post: Any) -> None:
    bob = Agent(post, "bob").connect()
    send(post, "bob", "bob")
    assert [f["seq"] for f in bob.frames()] == [1]


# --- broadcasts ---------------------------------------------------------------------------


def test_a_broadcast_is_pushed_to_everyone_online_but_the_sender_and_stored_for_the_offline(
    post: Any, events: queue.Queue[object]
) -> None:
    alice = Agent(post, "alice").connect()
    bob = Agent(post, "bob").connect()
    sent = post.send(letter("alice", None, {"all": 1}), KNOWN).get(timeout=5)

    assert alice.frames() == [], "never echoed to its sender"
    (frame,) = bob.frames()
    assert frame["type"] == "message" and frame["id"] == sent["id"]
    assert frame["to"] is None and frame["from"] == "alice" and "seq" not in frame
    for offline in ("carol", "dave"):
        box = mailbox(post, offline)
        assert [(m["id"], m["seq"], m["to"]) for m in box["messages"]] == [(sent["id"], 1, None)]
    assert mailbox(post, "bob")["messages"] == [], "online agents get the push only"
    assert mailbox(post, "alice")["messages"] == []
    assert next_event(events, "message_sent").fields == {
        "message_id": sent["id"],
        "from": "alice",
        "to": None,
    }


def test_a_broadcast_from_an_offline_sender_is_not_stored_for_it(post: Any) -> None:
    send(post, "alice")
    assert mailbox(post, "alice")["messages"] == []
    assert all(seqs(mailbox(post, a)) == [1] for a in ("bob", "carol", "dave"))


# --- retention ------------------------------------------------------------------------------


def test_a_full_mailbox_drops_its_oldest_and_counts_them(office: Office) -> None:
    post = office.start(Retention(mailbox_max=3, mailbox_ttl_ms=DAY_MS, channel_history_max=10))
    with structlog.testing.capture_logs() as logs:
        for _ in range(5):
            send(post, "alice", "bob")
    box = mailbox(post, "bob")
    assert (seqs(box), box["evicted"]) == ([3, 4, 5], 2)
    evicted = [e for e in logs if e["event"] == "mailbox_evicted"]
    assert [(e["agent_id"], e["count"], e["cause"]) for e in evicted] == [
        ("bob", 1, "mailbox_max"),
        ("bob", 1, "mailbox_max"),
    ]


def test_mailbox_entries_past_the_ttl_are_swept_and_counted(
    office: Office, clock: ManualClock
) -> None:
    post = office.start(Retention(mailbox_max=10, mailbox_ttl_ms=60_000, channel_history_max=10))
    send(post, "alice", "bob")
    clock.advance(30_000)
    send(post, "alice", "bob")
    clock.advance(30_001)  # the first is now past the TTL, the second not
    with structlog.testing.capture_logs() as logs:
        post.actor_ref.tell(MailboxSweepDue())
        box = mailbox(post, "bob")
    assert (seqs(box), box["evicted"]) == ([2], 1)
    assert [(e["agent_id"], e["count"], e["cause"]) for e in logs if "count" in e] == [
        ("bob", 1, "ttl")
    ]


def test_the_ttl_sweep_runs_by_itself(office: Office, clock: ManualClock) -> None:
    post = office.start(Retention(mailbox_max=10, mailbox_ttl_ms=100, channel_history_max=10))
    send(post, "alice", "bob")
    clock.advance(101)
    wait_until(lambda: mailbox(post, "bob")["evicted"] == 1 or mailbox(post, "bob"), what="sweep")


def test_retention_is_read_and_set_at_once_and_survives_a_restart(office: Office) -> None:
    post = office.start()
    assert post.retention().get(timeout=5) == {"mailbox_ttl_ms": 7 * DAY_MS, "mailbox_max": 1000}
    for _ in range(4):
        send(post, "alice", "carol")
    assert post.set_retention(None, 2).get(timeout=5) == {
        "mailbox_ttl_ms": 7 * DAY_MS,
        "mailbox_max": 2,
    }
    box = mailbox(post, "carol")
    assert (seqs(box), box["evicted"]) == ([3, 4], 2), "trimmed at once"
    assert post.set_retention(60_000, None).get(timeout=5)["mailbox_ttl_ms"] == 60_000
    with pytest.raises(ValueError):
        post.set_retention(0, None).get(timeout=5)

    post = office.restart()  # the flags still say 1000 and 7 days: stored values win
    assert post.retention().get(timeout=5) == {"mailbox_ttl_ms": 60_000, "mailbox_max": 2}


def test_a_lower_ttl_drops_what_is_older_at_once(office: Office, clock: ManualClock) -> None:
    post = office.start()
    send(post, "alice", "bob")
    clock.advance(10_000)
    send(post, "alice", "bob")
    post.set_retention(5_000, None).get(timeout=5)
    box = mailbox(post, "bob")
    assert (seqs(box), box["evicted"]) == ([2], 1)


def test_after_a_restart_seq_evictions_subscriptions_and_channel_seq_go_on(
    office: Office,
) -> None:
    small = Retention(mailbox_max=2, mailbox_ttl_ms=DAY_MS, channel_history_max=1)
    post = office.start(small)
    for _ in range(3):
        send(post, "alice", "bob")
    post.ack("bob", 3).get(timeout=5)
    post.create_channel("ops", None, "alice").get(timeout=5)
    post.subscribe("ops", "bob").get(timeout=5)
    post.publish("ops", letter("alice")).get(timeout=5)
    post.publish("ops", letter("alice")).get(timeout=5)  # the history keeps only this one

    post = office.restart(small)
    send(post, "alice", "bob")
    box = mailbox(post, "bob")
    # bob's mailbox: seqs 4 and 5 (the channel copies) came before the restart.
    assert (seqs(box), box["evicted"]) == ([5, 6], 2)
    assert post.subscriptions("bob").get(timeout=5) == ["ops"]
    assert post.publish("ops", letter("alice")).get(timeout=5)["seq"] == 3


def test_a_lower_maximum_given_at_start_trims_at_once(office: Office) -> None:
    post = office.start()
    for _ in range(4):
        send(post, "alice", "bob")
    post.create_channel("ops", None, "alice").get(timeout=5)
    for _ in range(4):
        post.publish("ops", letter("alice")).get(timeout=5)
    post = office.restart(Retention(mailbox_max=1, mailbox_ttl_ms=DAY_MS, channel_history_max=2))
    box = mailbox(post, "bob")
    assert (seqs(box), box["evicted"]) == ([4], 3)
    history = post.channel_history("ops", 0, 100).get(timeout=5)
    assert [m["seq"] for m in history["messages"]] == [3, 4]


# --- channels -------------------------------------------------------------------------------


def test_channels_are_created_once_listed_by_name_and_described(
    post: Any, clock: ManualClock
) -> None:
    created = post.create_channel("zeta", "last", "alice").get(timeout=5)
    assert created == {
        "name": "zeta",
        "description": "last",
        "subscriber_count": 0,
        "created_at": clock.now,
        "created_by": "alice",
    }
    error = refused(post.create_channel("zeta", None, "bob"))
    assert (error.error, error.status) == ("channel_exists", 409)
    post.create_channel("alpha", None, "bob").get(timeout=5)
    post.create_channel("mid", None, "bob").get(timeout=5)
    post.subscribe("alpha", "carol").get(timeout=5)
    post.subscribe("alpha", "alice").get(timeout=5)

    listed = post.list_channels().get(timeout=5)
    assert [c["name"] for c in listed] == ["alpha", "mid", "zeta"]
    assert listed[0] == {
        "name": "alpha",
        "description": "",
        "subscriber_count": 2,
        "created_at": clock.now,
        "created_by": "bob",
    }
    assert post.channel("alpha").get(timeout=5) == {
        "name": "alpha",
        "description": "",
        "subscribers": ["alice", "carol"],
        "subscriber_count": 2,
        "created_at": clock.now,
        "created_by": "bob",
    }
    assert refused(post.channel("nope")).error == "channel_not_found"


def test_only_the_creator_or_an_admin_deletes_a_channel(post: Any) -> None:
    post.create_channel("ops", None, "alice").get(timeout=5)
    post.create_channel("dev", None, "alice").get(timeout=5)
    post.subscribe("ops", "bob").get(timeout=5)
    error = refused(post.delete_channel("ops", Reader("bob", sees_all=False)))
    assert (error.error, error.status) == ("forbidden", 403)

    assert post.delete_channel("ops", Reader("alice", sees_all=False)).get(timeout=5) is None
    assert post.delete_channel("dev", ADMIN).get(timeout=5) is None
    assert post.list_channels().get(timeout=5) == []
    assert post.subscriptions("bob").get(timeout=5) == []
    for call in (
        post.channel("ops"),
        post.delete_channel("ops", ADMIN),
        post.subscribe("ops", "bob"),
        post.unsubscribe("ops", "bob"),
        post.publish("ops", letter("alice")),
        post.channel_history("ops", 0, 10),
    ):
        error = refused(call)
        assert (error.error, error.status) == ("channel_not_found", 404)


def test_subscribing_twice_is_noted_and_unsubscribing_is_idempotent(post: Any) -> None:
    post.create_channel("ops", None, "alice").get(timeout=5)
    post.create_channel("dev", None, "alice").get(timeout=5)
    assert post.subscribe("ops", "bob").get(timeout=5) == "subscribed"
    assert post.subscribe("ops", "bob").get(timeout=5) == "already_subscribed"
    assert post.subscribe("dev", "bob").get(timeout=5) == "subscribed"
    assert post.subscriptions("bob").get(timeout=5) == ["dev", "ops"]
    assert post.unsubscribe("ops", "bob").get(timeout=5) == "unsubscribed"
    assert post.unsubscribe("ops", "bob").get(timeout=5) == "unsubscribed"
    assert post.subscriptions("bob").get(timeout=5) == ["dev"]


def test_other_online_subscribers_hear_who_joins_and_leaves(post: Any) -> None:
    post.create_channel("ops", None, "alice").get(timeout=5)
    bob = Agent(post, "bob").connect()
    carol = Agent(post, "carol").connect()
    post.subscribe("ops", "bob").get(timeout=5)
    assert bob.frames() == [], "not told of itself"
    post.subscribe("ops", "dave").get(timeout=5)  # offline (over HTTP): hears nothing
    assert bob.frames() == [{"type": "channel_agent_joined", "channel": "ops", "agent_id": "dave"}]
    post.subscribe("ops", "carol").get(timeout=5)
    assert bob.frames() == [{"type": "channel_agent_joined", "channel": "ops", "agent_id": "carol"}]
    assert carol.frames() == []
    post.subscribe("ops", "carol").get(timeout=5)
    assert bob.frames() == [], "already subscribed: no news"

    post.unsubscribe("ops", "carol").get(timeout=5)
    assert bob.frames() == [{"type": "channel_agent_left", "channel": "ops", "agent_id": "carol"}]
    post.unsubscribe("ops", "carol").get(timeout=5)
    assert bob.frames() == [], "was not subscribed: no news"


def test_a_publish_is_stored_pushed_to_online_subscribers_and_kept_for_offline_ones(
    post: Any, clock: ManualClock, events: queue.Queue[object]
) -> None:
    post.create_channel("ops", None, "alice").get(timeout=5)
    for agent_id in ("alice", "bob", "carol"):
        post.subscribe("ops", agent_id).get(timeout=5)
    alice = Agent(post, "alice").connect()
    bob = Agent(post, "bob").connect()
    bob.frames()

    published = post.publish("ops", letter("alice", None, {"x": 1}, "note")).get(timeout=5)
    assert set(published) == {"channel", "seq", "id"}
    assert (published["channel"], published["seq"]) == ("ops", 1)
    assert alice.frames() == [], "not to the publisher"
    assert bob.frames() == [
        {
            "type": "channel_message",
            "channel": "ops",
            "id": published["id"],
            "from": "alice",
            "message_type": "note",
            "payload": {"x": 1},
            "reply_to": None,
            "timestamp": clock.now,
            "seq": 1,
        }
    ]
    assert mailbox(post, "bob")["messages"] == [], "an online subscriber gets the push only"
    assert mailbox(post, "alice")["messages"] == []
    (copy,) = mailbox(post, "carol")["messages"]
    assert copy == {
        "id": published["id"],
        "from": "alice",
        "to": None,
        "type": "note",
        "payload": {"x": 1},
        "reply_to": None,
        "timestamp": clock.now,
        "seq": 1,
        "channel": "ops",
    }
    assert next_event(events, "channel_published") == HubEvent(
        "channel_published",
        clock.now,
        {"message_id": published["id"], "channel": "ops", "from": "alice", "seq": 1},
        agent_id="alice",
    )
    carol = Agent(post, "carol").connect()
    (replayed,) = carol.frames()
    assert (replayed["type"], replayed["channel"], replayed["seq"]) == ("message", "ops", 1)

    assert post.publish("ops", letter("bob")).get(timeout=5)["seq"] == 2
    assert post.publish("ops", letter("dave")).get(timeout=5)["seq"] == 3, "anyone may publish"


def test_channel_history_keeps_the_last_entries_and_pages_from_the_end(
    office: Office, clock: ManualClock
) -> None:
    post = office.start(Retention(mailbox_max=10, mailbox_ttl_ms=DAY_MS, channel_history_max=3))
    post.create_channel("ops", None, "alice").get(timeout=5)
    ids = []
    for n in range(5):
        clock.advance(1)
        ids.append(post.publish("ops", letter("alice", payload={"n": n})).get(timeout=5)["id"])
    history = post.channel_history("ops", 0, 100).get(timeout=5)
    assert history["channel"] == "ops" and history["count"] == 3
    assert [(m["seq"], m["message"]["id"]) for m in history["messages"]] == [
        (3, ids[2]),
        (4, ids[3]),
        (5, ids[4]),
    ]
    entry = history["messages"][0]
    assert entry["stored_at"] == entry["message"]["timestamp"]
    assert entry["message"]["channel"] == "ops" and entry["message"]["payload"] == {"n": 2}
    assert [m["seq"] for m in post.channel_history("ops", 3, 100).get(timeout=5)["messages"]] == [
        4,
        5,
    ]
    assert [m["seq"] for m in post.channel_history("ops", 0, 1).get(timeout=5)["messages"]] == [5]


def test_channel_history_is_for_subscribers_when_a_reader_is_given(post: Any) -> None:
    post.create_channel("ops", None, "alice").get(timeout=5)
    post.subscribe("ops", "bob").get(timeout=5)
    post.publish("ops", letter("alice")).get(timeout=5)
    error = refused(post.channel_history("ops", 0, 10, Reader("carol", sees_all=False)))
    assert (error.error, error.status) == ("forbidden", 403)
    for reader in (Reader("bob", sees_all=False), ADMIN, None):
        assert post.channel_history("ops", 0, 10, reader).get(timeout=5)["count"] == 1


# --- threads -----------------------------------------------------------------------------


def test_threads_replies_and_roots_follow_reply_to(post: Any, clock: ManualClock) -> None:
    top = send(post, "alice", "bob")
    clock.advance(1)
    reply = send(post, "bob", "alice", reply_to=top)
    clock.advance(1)
    deeper = send(post, "alice", "bob", reply_to=reply)
    clock.advance(1)
    aside = send(post, "carol", reply_to=top)  # a broadcast reply
    clock.advance(1)
    send(post, "alice", "bob")  # another thread

    for member in (top, reply, deeper, aside):
        thread = post.thread(member, ADMIN).get(timeout=5)
        assert thread["root"] == top
        assert [m["id"] for m in thread["messages"]] == [top, reply, deeper, aside]
        assert thread["count"] == 4
        assert post.root(member, ADMIN).get(timeout=5) == {"message_id": member, "root": top}
    replies = post.replies(top, ADMIN).get(timeout=5)
    assert (replies["parent"], replies["count"]) == (top, 2)
    assert [m["id"] for m in replies["replies"]] == [reply, aside]
    assert replies["replies"][0]["reply_to"] == top
    assert post.replies(deeper, ADMIN).get(timeout=5)["replies"] == []
    for call in (
        post.thread("0" * 16, ADMIN),
        post.replies("0" * 16, ADMIN),
        post.root("0" * 16, ADMIN),
    ):
        error = refused(call)
        assert (error.error, error.status) == ("message_not_found", 404)


def insert_raw(office: Office, message_id: str, reply_to: str | None, timestamp: int) -> None:
    conn = sqlite3.connect(office.data_dir / MESSAGES_DB)
    with conn:
        conn.execute(
            "INSERT INTO messages (id, sender, recipient, channel, type, payload, reply_to,"
            " timestamp) VALUES (?, 'alice', NULL, NULL, 'chat', '{}', ?, ?)",
            (message_id, reply_to, timestamp),
        )
    conn.close()


def test_a_reply_to_loop_or_a_missing_parent_ends_the_walk(post: Any, office: Office) -> None:
    insert_raw(office, "a" * 16, "b" * 16, 1)
    insert_raw(office, "b" * 16, "c" * 16, 2)
    insert_raw(office, "c" * 16, "a" * 16, 3)  # a -> b -> c -> a
    insert_raw(office, "d" * 16, "e" * 16, 4)  # e does not exist
    insert_raw(office, "f" * 16, "d" * 16, 5)

    loop = post.thread("a" * 16, ADMIN).get(timeout=5)
    assert sorted(m["id"] for m in loop["messages"]) == ["a" * 16, "b" * 16, "c" * 16]
    # From a: up to b, up to c, whose parent a was seen: c is as far up as it goes.
    assert post.root("a" * 16, ADMIN).get(timeout=5)["root"] == "c" * 16
    assert post.replies("a" * 16, ADMIN).get(timeout=5)["count"] == 1

    assert post.root("f" * 16, ADMIN).get(timeout=5)["root"] == "d" * 16
    orphan = post.thread("f" * 16, ADMIN).get(timeout=5)
    assert (orphan["root"], [m["id"] for m in orphan["messages"]]) == (
        "d" * 16,
        ["d" * 16, "f" * 16],
    )


# --- privacy ---------------------------------------------------------------------------------


def test_an_agent_sees_only_its_own_broadcasts_and_its_channels_an_admin_all(
    post: Any,
) -> None:
    bob = Reader("bob", sees_all=False)
    post.create_channel("ops", None, "carol").get(timeout=5)
    post.create_channel("secret", None, "dave").get(timeout=5)
    post.subscribe("ops", "bob").get(timeout=5)
    post.subscribe("secret", "dave").get(timeout=5)
    to_bob = send(post, "alice", "bob")
    between_others = send(post, "carol", "dave")
    broadcast = send(post, "carol")
    in_ops = post.publish("ops", letter("carol")).get(timeout=5)["id"]
    in_secret = post.publish("secret", letter("dave")).get(timeout=5)["id"]
    by_bob = send(post, "bob", "carol")
    # dave answers carol's message, to bob: bob may see the answer, not what it answers
    answer = send(post, "dave", "bob", reply_to=between_others)

    def ids(reader: Reader, **filters: Any) -> list[str]:
        page = post.history(reader, **filters).get(timeout=5)
        return [m["id"] for m in page["messages"]]

    assert ids(bob) == [to_bob, broadcast, in_ops, by_bob, answer]
    assert ids(ADMIN) == [to_bob, between_others, broadcast, in_ops, in_secret, by_bob, answer]
    assert ids(Reader("viewer", sees_all=True)) == ids(ADMIN)
    assert ids(bob, channel="secret") == []
    assert ids(bob, sender="carol") == [broadcast, in_ops]
    assert ids(bob, to="dave") == []
    assert ids(bob, to="carol") == [by_bob]
    for hidden in (between_others, in_secret):
        for call in (post.thread(hidden, bob), post.replies(hidden, bob), post.root(hidden, bob)):
            assert refused(call).error == "message_not_found"
    assert post.root(answer, bob).get(timeout=5)["root"] == answer
    assert [m["id"] for m in post.thread(answer, bob).get(timeout=5)["messages"]] == [answer]
    assert post.root(answer, ADMIN).get(timeout=5)["root"] == between_others
    assert post.replies(between_others, ADMIN).get(timeout=5)["count"] == 1

    post.unsubscribe("ops", "bob").get(timeout=5)
    assert in_ops not in ids(bob), "a channel's messages are for its current subscribers"


# --- /api/messages ---------------------------------------------------------------------------


def test_history_pages_by_cursor_and_filters_by_sender_recipient_channel_and_time(
    post: Any, clock: ManualClock
) -> None:
    post.create_channel("ops", None, "alice").get(timeout=5)
    start = clock.now
    first = send(post, "alice", "bob")
    clock.advance(10)
    second = send(post, "bob", "alice")
    clock.advance(10)
    third = post.publish("ops", letter("alice")).get(timeout=5)["id"]
    clock.advance(10)
    fourth = send(post, "carol")

    page = post.history(ADMIN, limit=2).get(timeout=5)
    assert [m["id"] for m in page["messages"]] == [first, second]
    assert (page["count"], page["cursor"]) == (2, page["messages"][-1]["seq"])
    assert page["messages"][0]["type"] == "chat" and page["messages"][0]["from"] == "alice"
    rest = post.history(ADMIN, cursor=page["cursor"], limit=2).get(timeout=5)
    assert [m["id"] for m in rest["messages"]] == [third, fourth]
    assert rest["messages"][0]["channel"] == "ops"
    end = post.history(ADMIN, cursor=rest["cursor"]).get(timeout=5)
    assert (end["messages"], end["count"], end["cursor"]) == ([], 0, rest["cursor"])

    def ids(**filters: Any) -> list[str]:
        return [m["id"] for m in post.history(ADMIN, **filters).get(timeout=5)["messages"]]

    assert ids(sender="alice") == [first, third]
    assert ids(to="alice") == [second]
    assert ids(channel="ops") == [third]
    assert ids(since=start + 10) == [second, third, fourth]
    assert ids(until=start + 10) == [first, second]
    assert ids(since=start + 5, until=start + 25) == [second, third]
    assert ids(since=start + 31) == []
    assert ids(sender="alice", since=start + 1) == [third]
    assert len(ids(limit=1000)) == 4, "the limit is capped, not refused"


def test_timestamps_never_go_back_so_time_filters_stay_exact(post: Any, clock: ManualClock) -> None:
    first = post.send(letter("alice", "bob"), KNOWN).get(timeout=5)
    clock.advance(-5_000)  # the wall clock jumps back
    second = post.send(letter("alice", "bob"), KNOWN).get(timeout=5)
    assert second["timestamp"] == first["timestamp"]
    found = post.history(ADMIN, since=first["timestamp"]).get(timeout=5)["messages"]
    assert [m["id"] for m in found] == [first["id"], second["id"]]


# --- a full disk -------------------------------------------------------------------------


def test_a_full_store_refuses_messages_without_pushing_or_crashing_and_recovers(
    office: Office, events: queue.Queue[object]
) -> None:
    post = office.start(kind=FillablePostOffice)
    disk: FillableDisk = post.disk.get(timeout=5)
    post.create_channel("ops", None, "alice").get(timeout=5)
    post.subscribe("ops", "bob").get(timeout=5)
    post.subscribe("ops", "carol").get(timeout=5)
    bob = Agent(post, "bob").connect()

    with structlog.testing.capture_logs() as logs:
        disk.full = "commit"
        for _ in range(2):  # the first fails a group commit, the second alone
            with pytest.raises(StorageFull):
                post.send(letter("alice", "bob"), KNOWN).get(timeout=5)
            with pytest.raises(StorageFull):
                post.publish("ops", letter("alice")).get(timeout=5)
            with pytest.raises(StorageFull):
                post.send(letter("alice"), KNOWN).get(timeout=5)
        assert bob.frames() == [], "nothing refused is pushed"
        # Reads go on; notices and sweeps change nothing and crash nothing.
        assert mailbox(post, "bob")["messages"] == []
        assert mailbox(post, "carol")["messages"] == []
        Agent(post, "carol").connect()
        post.actor_ref.tell(MailboxSweepDue())
        assert post.channel("ops").get(timeout=5)["subscriber_count"] == 2
        assert post.actor_ref.is_alive()

        disk.full = None
        post.actor_ref.tell(MailboxSweepDue())  # its probe ends the episode, without traffic
        barrier(post)
        storage = [e["event"] for e in logs if e["event"].startswith("storage_")]
        assert storage == ["storage_full", "storage_writable_again"], "once per episode"
        assert len([e for e in logs if e.get("exc_info")]) <= 1, "one failed group commit at most"

    sent = post.send(letter("alice", "bob"), KNOWN).get(timeout=5)
    assert [f["seq"] for f in bob.frames()] == [1], "seq 1: the refused ones took none"
    assert post.publish("ops", letter("alice")).get(timeout=5)["seq"] == 1
    assert next_event(events, "message_sent").fields["message_id"] == sent["id"], "none refused"


def test_a_write_refused_mid_batch_rolls_back_that_request_only(office: Office) -> None:
    post = office.start(kind=FillablePostOffice)
    disk: FillableDisk = post.disk.get(timeout=5)
    disk.full = "write"
    with pytest.raises(StorageFull):
        post.send(letter("alice", "bob"), KNOWN).get(timeout=5)
    disk.full = None
    post.actor_ref.tell(MailboxSweepDue())
    send(post, "alice", "bob")
    assert seqs(mailbox(post, "bob")) == [1]


# --- settings -----------------------------------------------------------------------------


def test_retention_settings_come_from_flags_env_or_defaults() -> None:
    assert config_from_args([], {}).retention == Retention(1000, 604_800_000, 1000)
    env = {"AGENTCOM_MAILBOX_MAX": "5", "AGENTCOM_MAILBOX_TTL_MS": "60000"}
    config = config_from_args(["--mailbox-max", "7", "--channel-history-max", "9"], env)
    assert config.retention == Retention(
        mailbox_max=7, mailbox_ttl_ms=60_000, channel_history_max=9
    )
    assert HubConfig(mailbox_max=3).retention.mailbox_max == 3


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--mailbox-max", "0"], {}, "mailbox_max must be a positive integer"),
        ([], {"AGENTCOM_CHANNEL_HISTORY_MAX": "-1"}, "channel_history_max must be a positive"),
        (["--mailbox-ttl-ms", "0"], {}, "mailbox_ttl_ms must be a positive number"),
        ([], {"AGENTCOM_MAILBOX_MAX": "lots"}, "is not an integer"),
    ],
)
def test_bad_retention_settings_are_refused(
    argv: list[str], env: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        config_from_args(argv, env)
    assert message in capsys.readouterr().err


def test_logs_name_the_agent_and_the_message(post: Any) -> None:
    with structlog.testing.capture_logs() as logs:
        direct = send(post, "alice", "bob")
        post.create_channel("ops", None, "alice").get(timeout=5)
        published = post.publish("ops", letter("carol")).get(timeout=5)["id"]
    named = {(e["event"], e.get("agent_id"), e.get("message_id")) for e in logs}
    assert ("message_sent", "alice", direct) in named
    assert ("channel_published", "carol", published) in named


def test_a_thread_answer_holds_at_most_a_thousand_messages_and_says_so(
    post: Any, office: Office
) -> None:
    top = send(post, "alice", "bob")
    for n in range(THREAD_MAX + 1):
        insert_raw(office, f"{n:016x}", top, 10 + n)
    thread = post.thread(top, ADMIN).get(timeout=5)
    replies = post.replies(top, ADMIN).get(timeout=5)
    assert (thread["count"], len(thread["messages"]), thread["truncated"]) == (
        THREAD_MAX,
        THREAD_MAX,
        True,
    )
    assert (replies["count"], len(replies["replies"]), replies["truncated"]) == (
        THREAD_MAX,
        THREAD_MAX,
        True,
    )
    small = send(post, "alice", "bob")
    assert post.thread(small, ADMIN).get(timeout=5)["truncated"] is False
    assert post.replies(small, ADMIN).get(timeout=5)["truncated"] is False


def test_an_agent_may_be_subscribed_to_at_most_a_hundred_channels(post: Any) -> None:
    for n in range(MAX_SUBSCRIPTIONS + 1):
        post.create_channel(f"c{n}", None, "alice").get(timeout=5)
    for n in range(MAX_SUBSCRIPTIONS):
        assert post.subscribe(f"c{n}", "bob").get(timeout=5) == "subscribed"
    error = refused(post.subscribe(f"c{MAX_SUBSCRIPTIONS}", "bob"))
    assert (error.error, error.status) == ("too_many_subscriptions", 409)
    assert post.subscribe("c0", "bob").get(timeout=5) == "already_subscribed"
    assert len(post.subscriptions("bob").get(timeout=5)) == MAX_SUBSCRIPTIONS
    post.unsubscribe("c0", "bob").get(timeout=5)
    assert post.subscribe(f"c{MAX_SUBSCRIPTIONS}", "bob").get(timeout=5) == "subscribed"
