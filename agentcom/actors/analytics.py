"""Analytics: per-agent counts per UTC hour, kept in ``analytics.sqlite3`` for a week.

Subscribed to ``EVENTS_TOPIC``, it counts, in the hour of each event's own
timestamp:

* ``sent``: ``message_sent`` and ``channel_published`` for the sender;
* ``received``: ``message_sent`` for its recipient. A broadcast (``to`` null)
  and a channel publish count as sent only, as in the original: who got a
  fan-out is not in the event, and one broadcast would otherwise count once
  per agent;
* ``tasks_completed``: ``task_completed`` for the agent that completed it;
* ``tasks_failed``: ``task_failed`` and ``task_dead_letter`` for the agent
  that held the task;
* ``connection_time_ms``: from ``agent_joined`` to ``agent_left``, split over
  the hours it spans (a session still open is added at read time).

It also keeps, per agent, when it connected, was last active (joined, sent a
message, or reported on a task) and last seen (left), and how often it
connected. Everything else on the topic it ignores.

Events come from PubSub gathered, one ``Gathered`` message per window of
``--event-gather-ms``. Counts gather in memory while a batch is handled and
are written in one transaction at its end (a ``StoreActor``: one commit per
batch). The events are facts already committed by their owners, and nothing
replays them: a crash (SIGKILL) loses the counts of the window PubSub still
gathers and of the batch not yet committed. A clean stop hands on the last
window and commits the last batch.
Sessions left open by a crash are closed at start, at the last event stored.

Hours older than seven days, and agents offline and quiet as long, are pruned
at start and then every ``PRUNE_EVERY_S``. A full disk drops the counts of
the batches it refuses (logged once per episode, as every store actor does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pykka
import structlog

from agentcom.actors.base import StoreActor, tell_quietly
from agentcom.actors.pubsub import Gathered
from agentcom.analytics_store import (
    COUNTS,
    HOUR_MS,
    AgentRow,
    AnalyticsStore,
    bucket_of,
)
from agentcom.clock import Clock, now_ms
from agentcom.messages import EVENTS_TOPIC, HubEvent, StorageFull
from agentcom.stores.interface import Stores
from agentcom.timers import TimerHandle, Timers

log = structlog.get_logger(__name__)

KEEP_MS = 7 * 24 * HOUR_MS
"""How long hourly counts (and quiet, offline agents) are kept."""
PRUNE_EVERY_S = 3600.0
WINDOW_HOURS = 24
ACTIVE_WITHIN_MS = 300_000
"""A connected agent active this recently is ``active``, else ``idle`` (as the original)."""

_SENT, _RECEIVED, _COMPLETED, _FAILED, _CONNECTED = range(len(COUNTS))
_ACTIVITY = frozenset(
    ("task_accepted", "task_progress", "task_completed", "task_failed", "task_rejected")
)


@dataclass(frozen=True, slots=True)
class PruneDue:
    pass


class Analytics(StoreActor[AnalyticsStore, None]):
    def __init__(
        self,
        stores: Stores | Path,
        pubsub_ref: pykka.ActorRef[Any],
        timers: Timers | None = None,
        clock: Clock = now_ms,
    ) -> None:
        super().__init__(stores, clock)
        self._pubsub = pubsub_ref.proxy()
        self._timers = timers
        self._prune_timer: TimerHandle | None = None
        self._agents: dict[str, AgentRow] = {}
        self._pending: dict[tuple[str, int], list[int]] = {}  # counts not yet written
        self._dirty: set[str] = set()  # agents whose row is not yet written
        self._last_event_at = 0

    # --- lifecycle ----------------------------------------------------------------------

    def on_start(self) -> None:
        self._db = self._stores.connect("analytics")
        self._store = AnalyticsStore(self._db)
        self._load()
        self._last_event_at = self._store.last_event_at() or 0
        try:
            self._close_sessions_left_open()
            self._prune()
            self._write_pending()
            self._commit()
        except StorageFull as full:
            self._store.rollback()
            self._reload()
            self._storage_full(full)
        self._pubsub.subscribe(EVENTS_TOPIC, self.actor_ref, gathered=True).get()
        self._arm_prune()
        log.info("analytics_started", agents=len(self._agents))

    def _load(self) -> None:
        self._agents = {row.agent_id: row for row in self._store.agents()}
        self._pending.clear()
        self._dirty.clear()

    def on_stop(self) -> None:
        # The last batch is committed, and the store closed, in end_batch, after this.
        if self._prune_timer is not None:
            self._prune_timer.cancel()
        log.info("analytics_stopped")

    def _flush(self) -> None:
        self._outbox.clear()  # nothing goes out: analytics only answers reads

    def _answer_when_full(self, message: Any, full: StorageFull) -> Any:
        return None  # only the prune tick writes inside a message

    def end_batch(self) -> None:
        """One transaction for the batch's counts; a full disk drops them."""
        try:
            self._settle()
        finally:
            if self.actor_stopped.is_set():
                self._store.close()

    def _settle(self) -> None:
        """Commit the counts gathered so far; a full disk drops them.

        Reads settle first, so they answer what is on disk: a read answered in
        the middle of a batch must not show counts the batch's commit then loses.
        """
        try:
            self._write_pending()
            if self._commit() and self._full_since is not None:
                self._storage_writable()
        except StorageFull as full:
            self._store.rollback()
            self._reload()
            self._storage_full(full)

    def _write_pending(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, {}
            self._store.add(pending)
        if self._dirty:
            dirty, self._dirty = self._dirty, set()
            rows = [self._agents[a] for a in dirty if a in self._agents]
            self._store.save_agents(rows, self._last_event_at)
        self._store.end_message(keep=True)

    # --- events -------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        match message:
            case Gathered():
                for event in message.hub_events():
                    self._count(event)
            case PruneDue():
                try:
                    self._probe_if_full(self._clock())
                    self._prune()
                finally:
                    self._arm_prune()
        return None

    def _count(self, event: HubEvent) -> None:
        at, fields, kind = event.timestamp, event.fields, event.type
        self._last_event_at = max(self._last_event_at, at)
        agent_id = event.agent_id or fields.get("agent_id")
        if kind in ("message_sent", "channel_published"):
            sender = fields.get("from")
            if isinstance(sender, str):
                self._add(sender, at, _SENT)
                self._touch(sender, at).last_active = at
            to = fields.get("to") if kind == "message_sent" else None
            if isinstance(to, str):
                self._add(to, at, _RECEIVED)
                self._touch(to, at)
            return
        if not isinstance(agent_id, str):
            return
        if kind == "task_completed":
            self._add(agent_id, at, _COMPLETED)
        elif kind in ("task_failed", "task_dead_letter"):
            self._add(agent_id, at, _FAILED)
        if kind in _ACTIVITY:
            self._touch(agent_id, at).last_active = at
        elif kind == "agent_joined":
            agent = self._touch(agent_id, at)
            if agent.connected_at is not None:  # joined again without leaving: replaced
                self._connected_for(agent_id, agent.connected_at, at)
            agent.connected_at = agent.last_active = at
            agent.total_connections += 1
        elif kind == "agent_left":
            agent = self._touch(agent_id, at)
            if agent.connected_at is not None:
                self._connected_for(agent_id, agent.connected_at, at)
            agent.connected_at = None
            agent.last_seen = at

    def _add(self, agent_id: str, at: int, column: int, amount: int = 1) -> None:
        counts = self._pending.get((agent_id, bucket_of(at)))
        if counts is None:
            counts = self._pending[(agent_id, bucket_of(at))] = [0] * len(COUNTS)
        counts[column] += amount

    def _touch(self, agent_id: str, at: int) -> AgentRow:
        agent = self._agents.get(agent_id)
        if agent is None:
            agent = self._agents[agent_id] = AgentRow(agent_id)
        agent.updated_at = max(agent.updated_at, at)
        self._dirty.add(agent_id)
        return agent

    def _connected_for(self, agent_id: str, start: int, end: int) -> None:
        for bucket, ms in _split_by_hour(max(start, end - KEEP_MS), end).items():
            self._add(agent_id, bucket, _CONNECTED, ms)

    def _close_sessions_left_open(self) -> None:
        """Agents connected when the hub last stopped without saying so left at its last event."""
        for agent in list(self._agents.values()):
            if agent.connected_at is not None:
                end = max(self._last_event_at, agent.connected_at)
                self._connected_for(agent.agent_id, agent.connected_at, end)
                agent.connected_at = None
                agent.last_seen = end
                self._dirty.add(agent.agent_id)

    # --- pruning ------------------------------------------------------------------------

    def _prune(self) -> None:
        now = self._clock()
        hours, gone = self._store.prune(bucket_of(now) - KEEP_MS, now - KEEP_MS)
        for agent_id in gone:
            self._agents.pop(agent_id, None)
        if hours or gone:
            log.info("analytics_pruned", hours=hours, agents=len(gone))

    def _arm_prune(self) -> None:
        if self._timers is None or self.actor_stopped.is_set():
            return
        if self._prune_timer is not None:
            self._prune_timer.cancel()
        ref = self.actor_ref
        self._prune_timer = self._timers.call_later(
            PRUNE_EVERY_S, lambda: tell_quietly(ref, PruneDue())
        )

    def prune(self) -> None:
        """Prune now (tests; the timer does it every ``PRUNE_EVERY_S``)."""
        self._prune()

    # --- reads (the /api/analytics routes) ----------------------------------------------

    def _window(self) -> tuple[int, int, int]:
        now = self._clock()
        current = bucket_of(now)
        return now, current, current - (WINDOW_HOURS - 1) * HOUR_MS

    def _hours(self, agent_id: str | None, since: int, now: int) -> dict[int, list[int]]:
        """Counts per hour since ``since``: stored, plus the open sessions."""
        self._settle()
        hours = {
            bucket: [row[c] for c in COUNTS]
            for bucket, row in self._store.hours(agent_id, since).items()
        }
        agents = self._agents.values() if agent_id is None else [self._agents.get(agent_id)]
        for agent in agents:
            if agent is not None and agent.connected_at is not None:
                for bucket, ms in _split_by_hour(max(agent.connected_at, since), now).items():
                    hours.setdefault(bucket, [0] * len(COUNTS))[_CONNECTED] += ms
        return hours

    def _totals(self, since: int, now: int) -> dict[str, list[int]]:
        self._settle()
        totals = {
            agent_id: [row[c] for c in COUNTS]
            for agent_id, row in self._store.totals(since).items()
        }
        for agent in self._agents.values():
            if agent.connected_at is not None:
                open_ms = max(now - max(agent.connected_at, since), 0)
                totals.setdefault(agent.agent_id, [0] * len(COUNTS))[_CONNECTED] += open_ms
        return totals

    def agents(self) -> list[dict[str, Any]]:
        """Every agent seen in the last week, in the original's shape, by agent id."""
        now, current, since = self._window()
        totals = self._totals(since, now)
        this_hour = self._totals(current, now)
        stats = []
        for agent_id in sorted(self._agents.keys() | totals.keys()):
            agent = self._agents.get(agent_id) or AgentRow(agent_id)
            counts = totals.get(agent_id, [0] * len(COUNTS))
            connected = agent.connected_at is not None
            idle_ms = None if agent.last_active is None else max(now - agent.last_active, 0)
            stats.append(
                {
                    "agent_id": agent_id,
                    "connected": connected,
                    "idle_ms": idle_ms,
                    "status": _status(connected, idle_ms),
                    "messages_sent_24h": counts[_SENT],
                    "messages_received_24h": counts[_RECEIVED],
                    "messages_sent_this_hour": this_hour.get(agent_id, [0])[_SENT],
                    "connection_time_24h_ms": counts[_CONNECTED],
                    "last_active": agent.last_active,
                    "last_seen": agent.last_seen,
                    "total_connections": agent.total_connections,
                    "tasks_completed_24h": counts[_COMPLETED],
                    "tasks_failed_24h": counts[_FAILED],
                }
            )
        return stats

    def summary(self) -> dict[str, Any]:
        stats = self.agents()
        return {
            "total_agents": len(stats),
            "agents_connected": sum(1 for a in stats if a["connected"]),
            "agents_active": sum(1 for a in stats if a["status"] == "active"),
            "agents_idle": sum(1 for a in stats if a["status"] == "idle"),
            "agents_offline": sum(1 for a in stats if a["status"] == "offline"),
            "total_messages_24h": sum(a["messages_sent_24h"] for a in stats),
            "total_tasks_completed_24h": sum(a["tasks_completed_24h"] for a in stats),
            "total_tasks_failed_24h": sum(a["tasks_failed_24h"] for a in stats),
            "timestamp": self._clock(),
        }

    def hourly(self, agent_id: str) -> list[dict[str, Any]]:
        """The agent's last 24 hours, oldest first, one entry per hour (zeros included)."""
        now, current, since = self._window()
        hours = self._hours(agent_id, since, now)
        entries = []
        for bucket in range(since, current + 1, HOUR_MS):
            counts = hours.get(bucket, [0] * len(COUNTS))
            entries.append(
                {
                    "bucket": bucket,
                    "hour": time.strftime("%H:%M", time.gmtime(bucket // 1000)),
                    "sent": counts[_SENT],
                    "received": counts[_RECEIVED],
                    "tasks_completed": counts[_COMPLETED],
                    "tasks_failed": counts[_FAILED],
                    "connection_time_ms": counts[_CONNECTED],
                }
            )
        return entries


def _status(connected: bool, idle_ms: int | None) -> str:
    if not connected:
        return "offline"
    return "active" if idle_ms is not None and idle_ms < ACTIVE_WITHIN_MS else "idle"


def _split_by_hour(start: int, end: int) -> dict[int, int]:
    """The milliseconds of [start, end) in each UTC hour."""
    spans: dict[int, int] = {}
    at = start
    while at < end:
        bucket = bucket_of(at)
        stop = min(bucket + HOUR_MS, end)
        spans[bucket] = stop - at
        at = stop
    return spans
