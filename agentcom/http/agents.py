"""Agent routes: health, connected agents, FSM states."""

from __future__ import annotations

from agentcom.http.base import BaseHandler, HttpError


class HealthHandler(BaseHandler):
    async def get(self) -> None:
        count = await self.ask(self.services.presence.count())
        self.send_json({"status": "ok", "agents_connected": count})


class AgentsHandler(BaseHandler):
    async def get(self) -> None:
        self.send_json({"agents": await self.ask(self.services.presence.list_agents())})


class AgentStatesHandler(BaseHandler):
    async def get(self) -> None:
        await self.authenticate()
        self.send_json({"agents": await self.ask(self.services.presence.agent_states())})


class AgentStateHandler(BaseHandler):
    async def get(self, agent_id: str) -> None:
        await self.authenticate()
        states = await self.ask(self.services.presence.agent_states(agent_id))
        if not states:
            raise HttpError(404, "agent_not_connected")
        self.send_json(states[0])
