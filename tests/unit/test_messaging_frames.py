"""The socket's messaging frames against a stand-in PostOffice: refusals become error frames."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agentcom.actors.base import CallbackFuture
from agentcom.http import messaging_frames
from agentcom.http.base import Services
from agentcom.messages import Letter, MessageRefused, Reader, StorageFull
from agentcom.store import TokenInfo


def answered(value: Any = None, error: BaseException | None = None) -> CallbackFuture:
    future = CallbackFuture()
    if error is None:
        future.set(value)
    else:
        try:
            raise error
        except BaseException:
            future.set_exception()
    return future


class PostOffice:
    """Records each call; answers ``answer`` (or raises it, if it is an exception)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any) -> CallbackFuture:
            self.calls.append((method, args))
            if isinstance(self.answer, BaseException):
                return answered(error=self.answer)
            return answered(self.answer)

        return call


class TokenCheck:
    def __init__(self, role: str) -> None:
        self.role = role

    def holder(self, token_hash: str) -> TokenInfo | None:
        return TokenInfo("alice", self.role, "abcd") if token_hash == "h" else None

    async def agent_ids(self, looking_for: str | None = None) -> frozenset[str]:
        return frozenset({"alice", "bob"})


class Socket:
    def __init__(self, post_office: PostOffice, role: str = "agent") -> None:
        self.services = Services(None, None, None, TokenCheck(role), post_office)  # type: ignore[arg-type]
        self.agent_id: str | None = "alice"
        self.token_hash: str | None = "h"
        self.sent: list[dict[str, Any]] = []

    def send_frame(self, frame: dict[str, Any]) -> None:
        self.sent.append(frame)


def handle(socket: Socket, frame: dict[str, Any]) -> list[dict[str, Any]]:
    asyncio.run(messaging_frames.handle(socket, frame["type"], frame))
    return socket.sent


@pytest.mark.parametrize(
    ("refusal", "error"),
    [
        (MessageRefused("unknown_recipient", 404), "unknown_recipient"),
        (MessageRefused("channel_not_found", 404), "channel_not_found"),
        (MessageRefused("forbidden", 403), "forbidden"),
        (StorageFull(), "storage_full"),
    ],
)
def test_a_refusal_is_an_error_frame(refusal: Exception, error: str) -> None:
    socket = Socket(PostOffice(refusal))
    frames = [
        {"type": "message", "to": "bob", "payload": {}},
        {"type": "channel_publish", "channel": "ops", "payload": {}},
        {"type": "channel_subscribe", "channel": "ops"},
    ]
    for frame in frames:
        assert handle(socket, frame)[-1] == {"type": "error", "error": error}


def test_a_bad_channel_name_or_payload_never_reaches_the_post_office() -> None:
    post_office = PostOffice({})
    socket = Socket(post_office)
    handle(socket, {"type": "channel_history", "channel": "no way"})
    handle(socket, {"type": "channel_publish", "channel": "ops", "payload": "x" * 65_536})
    assert socket.sent == [
        {"type": "error", "error": "invalid_channel_name"},
        {"type": "error", "error": "payload_too_large", "limit_bytes": 65_536},
    ]
    assert post_office.calls == []


def test_the_sender_is_the_socket_and_known_agents_come_from_the_tokens() -> None:
    post_office = PostOffice({"id": "0123456789abcdef", "timestamp": 5})
    socket = Socket(post_office)
    frame = {"type": "message", "to": "bob", "from": "mallory", "payload": None}
    assert handle(socket, frame) == [{"type": "message_sent", "id": "0123456789abcdef"}]
    assert post_office.calls == [
        ("send", (Letter("alice", "bob", "chat", {}, None), frozenset({"alice", "bob"})))
    ]


@pytest.mark.parametrize(("role", "sees_all"), [("agent", False), ("admin", True)])
def test_channel_history_reads_as_the_sockets_token(role: str, sees_all: bool) -> None:
    post_office = PostOffice({"channel": "ops", "messages": [], "count": 0})
    socket = Socket(post_office, role)
    reply = handle(socket, {"type": "channel_history", "channel": "#Ops", "limit": 7})
    assert reply == [{"type": "channel_history", "channel": "ops", "messages": [], "count": 0}]
    assert post_office.calls == [("channel_history", ("ops", 0, 7, Reader("alice", sees_all)))]


def test_subscribe_notes_an_existing_subscription() -> None:
    socket = Socket(PostOffice("already_subscribed"))
    assert handle(socket, {"type": "channel_subscribe", "channel": "OPS"}) == [
        {"type": "channel_subscribed", "channel": "ops", "note": "already_subscribed"}
    ]
