"""The socket's messaging frames: ``message``, ``mailbox_ack`` and the channel frames.

``http/websocket.py`` checks each frame's shape (``validation.MESSAGING_FRAMES``)
and, once the socket has identified, hands these frames here. This module
finishes the checks (channel names, payload size), asks PostOffice as the
socket's own agent, and answers on the socket: the reply frame, or an error
frame naming what was refused (``unknown_recipient``, ``channel_not_found``,
``payload_too_large``, ...). An error changes nothing and the socket stays
open. Pushes to other agents (``message``, ``channel_message``, joins and
leaves) are PostOffice's, through each agent's link, not this module's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from agentcom.http.base import Services
from agentcom.http.bridge import reply
from agentcom.messages import MessageRefused, Reader, StorageFull
from agentcom.store import READS_EVERY_TASK
from agentcom.validation import (
    DEFAULT_CHANNEL_PAGE,
    MAX_PAYLOAD_BYTES,
    PAYLOAD_TOO_LARGE,
    Invalid,
    channel_name,
    letter,
)


class AgentSocketEnd(Protocol):
    """What this module needs of an identified ``AgentSocket``; runs on the loop."""

    services: Services
    agent_id: str | None
    token_hash: str | None

    def send_frame(self, frame: dict[str, Any]) -> None: ...


async def handle(socket: AgentSocketEnd, kind: str, frame: Mapping[str, Any]) -> None:
    """Answer one checked frame of ``kind`` from an identified socket; raises only what
    the socket handler maps itself (timeouts, a stopped actor)."""
    assert socket.agent_id is not None and socket.token_hash is not None
    holder = socket.services.token_check.holder(socket.token_hash)
    reader = Reader(
        socket.agent_id, sees_all=holder is not None and holder.role in READS_EVERY_TASK
    )
    try:
        socket.send_frame(await _answer(socket.services, reader, kind, frame))
    except Invalid as invalid:
        extra = {"limit_bytes": MAX_PAYLOAD_BYTES} if invalid.code == PAYLOAD_TOO_LARGE else {}
        socket.send_frame({"type": "error", "error": str(invalid), **extra})
    except MessageRefused as refused:
        socket.send_frame({"type": "error", "error": refused.error})
    except StorageFull as refused:  # storage_full, or store_unavailable
        socket.send_frame({"type": "error", "error": refused.reason})


async def _answer(
    services: Services, reader: Reader, kind: str, frame: Mapping[str, Any]
) -> dict[str, Any]:
    post_office, agent_id = services.post_office, reader.agent_id
    match kind:
        case "message":
            sent_letter = letter(frame, agent_id, type_field="message_type")
            known = await services.token_check.agent_ids(sent_letter.to)
            sent = await reply(post_office.send(sent_letter, known))
            return {"type": "message_sent", "id": sent["id"]}
        case "mailbox_ack":
            acked = await reply(post_office.ack(agent_id, frame["seq"]))
            return {"type": "mailbox_acked", "up_to": acked["up_to"]}
        case "channel_subscribe":
            name = channel_name(frame["channel"])
            status = await reply(post_office.subscribe(name, agent_id))
            note = {"note": status} if status == "already_subscribed" else {}
            return {"type": "channel_subscribed", "channel": name, **note}
        case "channel_unsubscribe":
            name = channel_name(frame["channel"])
            await reply(post_office.unsubscribe(name, agent_id))
            return {"type": "channel_unsubscribed", "channel": name}
        case "channel_publish":
            name = channel_name(frame["channel"])
            published_letter = letter(frame, agent_id, type_field="message_type")
            published = await reply(post_office.publish(name, published_letter))
            return {"type": "channel_published", **published}
        case "channel_history":
            name = channel_name(frame["channel"])
            since = frame.get("since") or 0
            limit = DEFAULT_CHANNEL_PAGE if frame.get("limit") is None else frame["limit"]
            history = await reply(post_office.channel_history(name, since, limit, reader))
            return {"type": "channel_history", **history}
        case "list_channels":
            return {"type": "channels", "channels": await reply(post_office.list_channels())}
    raise AssertionError(f"not a messaging frame: {kind}")
