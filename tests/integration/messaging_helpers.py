"""Talking over a real hub: tokens, messages, mailboxes and channels over HTTP.

Each helper asserts the status it expects and returns the reply's body, so a
test reads as the conversation it checks.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from tests.integration.conftest import LiveHub
from tests.integration.helpers import Reply, WsAgent

HEX16 = r"[0-9a-f]{16}"


def token(hub: LiveHub, agent_id: str, role: str = "agent") -> str:
    """A fresh token; the agent is known to the hub from now on, connected or not."""
    return hub.thread.create_token(agent_id, role=role)


def path(route: str, **query: Any) -> str:
    given = {name: value for name, value in query.items() if value is not None}
    return route + ("?" + urlencode(given) if given else "")


def send(hub: LiveHub, as_token: str, payload: Any = None, **fields: Any) -> str:
    """POST /api/message; the new message's id."""
    reply = hub.api("POST", "/api/message", {"payload": payload or {}, **fields}, token=as_token)
    assert reply.status == 200, reply
    assert reply.body["status"] == "sent", reply
    message_id: str = reply.body["id"]
    return message_id


def mailbox(hub: LiveHub, agent_id: str, as_token: str, **query: Any) -> dict[str, Any]:
    route = f"/api/mailbox/{quote(agent_id, safe='')}"
    reply = hub.api("GET", path(route, **query), token=as_token)
    assert reply.status == 200, reply
    body: dict[str, Any] = reply.body
    return body


def ack(hub: LiveHub, agent_id: str, as_token: str, seq: int) -> Reply:
    route = f"/api/mailbox/{quote(agent_id, safe='')}/ack"
    return hub.api("POST", route, {"seq": seq}, token=as_token)


def create_channel(hub: LiveHub, as_token: str, name: str, description: str | None = None) -> str:
    body = {"name": name} if description is None else {"name": name, "description": description}
    reply = hub.api("POST", "/api/channels", body, token=as_token)
    assert reply.status == 201, reply
    created: str = reply.body["channel"]
    return created


def channel_post(hub: LiveHub, as_token: str, channel: str, action: str, body: Any = None) -> Reply:
    """POST /api/channels/{channel}/{action} (subscribe, unsubscribe, publish)."""
    route = f"/api/channels/{quote(channel, safe='')}/{action}"
    return hub.api("POST", route, body, token=as_token)


def publish(
    hub: LiveHub, as_token: str, channel: str, payload: Any, **fields: Any
) -> dict[str, Any]:
    reply = channel_post(hub, as_token, channel, "publish", {"payload": payload, **fields})
    assert reply.status == 200, reply
    body: dict[str, Any] = reply.body
    return body


def frames_in_order(agent: WsAgent, kind: str, count: int) -> list[dict[str, Any]]:
    """The next ``count`` frames of ``kind``, in arrival order (others are skipped)."""
    got = []
    while len(got) < count:
        frame = agent.recv()
        if frame["type"] == kind:
            got.append(frame)
    return got


def ws_send(agent: WsAgent, payload: Any = None, **fields: Any) -> str:
    """A ``message`` frame; the id from ``message_sent``."""
    agent.send({"type": "message", "payload": payload or {}, **fields})
    message_id: str = agent.recv("message_sent")["id"]
    return message_id


REPLIES = (
    "message_sent",
    "mailbox_acked",
    "channel_subscribed",
    "channel_unsubscribed",
    "channel_published",
    "channel_history",
    "channels",
)


def ws_error(agent: WsAgent, frame: dict[str, Any]) -> dict[str, Any]:
    """Send ``frame``; the error frame it gets, and no reply besides. The socket stays open."""
    agent.send(frame)
    error = agent.recv("error")
    agent.round_trip()
    replied = [reply for kind in REPLIES for reply in agent.pending(kind)]
    assert not replied, f"{frame} was refused and answered: {replied}"
    return error
