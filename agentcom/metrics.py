"""The hub's Prometheus figures (``GET /metrics``): one registry per hub, aggregates only.

Each ``Hub`` owns a ``HubMetrics`` with a ``CollectorRegistry`` of its own, not
prometheus_client's global one, so two hubs in one process (tests) do not
clash. prometheus_client's counters, gauges and histograms are thread-safe:
the ``Metrics`` actor moves the counters and histograms from HubEvents, the
store actors observe their commit times on their own threads, and the
``/metrics`` handler sets the scrape-time gauges on the IOLoop just before it
renders.

No label ever holds a task id, an agent id or anything from a payload: the
labels are closed sets (status, lane, cause, FSM state, message kind, store).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agentcom.messages import ReclaimCause

CONTENT_TYPE = CONTENT_TYPE_LATEST

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
COMMIT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
FSM_STATES = ("idle", "assigned", "working", "blocked", "offline")
MESSAGE_KINDS = ("direct", "broadcast", "channel")


class HubMetrics:
    """Every metric of one hub, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tasks = Gauge(
            "agentcom_tasks", "Tasks by status, at scrape time", ["status"], registry=r
        )
        self.tasks_by_lane = Gauge(
            "agentcom_tasks_by_lane",
            "Tasks that are not dead-lettered, by priority lane, at scrape time",
            ["lane"],
            registry=r,
        )
        self.submitted = Counter("agentcom_tasks_submitted", "Tasks submitted", registry=r)
        self.assigned = Counter("agentcom_tasks_assigned", "Assignments made", registry=r)
        self.completed = Counter("agentcom_tasks_completed", "Tasks completed", registry=r)
        self.failed = Counter(
            "agentcom_tasks_failed", "Failures reported that sent a task back", registry=r
        )
        self.reclaimed = Counter(
            "agentcom_tasks_reclaimed", "Assignments taken back, by cause", ["cause"], registry=r
        )
        self.rejected = Counter("agentcom_tasks_rejected", "Assignments rejected", registry=r)
        self.dead_lettered = Counter(
            "agentcom_tasks_dead_lettered", "Tasks moved to the dead letter", registry=r
        )
        self.cancelled = Counter(
            "agentcom_tasks_cancelled", "Tasks cancelled (POST /api/tasks/{id}/cancel)", registry=r
        )
        self.requeued = Counter(
            "agentcom_tasks_requeued", "Tasks retried from the dead letter", registry=r
        )
        self.assign_latency = Histogram(
            "agentcom_task_assign_latency_seconds",
            "From queued (or back in its lane) to assigned",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.completion_latency = Histogram(
            "agentcom_task_completion_latency_seconds",
            "From assigned to completed",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.messages_sent = Counter(
            "agentcom_messages_sent", "Messages sent, by kind", ["kind"], registry=r
        )
        self.agents = Gauge(
            "agentcom_agents",
            "Connected agents by FSM state, at scrape time",
            ["state"],
            registry=r,
        )
        self.connections = Gauge(
            "agentcom_websocket_connections", "Open agent WebSockets, at scrape time", registry=r
        )
        self.commit_seconds = Histogram(
            "agentcom_store_commit_seconds",
            "Time of one group commit that wrote, by store",
            ["store"],
            buckets=COMMIT_BUCKETS_S,
            registry=r,
        )
        # Every label value shows from the start, at 0, so a rate() has a beginning.
        for kind in MESSAGE_KINDS:
            self.messages_sent.labels(kind)
        for cause in (*ReclaimCause, "other"):
            self.reclaimed.labels(cause)
        for state in FSM_STATES:
            self.agents.labels(state)

    def commit_observer(self, store: str) -> Callable[[float], None]:
        """What a store actor calls with each commit's duration (seconds)."""
        return self.commit_seconds.labels(store).observe

    def render(
        self,
        task_stats: Mapping[str, Any],
        fsm_states: Iterable[str],
        connections: int,
    ) -> bytes:
        """Set the scrape-time gauges, then the text format of everything."""
        for status, count in task_stats["by_status"].items():
            self.tasks.labels(status).set(count)
        self.tasks.labels("dead_letter").set(task_stats["dead_letter"])
        for lane, count in task_stats["by_priority"].items():
            self.tasks_by_lane.labels(lane).set(count)
        by_state = dict.fromkeys(FSM_STATES, 0)
        for state in fsm_states:
            by_state[state] = by_state.get(state, 0) + 1
        for state, count in by_state.items():
            self.agents.labels(state).set(count)
        self.connections.set(connections)
        return generate_latest(self.registry)
