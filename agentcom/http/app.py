"""Routes: which handler serves which path (PROTOCOL.md, "HTTP", "WebSocket" and Part 2)."""

from __future__ import annotations

import tornado.web

from agentcom.http.admin import TokenHandler, TokensHandler
from agentcom.http.agents import AgentsHandler, AgentStateHandler, AgentStatesHandler, HealthHandler
from agentcom.http.analytics import (
    AnalyticsAgentsHandler,
    AnalyticsHourlyHandler,
    AnalyticsSummaryHandler,
    MetricsHandler,
)
from agentcom.http.base import NotFoundHandler, Services
from agentcom.http.dashboard import DashboardFiles
from agentcom.http.events import EventsHandler, access_log_line
from agentcom.http.messaging import (
    ChannelHandler,
    ChannelHistoryHandler,
    ChannelPublishHandler,
    ChannelsHandler,
    ChannelSubscribeHandler,
    ChannelUnsubscribeHandler,
    MailboxAckHandler,
    MailboxHandler,
    MessageHandler,
    MessagesHandler,
    RetentionHandler,
    SubscriptionsHandler,
    ThreadHandler,
    ThreadRepliesHandler,
    ThreadRootHandler,
)
from agentcom.http.tasks import (
    DeadLetterHandler,
    TaskBatchHandler,
    TaskCancelHandler,
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
        (r"/dashboard/?()", DashboardFiles, {}),
        (r"/dashboard/([^/]+)", DashboardFiles, {}),
        (r"/ws", AgentSocket, {**handler_args, "registry": sockets}),
        (r"/api/agents", AgentsHandler, handler_args),
        (r"/api/agents/states", AgentStatesHandler, handler_args),
        (r"/api/agents/([^/]+)/state", AgentStateHandler, handler_args),
        (r"/api/events", EventsHandler, handler_args),
        (r"/api/tasks", TasksHandler, handler_args),
        (r"/api/tasks/stats", TaskStatsHandler, handler_args),
        (r"/api/tasks/batch", TaskBatchHandler, handler_args),
        (r"/api/tasks/dead-letter", DeadLetterHandler, handler_args),
        (r"/api/tasks/([^/]+)", TaskHandler, handler_args),
        (r"/api/tasks/([^/]+)/retry", TaskRetryHandler, handler_args),
        (r"/api/tasks/([^/]+)/cancel", TaskCancelHandler, handler_args),
        (r"/api/agents/([^/]+)/subscriptions", SubscriptionsHandler, handler_args),
        (r"/api/message", MessageHandler, handler_args),
        (r"/api/messages", MessagesHandler, handler_args),
        (r"/api/mailbox/([^/]+)", MailboxHandler, handler_args),
        (r"/api/mailbox/([^/]+)/ack", MailboxAckHandler, handler_args),
        (r"/api/config/mailbox-retention", RetentionHandler, handler_args),
        (r"/api/channels", ChannelsHandler, handler_args),
        (r"/api/channels/([^/]+)", ChannelHandler, handler_args),
        (r"/api/channels/([^/]+)/subscribe", ChannelSubscribeHandler, handler_args),
        (r"/api/channels/([^/]+)/unsubscribe", ChannelUnsubscribeHandler, handler_args),
        (r"/api/channels/([^/]+)/publish", ChannelPublishHandler, handler_args),
        (r"/api/channels/([^/]+)/history", ChannelHistoryHandler, handler_args),
        (r"/api/threads/([^/]+)", ThreadHandler, handler_args),
        (r"/api/threads/([^/]+)/replies", ThreadRepliesHandler, handler_args),
        (r"/api/threads/([^/]+)/root", ThreadRootHandler, handler_args),
        (r"/admin/tokens", TokensHandler, handler_args),
        (r"/admin/tokens/([^/]+)", TokenHandler, handler_args),
        (r"/api/analytics/summary", AnalyticsSummaryHandler, handler_args),
        (r"/api/analytics/agents", AnalyticsAgentsHandler, handler_args),
        (r"/api/analytics/agents/([^/]+)/hourly", AnalyticsHourlyHandler, handler_args),
        (r"/metrics", MetricsHandler, {**handler_args, "registry": sockets}),
    ]
    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args=handler_args,
        log_function=access_log_line,  # redacts ?token= (the event stream's EventSource)
    )
