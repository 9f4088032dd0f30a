"""``GET /api/tasks/{id}?wait=`` registers its waiter before it reads the task, so an
end that lands between the read and the wait is not missed (no real actors here:
a fake TaskQueue ends the task exactly in that gap)."""

from __future__ import annotations

import asyncio
import time

import tornado.httpclient
import tornado.httpserver
import tornado.netutil
import tornado.web

from agentcom.actors.base import CallbackFuture
from agentcom.actors.event_feed import wire_event
from agentcom.http.base import Services
from agentcom.http.events import EventHub
from agentcom.http.tasks import TaskHandler
from agentcom.messages import HubEvent
from agentcom.store import TokenInfo


class Tokens:
    async def verify(self, token: str) -> TokenInfo | None:
        return TokenInfo("alice", "admin", token[:8])


class EndsInTheGap:
    """``get`` answers "assigned", but the task completes while that answer travels."""

    def __init__(self, events: EventHub) -> None:
        self.events = events
        self.reads = 0

    def get(self, task_id: str, scope: str | None = None) -> CallbackFuture:
        self.reads += 1
        answer = CallbackFuture()
        if self.reads == 1:
            ended = HubEvent("task_completed", 1, {"task_id": task_id}, task_id=task_id)
            self.events.publish([wire_event(self.events.last_id + 1, ended)])
            answer.set({"id": task_id, "status": "assigned"})
        else:
            answer.set({"id": task_id, "status": "completed"})
        return answer


def test_an_end_between_the_read_and_the_wait_is_not_missed() -> None:
    async def scenario() -> tuple[int, bytes, float]:
        events = EventHub()
        services = Services(
            task_queue=EndsInTheGap(events),  # type: ignore[arg-type]
            presence=None,  # type: ignore[arg-type]
            tokens=None,  # type: ignore[arg-type]
            token_check=Tokens(),  # type: ignore[arg-type]
            post_office=None,  # type: ignore[arg-type]
            events=events,
        )
        app = tornado.web.Application(
            [(r"/api/tasks/([^/]+)", TaskHandler, {"services": services})]
        )
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        started = time.monotonic()
        reply = await tornado.httpclient.AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{port}/api/tasks/t1?wait=5",
            headers={"Authorization": "Bearer x"},
        )
        took = time.monotonic() - started
        server.stop()
        return reply.code, reply.body, took

    code, body, took = asyncio.run(scenario())
    assert code == 200 and b'"completed"' in body
    assert took < 2, "woken by the end that landed before the read answered"
