"""Admin routes: token management (admin role only)."""

from __future__ import annotations

from agentcom.http.base import BaseHandler, HttpError
from agentcom.validation import TOKEN_REQUEST


class TokensHandler(BaseHandler):
    async def post(self) -> None:
        await self.authenticate(admin=True)
        body = self.json_body(TOKEN_REQUEST)
        agent_id, role = body["agent_id"], body.get("role") or "agent"
        token = await self.ask(self.services.tokens.create(agent_id, role))
        self.send_json({"agent_id": agent_id, "token": token}, 201)

    async def get(self) -> None:
        await self.authenticate(admin=True)
        self.send_json({"tokens": await self.ask(self.services.tokens.list_tokens())})


class TokenHandler(BaseHandler):
    async def delete(self, agent_id: str) -> None:
        await self.authenticate(admin=True)
        if not await self.ask(self.services.tokens.revoke(agent_id)):
            raise HttpError(404, "token_not_found")
        # Close the agent's sockets before answering, not at the next token check.
        await self.services.token_check.refresh(exact=True)
        self.send_json({"status": "revoked"})
