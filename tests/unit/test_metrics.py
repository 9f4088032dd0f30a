"""Metrics: HubEvents move a hub's own Prometheus counters and latency histograms; the
scrape-time gauges come from what the handler hands to ``render``."""

from __future__ import annotations

from typing import Any

import pykka
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentcom.actors import metrics as metrics_actor
from agentcom.actors.metrics import Metrics
from agentcom.messages import EVENTS_TOPIC, HubEvent
from agentcom.metrics import HubMetrics

STATS = {
    "by_status": {"queued": 2, "assigned": 1, "completed": 5, "failed": 0},
    "by_priority": {"urgent": 0, "high": 1, "normal": 7, "low": 0},
    "dead_letter": 3,
}


def samples(metrics: HubMetrics, fsm_states: tuple[str, ...] = (), sockets: int = 0) -> dict:
    text = metrics.render(STATS, fsm_states, sockets).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def task(kind: str, at: int, task_id: str = "t1", **fields: Any) -> HubEvent:
    return HubEvent(kind, at, {"task_id": task_id, **fields}, task_id=task_id)


@pytest.fixture
def hub_metrics(pubsub_ref: pykka.ActorRef[Any]) -> tuple[HubMetrics, Any]:
    metrics = HubMetrics()
    proxy = Metrics.start(metrics, pubsub_ref).proxy()
    proxy.actor_urn.get(timeout=5)
    return metrics, proxy


def publish(pubsub_ref: pykka.ActorRef[Any], proxy: Any, *events: HubEvent) -> None:
    pubsub_ref.proxy().publish(EVENTS_TOPIC, list(events)).get(timeout=5)
    proxy.tracked().get(timeout=5)  # a barrier: every event above is counted


def test_events_move_counters_and_latencies(pubsub_ref, hub_metrics):
    metrics, proxy = hub_metrics
    publish(
        pubsub_ref,
        proxy,
        task("task_queued", 1_000),
        task("task_assigned", 1_500, agent_id="a"),
        task("task_reclaimed", 2_000, cause="acceptance_timeout"),
        task("task_assigned", 4_000, agent_id="b"),
        task("task_completed", 6_500, agent_id="b"),
        task("task_queued", 1_000, "t2"),
        task("task_failed", 1_100, "t2"),
        task("task_dead_letter", 1_200, "t2"),
        task("task_reclaimed", 1_300, "t3", cause="made up by someone"),
        HubEvent("message_sent", 1, {"from": "a", "to": "b"}),
        HubEvent("message_sent", 1, {"from": "a", "to": None}),
        HubEvent("channel_published", 1, {"from": "a", "channel": "c"}),
    )
    found = samples(metrics, ("idle", "idle", "working"), sockets=4)
    assert found[("agentcom_tasks_submitted_total", ())] == 2
    assert found[("agentcom_tasks_assigned_total", ())] == 2
    assert found[("agentcom_tasks_completed_total", ())] == 1
    assert found[("agentcom_tasks_failed_total", ())] == 1
    assert found[("agentcom_tasks_dead_lettered_total", ())] == 1
    assert found[("agentcom_tasks_reclaimed_total", (("cause", "acceptance_timeout"),))] == 1
    assert found[("agentcom_tasks_reclaimed_total", (("cause", "other"),))] == 1
    # queued→assigned: 0.5 s, then reclaimed→assigned again: 2 s; assigned→completed: 2.5 s.
    assert found[("agentcom_task_assign_latency_seconds_count", ())] == 2
    assert found[("agentcom_task_assign_latency_seconds_sum", ())] == pytest.approx(2.5)
    assert found[("agentcom_task_completion_latency_seconds_count", ())] == 1
    assert found[("agentcom_task_completion_latency_seconds_sum", ())] == pytest.approx(2.5)
    for kind in ("direct", "broadcast", "channel"):
        assert found[("agentcom_messages_sent_total", (("kind", kind),))] == 1
    assert found[("agentcom_tasks", (("status", "queued"),))] == 2
    assert found[("agentcom_tasks", (("status", "dead_letter"),))] == 3
    assert found[("agentcom_tasks_by_lane", (("lane", "normal"),))] == 7
    assert found[("agentcom_agents", (("state", "idle"),))] == 2
    assert found[("agentcom_agents", (("state", "working"),))] == 1
    assert found[("agentcom_agents", (("state", "blocked"),))] == 0
    assert found[("agentcom_websocket_connections", ())] == 4
    # Start times are dropped once used: only t3 (back in its lane) is still held.
    assert proxy.tracked().get(timeout=5) == {"queued": 1, "assigned": 0}


def test_start_times_held_are_bounded(pubsub_ref, hub_metrics, monkeypatch):
    metrics, proxy = hub_metrics
    monkeypatch.setattr(metrics_actor, "MAX_TRACKED", 10)
    publish(pubsub_ref, proxy, *(task("task_queued", n, f"t{n}") for n in range(50)))
    assert proxy.tracked().get(timeout=5) == {"queued": 10, "assigned": 0}
    publish(pubsub_ref, proxy, task("task_assigned", 100, "t49"), task("task_assigned", 100, "t0"))
    assert proxy.tracked().get(timeout=5) == {"queued": 9, "assigned": 2}
    found = samples(metrics)
    # t0 was dropped from the bound (not observed); t49, the newest, was.
    assert found[("agentcom_task_assign_latency_seconds_count", ())] == 1


def test_every_label_value_is_there_from_the_start():
    found = samples(HubMetrics())
    for cause in ("disconnected", "replaced", "acceptance_timeout", "stuck", "overdue", "crashed"):
        assert found[("agentcom_tasks_reclaimed_total", (("cause", cause),))] == 0
    for kind in ("direct", "broadcast", "channel"):
        assert found[("agentcom_messages_sent_total", (("kind", kind),))] == 0


def test_two_hubs_in_one_process_have_registries_of_their_own():
    first, second = HubMetrics(), HubMetrics()
    first.completed.inc()
    first.commit_observer("tasks")(0.002)
    assert samples(first)[("agentcom_tasks_completed_total", ())] == 1
    assert samples(second)[("agentcom_tasks_completed_total", ())] == 0
    assert samples(first)[("agentcom_store_commit_seconds_count", (("store", "tasks"),))] == 1
