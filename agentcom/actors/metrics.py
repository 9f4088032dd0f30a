"""Metrics: turns the HubEvents on ``EVENTS_TOPIC`` into the hub's Prometheus counters.

Subscribed to ``EVENTS_TOPIC`` gathered (a window's events at a time); it
moves the counters of ``HubMetrics`` (submitted, assigned, completed, failed,
reclaimed by cause, rejected, dead-lettered, cancelled, requeued, messages
sent by kind) and observes the two latency histograms from the events' own
timestamps:

* assign latency: from ``task_queued`` (or the event that put the task back in
  its lane: ``task_failed``, ``task_reclaimed``, ``task_rejected``,
  ``task_requeued``) to ``task_assigned``;
* completion latency: from ``task_assigned`` to ``task_completed``.

The start times are kept in memory per task, dropped as soon as they are
used, and bounded (``MAX_TRACKED``, the oldest dropped first): a task queued
before the hub (re)started, or dropped from the bound, is simply not
observed. Everything else (agent and presence events, ``task_accepted``,
``task_progress``, ``channel_published``'s details) moves no counter here.
Scrape-time figures (tasks by status, agents by state, sockets) are read by
the ``/metrics`` handler, not here.
"""

from __future__ import annotations

from typing import Any

import pykka
import structlog

from agentcom.actors.base import HubActor
from agentcom.actors.pubsub import Gathered
from agentcom.messages import EVENTS_TOPIC, HubEvent, ReclaimCause
from agentcom.metrics import HubMetrics

log = structlog.get_logger(__name__)

MAX_TRACKED = 100_000
"""Most tasks whose queued (or assigned) time is held at once."""

_CAUSES = frozenset(cause.value for cause in ReclaimCause)
_BACK_IN_LANE = ("task_failed", "task_reclaimed", "task_rejected", "task_requeued")


def _put(times: dict[str, int], task_id: str, timestamp: int) -> None:
    times.pop(task_id, None)  # re-inserted last: the dict's order is oldest first
    times[task_id] = timestamp
    if len(times) > MAX_TRACKED:
        del times[next(iter(times))]


class Metrics(HubActor):
    def __init__(self, metrics: HubMetrics, pubsub_ref: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self._m = metrics
        self._pubsub = pubsub_ref.proxy()
        self._queued_at: dict[str, int] = {}
        self._assigned_at: dict[str, int] = {}

    def on_start(self) -> None:
        self._pubsub.subscribe(EVENTS_TOPIC, self.actor_ref, gathered=True).get()

    def tracked(self) -> dict[str, int]:
        """How many start times are held (tests; a barrier only when PubSub does not gather)."""
        return {"queued": len(self._queued_at), "assigned": len(self._assigned_at)}

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Gathered):
            for event in message.hub_events():
                try:
                    self._count(event)
                except Exception:  # a malformed event must not stop the counting
                    log.exception("metrics_event_failed", event_type=event.type)
        return None

    def _count(self, event: HubEvent) -> None:
        m, task_id, kind = self._m, event.task_id or event.fields.get("task_id"), event.type
        if kind == "task_queued":
            m.submitted.inc()
            if task_id:
                _put(self._queued_at, task_id, event.timestamp)
        elif kind == "task_assigned":
            m.assigned.inc()
            if task_id:
                queued_at = self._queued_at.pop(task_id, None)
                if queued_at is not None:
                    m.assign_latency.observe(max(event.timestamp - queued_at, 0) / 1000)
                _put(self._assigned_at, task_id, event.timestamp)
        elif kind == "task_completed":
            m.completed.inc()
            if task_id:
                self._queued_at.pop(task_id, None)
                assigned_at = self._assigned_at.pop(task_id, None)
                if assigned_at is not None:
                    m.completion_latency.observe(max(event.timestamp - assigned_at, 0) / 1000)
        elif kind in ("task_dead_letter", "task_cancelled"):
            (m.dead_lettered if kind == "task_dead_letter" else m.cancelled).inc()
            if task_id:
                self._queued_at.pop(task_id, None)
                self._assigned_at.pop(task_id, None)
        elif kind in _BACK_IN_LANE:
            if kind == "task_failed":
                m.failed.inc()
            elif kind == "task_reclaimed":
                cause = event.fields.get("cause")
                m.reclaimed.labels(cause if cause in _CAUSES else "other").inc()
            elif kind == "task_rejected":
                m.rejected.inc()
            else:
                m.requeued.inc()
            if task_id:
                self._assigned_at.pop(task_id, None)
                _put(self._queued_at, task_id, event.timestamp)
        elif kind == "message_sent":
            m.messages_sent.labels("direct" if event.fields.get("to") else "broadcast").inc()
        elif kind == "channel_published":
            m.messages_sent.labels("channel").inc()
