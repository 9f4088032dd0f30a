"""Routes: which handler serves which path (PROTOCOL.md, "HTTP" and "WebSocket")."""

from __future__ import annotations

import tornado.web

from agentcom.http.admin import TokenHandler, TokensHandler
from agentcom.http.agents import AgentsHandler, AgentStateHandler, AgentStatesHandler, HealthHandler
from agentcom.http.base import NotFoundHandler, Services
from agentcom.http.tasks import (
    DeadLetterHandler,
    TaskHandler,
    TaskRetryHandler,
    TasksHandler,
    TaskStatsHandler,
)
from agentcom.http.websocket import AgentSocket, SocketRegistry


def make_app(services: Services, sockets: SocketRegistry) -> tornado.web.Application:
    handler_args: dict[str, object] = {"services": services}
    routes: list[tuple[str, type[tornado.web.RequestHandler], dict[str, object]]] = [
        (r"/health", HealthHandler, handler_args),
        (r"/ws", AgentSocket, {**handler_args, "registry": sockets}),
        (r"/api/agents", AgentsHandler, handler_args),
        (r"/api/agents/states", AgentStatesHandler, handler_args),
        (r"/api/agents/([^/]+)/state", AgentStateHandler, handler_args),
        (r"/api/tasks", TasksHandler, handler_args),
        (r"/api/tasks/stats", TaskStatsHandler, handler_args),
        (r"/api/tasks/dead-letter", DeadLetterHandler, handler_args),
        (r"/api/tasks/([^/]+)", TaskHandler, handler_args),
        (r"/api/tasks/([^/]+)/retry", TaskRetryHandler, handler_args),
        (r"/admin/tokens", TokensHandler, handler_args),
        (r"/admin/tokens/([^/]+)", TokenHandler, handler_args),
    ]
    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args=handler_args,
    )
