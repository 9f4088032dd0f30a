"""A request's token is checked once: in ``prepare`` when it has a body (before the
body is read), and the handler's own ``authenticate`` reuses that check, roles
and all (no real actors here: a counting token check and a fake TaskQueue)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.web

from agentcom.actors.base import CallbackFuture
from agentcom.http.base import Services
from agentcom.http.tasks import TasksHandler
from agentcom.store import TokenInfo


class CountingTokens:
    def __init__(self) -> None:
        self.checks = 0

    async def verify(self, token: str) -> TokenInfo | None:
        self.checks += 1
        roles = {"agent-token": "agent", "viewer-token": "viewer"}
        return TokenInfo("alice", roles[token], token[:8]) if token in roles else None


class Queue:
    def submit(self, spec: Any) -> CallbackFuture:
        answer = CallbackFuture()
        answer.set({"task_id": "t1", "priority": "normal"})
        return answer


def test_a_submission_checks_its_token_once_and_still_refuses_by_role() -> None:
    tokens = CountingTokens()

    async def scenario() -> list[int]:
        services = Services(
            task_queue=Queue(),  # type: ignore[arg-type]
            presence=None,  # type: ignore[arg-type]
            tokens=None,  # type: ignore[arg-type]
            token_check=tokens,  # type: ignore[arg-type]
            post_office=None,  # type: ignore[arg-type]
        )
        app = tornado.web.Application([(r"/api/tasks", TasksHandler, {"services": services})])
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        codes = []
        for token in ("agent-token", "viewer-token", "unknown"):
            reply = await tornado.httpclient.AsyncHTTPClient().fetch(
                f"http://127.0.0.1:{port}/api/tasks",
                method="POST",
                body=json.dumps({"description": "d"}),
                headers={"Authorization": f"Bearer {token}"},
                raise_error=False,
            )
            codes.append(reply.code)
        server.stop()
        return codes

    assert asyncio.run(scenario()) == [201, 403, 401]
    assert tokens.checks == 3  # one per request
