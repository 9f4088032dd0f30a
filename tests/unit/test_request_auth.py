"""A request with a body has its token checked in ``prepare``, before any of the body
is read; its handler checks again once the body is in, unless the body came within
``TOKEN_RECHECK_AFTER_S``. A token revoked while a slower body was arriving is
refused (no real actors here: a token check that revokes after its first answer,
and a fake TaskQueue)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.web

from agentcom.actors.base import CallbackFuture
from agentcom.http import base
from agentcom.http.base import Services
from agentcom.http.tasks import TasksHandler
from agentcom.store import TokenInfo


class RevokedAfterFirstCheck:
    def __init__(self) -> None:
        self.checks = 0

    async def verify(self, token: str) -> TokenInfo | None:
        self.checks += 1
        return TokenInfo("alice", "agent", token[:8]) if self.checks == 1 else None


class Queue:
    def __init__(self) -> None:
        self.submitted: list[Any] = []

    def submit(self, spec: Any) -> CallbackFuture:
        self.submitted.append(spec)
        answer = CallbackFuture()
        answer.set({"task_id": "t1", "priority": "normal"})
        return answer


def submit_once(tokens: RevokedAfterFirstCheck, queue: Queue) -> int:
    """One POST /api/tasks with a small body; its status."""

    async def scenario() -> int:
        services = Services(
            task_queue=queue,  # type: ignore[arg-type]
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
        reply = await tornado.httpclient.AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{port}/api/tasks",
            method="POST",
            body=json.dumps({"description": "d"}),
            headers={"Authorization": "Bearer agent-token"},
            raise_error=False,
        )
        server.stop()
        return reply.code

    return asyncio.run(scenario())


@pytest.mark.parametrize(
    ("recheck_after_s", "status", "checks", "queued"),
    [
        # Every body counts as slow: checked again after it, and the revocation is seen.
        (0.0, 401, 2, 0),
        # Every body counts as prompt: prepare's check, made before it, is reused.
        (60.0, 201, 1, 1),
    ],
    ids=["slow-body-rechecked", "prompt-body-reuses-the-check"],
)
def test_the_token_is_checked_again_after_a_slow_body_only(
    monkeypatch: pytest.MonkeyPatch, recheck_after_s: float, status: int, checks: int, queued: int
) -> None:
    monkeypatch.setattr(base, "TOKEN_RECHECK_AFTER_S", recheck_after_s)
    tokens, queue = RevokedAfterFirstCheck(), Queue()
    assert submit_once(tokens, queue) == status
    assert tokens.checks == checks
    assert len(queue.submitted) == queued
