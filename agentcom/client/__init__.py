"""The Python client of the hub's HTTP API (``Client``, ``AsyncClient``); see docs/client.md.

from agentcom.client import Client

with Client("http://127.0.0.1:4000", token) as hub:
    task = hub.wait(hub.submit("Write number 7 to a file").task_id, timeout=60)
    print(task.result)
"""

from agentcom.client.client import AsyncClient, Client
from agentcom.client.errors import (
    AgentcomError,
    BadRequest,
    Conflict,
    Forbidden,
    HubError,
    HubUnavailable,
    NotFound,
    TaskCancelled,
    TaskFailed,
    TaskFinished,
    TaskNotDone,
    Unauthorized,
)
from agentcom.client.models import (
    AgentState,
    Cancelled,
    Channel,
    ChannelPost,
    Event,
    HistoryEntry,
    Mailbox,
    Message,
    Published,
    Requeued,
    Stats,
    Submitted,
    Task,
    TaskPage,
    TaskRequest,
    Thread,
)

__all__ = [
    "AgentState",
    "AgentcomError",
    "AsyncClient",
    "BadRequest",
    "Cancelled",
    "Channel",
    "ChannelPost",
    "Client",
    "Conflict",
    "Event",
    "Forbidden",
    "HistoryEntry",
    "HubError",
    "HubUnavailable",
    "Mailbox",
    "Message",
    "NotFound",
    "Published",
    "Requeued",
    "Stats",
    "Submitted",
    "Task",
    "TaskCancelled",
    "TaskFailed",
    "TaskFinished",
    "TaskNotDone",
    "TaskPage",
    "TaskRequest",
    "Thread",
    "Unauthorized",
]
