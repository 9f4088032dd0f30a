"""Analytics routes (the original's shapes, last 24 hours) and ``GET /metrics``.

``/api/analytics/*`` ask the ``Analytics`` actor and need a token of any role
(aggregates, PROTOCOL.md Part 3). ``/metrics`` needs none and shows
aggregates only: it asks TaskQueue for its stats and Presence for the FSM
states (awaited, never blocking the loop), counts the open sockets on the
loop, and renders the hub's own registry (``agentcom.metrics``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pykka

from agentcom.http.base import BaseHandler, HttpError, Services
from agentcom.http.websocket import SocketRegistry
from agentcom.metrics import CONTENT_TYPE, HubMetrics


class _AnalyticsHandler(BaseHandler):
    @property
    def analytics(self) -> pykka.ActorProxy[Any]:
        if self.services.analytics is None:
            raise HttpError(404, "not_found")
        return self.services.analytics


class AnalyticsSummaryHandler(_AnalyticsHandler):
    async def get(self) -> None:
        await self.authenticate()
        self.send_json(await self.ask(self.analytics.summary()))


class AnalyticsAgentsHandler(_AnalyticsHandler):
    async def get(self) -> None:
        await self.authenticate()
        self.send_json({"agents": await self.ask(self.analytics.agents())})


class AnalyticsHourlyHandler(_AnalyticsHandler):
    async def get(self, agent_id: str) -> None:
        await self.authenticate()
        hourly = await self.ask(self.analytics.hourly(agent_id))
        self.send_json({"agent_id": agent_id, "hourly": hourly})


class MetricsHandler(BaseHandler):
    def initialize(self, services: Services, registry: SocketRegistry) -> None:  # type: ignore[override]
        super().initialize(services)
        self.registry = registry

    async def get(self) -> None:
        metrics: HubMetrics | None = self.services.metrics
        if metrics is None:
            raise HttpError(404, "not_found")
        stats, states = await asyncio.gather(
            self.ask(self.services.task_queue.stats()),
            self.ask(self.services.presence.agent_states()),
        )
        body = metrics.render(
            stats, (state["fsm_state"] for state in states), len(self.registry.sockets)
        )
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(body)
