"""Analytics: per-agent counts per UTC hour from HubEvents, one commit per batch of
events, kept across a restart, pruned after a week."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pykka
import pytest
from structlog.testing import capture_logs

from agentcom.actors.analytics import Analytics
from agentcom.analytics_store import ANALYTICS_DB, HOUR_MS, bucket_of
from agentcom.messages import EVENTS_TOPIC, HubEvent

from .conftest import ManualClock
from .full_disk import OnFillableDisk

DAY_MS = 24 * HOUR_MS


@pytest.fixture
def start(tmp_path: Path, pubsub_ref: pykka.ActorRef[Any], clock: ManualClock) -> Any:
    def start() -> Any:
        analytics = Analytics.start(tmp_path, pubsub_ref, None, clock).proxy()
        analytics.actor_urn.get(timeout=5)  # on_start, and its subscription, are done
        return analytics

    return start


def publish(pubsub_ref: pykka.ActorRef[Any], *events: HubEvent) -> None:
    # Answered once PubSub has told every subscriber; the next ask to Analytics
    # is then handled after these events.
    pubsub_ref.proxy().publish(EVENTS_TOPIC, list(events)).get(timeout=5)


def sent(at: int, sender: str, to: str | None) -> HubEvent:
    return HubEvent("message_sent", at, {"message_id": "m", "from": sender, "to": to})


def task(kind: str, at: int, agent_id: str) -> HubEvent:
    fields = {"task_id": "t1", "agent_id": agent_id}
    return HubEvent(kind, at, fields, task_id="t1", agent_id=agent_id, submitted_by="s")


def joined(at: int, agent_id: str) -> HubEvent:
    return HubEvent(
        "agent_joined", at, {"agent_id": agent_id, "connected_at": at}, agent_id=agent_id
    )


def left(at: int, agent_id: str) -> HubEvent:
    return HubEvent("agent_left", at, {"agent_id": agent_id}, agent_id=agent_id)


def by_id(analytics: Any) -> dict[str, dict[str, Any]]:
    return {a["agent_id"]: a for a in analytics.agents().get(timeout=5)}


def hour_of(analytics: Any, agent_id: str, bucket: int) -> dict[str, Any]:
    hours = {h["bucket"]: h for h in analytics.hourly(agent_id).get(timeout=5)}
    return hours[bucket]


def test_counts_land_in_the_utc_hour_of_each_event(start, pubsub_ref, clock):
    analytics = start()
    now = clock.now
    this_hour, two_hours_ago = bucket_of(now), bucket_of(now) - 2 * HOUR_MS
    publish(
        pubsub_ref,
        sent(now, "alice", "bob"),
        sent(two_hours_ago + 5, "alice", "bob"),
        sent(this_hour - 1, "alice", "bob"),
        sent(now, "alice", None),  # a broadcast: sent, received by nobody
        HubEvent("channel_published", now, {"channel": "c", "from": "carol", "seq": 1}),
        task("task_completed", now, "bob"),
        task("task_failed", now, "bob"),
        task("task_dead_letter", two_hours_ago, "bob"),
    )
    hourly = analytics.hourly("alice").get(timeout=5)
    assert len(hourly) == 24
    assert [h["bucket"] for h in hourly] == [this_hour - i * HOUR_MS for i in range(23, -1, -1)]
    assert [h["sent"] for h in hourly[-3:]] == [1, 1, 2]
    assert hour_of(analytics, "bob", this_hour) | {"bucket": 0, "hour": ""} == {
        "bucket": 0,
        "hour": "",
        "sent": 0,
        "received": 1,
        "tasks_completed": 1,
        "tasks_failed": 1,
        "connection_time_ms": 0,
    }
    assert hour_of(analytics, "bob", two_hours_ago)["tasks_failed"] == 1
    assert hour_of(analytics, "bob", this_hour)["hour"] == "22:00"  # 1_700_000_000_000 is 22:13 UTC

    agents = by_id(analytics)
    assert sorted(agents) == ["alice", "bob", "carol"]
    alice, bob = agents["alice"], agents["bob"]
    assert alice["messages_sent_24h"] == 4
    assert alice["messages_sent_this_hour"] == 2
    assert alice["messages_received_24h"] == 0
    assert alice["last_active"] == now
    assert bob["messages_received_24h"] == 3
    assert bob["tasks_completed_24h"] == 1
    assert bob["tasks_failed_24h"] == 2
    assert agents["carol"]["messages_sent_24h"] == 1
    assert set(alice) == {
        "agent_id",
        "connected",
        "idle_ms",
        "status",
        "messages_sent_24h",
        "messages_received_24h",
        "messages_sent_this_hour",
        "connection_time_24h_ms",
        "last_active",
        "last_seen",
        "total_connections",
        "tasks_completed_24h",
        "tasks_failed_24h",
    }

    summary = analytics.summary().get(timeout=5)
    assert summary == {
        "total_agents": 3,
        "agents_connected": 0,
        "agents_active": 0,
        "agents_idle": 0,
        "agents_offline": 3,
        "total_messages_24h": 5,
        "total_tasks_completed_24h": 1,
        "total_tasks_failed_24h": 2,
        "timestamp": now,
    }

    # Hours fall out of the 24-hour window as the clock moves on: only this one is left.
    clock.advance(23 * HOUR_MS)
    assert by_id(analytics)["alice"]["messages_sent_24h"] == 2
    assert by_id(analytics)["alice"]["messages_sent_this_hour"] == 0


def test_connections_time_status_and_sessions_split_over_hours(start, pubsub_ref, clock):
    analytics = start()
    now = clock.now
    this_hour = bucket_of(now)
    publish(
        pubsub_ref, joined(this_hour - 30 * 60_000, "dave"), left(this_hour + 10 * 60_000, "dave")
    )
    dave = by_id(analytics)["dave"]
    assert dave["connection_time_24h_ms"] == 40 * 60_000
    assert dave["total_connections"] == 1
    assert dave["connected"] is False
    assert dave["status"] == "offline"
    assert dave["last_seen"] == this_hour + 10 * 60_000
    assert hour_of(analytics, "dave", this_hour - HOUR_MS)["connection_time_ms"] == 30 * 60_000
    assert hour_of(analytics, "dave", this_hour)["connection_time_ms"] == 10 * 60_000

    publish(pubsub_ref, joined(now - 1000, "dave"))
    dave = by_id(analytics)["dave"]
    assert dave["connected"] is True
    assert dave["status"] == "active"
    assert dave["total_connections"] == 2
    assert dave["connection_time_24h_ms"] == 40 * 60_000 + 1000  # the open session so far
    clock.advance(10 * 60_000)
    assert by_id(analytics)["dave"]["status"] == "idle"  # connected, quiet for 5+ minutes
    summary = analytics.summary().get(timeout=5)
    assert (summary["agents_connected"], summary["agents_idle"]) == (1, 1)


def test_one_commit_per_batch_of_events(start, pubsub_ref, clock):
    analytics = start()
    commits: list[float] = []
    first_commit_held = threading.Event()
    release = threading.Event()

    def observe(seconds: float) -> None:
        commits.append(seconds)
        if len(commits) == 1:
            first_commit_held.set()
            release.wait(timeout=5)

    analytics.commit_observer = observe
    publish(pubsub_ref, sent(clock.now, "alice", "bob"))
    assert first_commit_held.wait(timeout=5)
    # While the first batch's commit is held, 200 events wait in the inbox.
    publish(pubsub_ref, *(sent(clock.now, "alice", "bob") for _ in range(200)))
    release.set()
    assert by_id(analytics)["alice"]["messages_sent_24h"] == 201
    assert len(commits) == 2


def test_counts_survive_a_restart_and_open_sessions_are_closed(start, pubsub_ref, clock, tmp_path):
    analytics = start()
    now = clock.now
    publish(
        pubsub_ref,
        joined(now - 60_000, "erin"),
        sent(now - 1000, "erin", "frank"),
        task("task_completed", now, "erin"),
    )
    before = by_id(analytics)
    analytics.stop()  # erin never left: the hub stopped (or died) under her

    analytics = start()
    after = by_id(analytics)
    assert after["erin"]["messages_sent_24h"] == 1
    assert after["erin"]["tasks_completed_24h"] == 1
    assert after["frank"]["messages_received_24h"] == 1
    assert after["erin"]["total_connections"] == before["erin"]["total_connections"] == 1
    # Closed at the last event the analytics stored.
    assert after["erin"]["connected"] is False
    assert after["erin"]["last_seen"] == now
    assert after["erin"]["connection_time_24h_ms"] == 60_000


def stored_buckets(tmp_path: Path) -> list[int]:
    conn = sqlite3.connect(tmp_path / ANALYTICS_DB)
    try:
        return sorted(row[0] for row in conn.execute("SELECT DISTINCT bucket FROM hourly"))
    finally:
        conn.close()


def test_hours_older_than_a_week_are_pruned_on_the_timer_and_at_start(
    start, pubsub_ref, clock, tmp_path
):
    analytics = start()
    now = clock.now
    publish(
        pubsub_ref,
        sent(now - 8 * DAY_MS, "old", "older"),
        sent(now - 6 * DAY_MS, "alice", None),
        sent(now, "alice", None),
    )
    analytics.agents().get(timeout=5)  # a barrier: the batch is committed
    assert stored_buckets(tmp_path) == [
        bucket_of(now - 8 * DAY_MS),
        bucket_of(now - 6 * DAY_MS),
        bucket_of(now),
    ]
    analytics.prune().get(timeout=5)
    assert stored_buckets(tmp_path) == [bucket_of(now - 6 * DAY_MS), bucket_of(now)]
    assert sorted(by_id(analytics)) == ["alice"]  # quiet and offline for a week: forgotten

    analytics.stop()
    clock.advance(2 * DAY_MS)
    start()  # pruned at start
    assert stored_buckets(tmp_path) == [bucket_of(now)]


class FillableAnalytics(OnFillableDisk, Analytics):
    """Analytics on a disk the test fills."""


def test_a_full_disk_drops_the_counts_it_refuses_and_counting_goes_on(pubsub_ref, clock, tmp_path):
    analytics = FillableAnalytics.start(tmp_path, pubsub_ref, None, clock).proxy()
    analytics.actor_urn.get(timeout=5)
    disk = analytics.disk.get(timeout=5)
    with capture_logs() as logs:
        publish(pubsub_ref, sent(clock.now, "alice", "bob"))
        assert by_id(analytics)["alice"]["messages_sent_24h"] == 1
        disk.full = "write"
        publish(pubsub_ref, sent(clock.now, "alice", "bob"))
        publish(pubsub_ref, sent(clock.now, "alice", "bob"))
        assert by_id(analytics)["alice"]["messages_sent_24h"] == 1  # refused, dropped
        disk.full = None
        publish(pubsub_ref, sent(clock.now, "alice", "bob"))
        assert by_id(analytics)["alice"]["messages_sent_24h"] == 2
    events = [entry["event"] for entry in logs]
    assert events.count("storage_full") == 1
    assert events.count("storage_writable_again") == 1
    analytics.stop()
    assert by_id(start_again(tmp_path, pubsub_ref, clock))["alice"]["messages_sent_24h"] == 2


def start_again(tmp_path: Path, pubsub_ref: pykka.ActorRef[Any], clock: ManualClock) -> Any:
    analytics = Analytics.start(tmp_path, pubsub_ref, None, clock).proxy()
    analytics.actor_urn.get(timeout=5)
    return analytics


class HeldAnalytics(FillableAnalytics):
    """Analytics that can be held, so that the messages sent meanwhile make one batch."""

    def hold(self, release: threading.Event) -> None:
        release.wait(timeout=5)


def test_a_read_in_the_same_batch_as_counts_a_full_disk_drops_does_not_show_them(
    pubsub_ref, clock, tmp_path
):
    analytics = HeldAnalytics.start(tmp_path, pubsub_ref, None, clock).proxy()
    analytics.actor_urn.get(timeout=5)  # subscribed
    publish(pubsub_ref, sent(clock.now, "alice", "bob"))
    assert by_id(analytics)["alice"]["messages_sent_24h"] == 1
    analytics.disk.get(timeout=5).full = "write"
    release = threading.Event()
    analytics.hold.defer(release)
    publish(pubsub_ref, sent(clock.now, "alice", "bob"))  # queued behind hold, with the read
    read = analytics.agents()
    release.set()
    (alice,) = [a for a in read.get(timeout=5) if a["agent_id"] == "alice"]
    assert alice["messages_sent_24h"] == 1, alice  # the second count never reached the disk
