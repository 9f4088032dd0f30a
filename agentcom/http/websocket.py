"""``/ws``: the agent's socket. Checks each frame, then hands it to the agent's FSM.

A frame that is not valid JSON (``json_input``: strict, bounded), lacks a
field, has a wrong type, names an unknown type or exceeds 1 MiB gets an error
frame naming the problem and changes nothing. Until ``identify`` succeeds,
nothing else is accepted. After it, lifecycle messages are told to the
AgentFSM, which answers through the ``Connection``; the handler itself answers
only ``ping``, ``status`` and ``list_agents``. Messaging frames (``message``,
``mailbox_ack``, the channel frames) go to ``messaging_frames``.

What a stranger can make the hub hold is bounded: the handshake is refused
for a browser page of another origin; until the socket identifies, Tornado
reads no frame over ``UNIDENTIFIED_FRAME_BYTES``, and the socket is closed
if it has not identified within ``--identify-timeout-ms``. ``SocketRegistry``
pings every socket, closes the silent, and closes the sockets whose token
was revoked.

On a hub that shares its store with others (``agentcom.cluster``), a hub that
has fenced itself (its lease lapsed) refuses ``identify`` with ``hub_fenced``
and closes the socket with 1001, so the agent reconnects to another hub; the
hub closes the sockets it holds for the same reason (``close_all``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import struct
import time
from asyncio import Future
from collections.abc import Awaitable, Sequence
from typing import Any
from urllib.parse import urlsplit

import pykka
import structlog
import tornado.websocket
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.iostream import StreamBufferFullError, StreamClosedError

from agentcom import compact_json, json_input
from agentcom.actors.presence import Identity
from agentcom.clock import now_ms
from agentcom.cluster import Cluster
from agentcom.config import MAX_MESSAGE_BYTES
from agentcom.http import messaging_frames
from agentcom.http.auth import TokenSnapshot
from agentcom.http.base import Services
from agentcom.http.bridge import Connection, reply
from agentcom.messages import (
    AgentAccepted,
    AgentCompleted,
    AgentFailed,
    AgentRecovering,
    AgentRejected,
    AgentReportedProgress,
)
from agentcom.store import CHANGES_STATE, TokenInfo, hash_token
from agentcom.validation import FRAMES, MESSAGING_FRAMES, Invalid, capability_names, check

log = structlog.get_logger(__name__)

_ANSWERED_FRAMES = frozenset(("list_agents", *MESSAGING_FRAMES))
"""Frames answered after an actor answers; every other identified frame only tells."""

CLOSE_CODES = {
    "replaced": 4000,
    "revoked": 4001,
    "identify_timeout": 4002,
    "shutdown": 1001,
    "hub_fenced": 1001,  # going away: this hub lost its lease; another one serves
    "internal_error": 1011,
}

PRESENCE_FLUSH_S = 0.05
"""How long presence changes gather before they go out. A socket write costs
the loop far more than the bytes in it: flushing every loop turn cost 16 s of
CPU to connect 500 agents (one write per join per socket); a 50 ms window
makes a mass connect a few dozen writes per socket."""

SLOW_CONSUMER_BYTES = 8 * MAX_MESSAGE_BYTES
"""Frames waiting in the hub for an agent that does not read them, at most; a socket
the kernel's buffers are full for and this much behind is dropped."""

UNIDENTIFIED_FRAME_BYTES = 16 * 1024
"""Largest frame read before ``identify`` succeeds: an identify frame is far smaller."""
IDENTIFIED_FRAME_BYTES = 2 * MAX_MESSAGE_BYTES
"""Largest frame read from an identified agent. Frames between 1 MiB and this get
``frame_too_large`` and the connection stays; past it Tornado closes with 1009
without reading the frame."""


class SocketRegistry:
    """Every open agent socket: pings, identify deadlines, revocations, presence, shutdown."""

    def __init__(
        self,
        ping_timeout_ms: int,
        identify_timeout_ms: int,
        allowed_origins: Sequence[str] = (),
        cluster: Cluster | None = None,
    ) -> None:
        self.sockets: set[AgentSocket] = set()
        self.cluster = cluster  # on a shared store: its ``fenced`` refuses identify
        # Identified sockets that did not opt out, each with the number of the
        # first change it may hear: none from before its own "identified".
        self.presence_listeners: dict[AgentSocket, int] = {}
        # (number, about, type, frame), oldest first
        self._presence_pending: list[tuple[int, str, str, bytes]] = []
        self._presence_numbers = itertools.count()
        self.identify_timeout_s = identify_timeout_ms / 1000
        self.allowed_origins = frozenset(allowed_origins)
        self._timeout_s = ping_timeout_ms / 1000
        self._pinger = PeriodicCallback(self._ping_all, ping_timeout_ms / 3)

    def start(self) -> None:
        self._pinger.start()

    def close_all(self, reason: str = "shutdown") -> None:
        """Close every socket with ``reason`` (``CLOSE_CODES``); a shutdown also stops
        the pings, a fenced hub (``hub_fenced``) goes on serving the sockets to come."""
        if reason == "shutdown":
            self._pinger.stop()
        for socket in list(self.sockets):
            socket.close_for(reason)

    @property
    def fenced(self) -> bool:
        return self.cluster is not None and self.cluster.fenced

    def close_revoked(self, valid_tokens: TokenSnapshot) -> None:
        """Close every identified socket whose token is no longer valid."""
        for socket in list(self.sockets):
            if socket.token_hash is not None and socket.token_hash not in valid_tokens:
                log.info("agent_token_revoked", agent_id=socket.agent_id)
                socket.close_for("revoked")

    def announce(self, frame: dict[str, Any], about: str) -> None:
        """Tell every presence listener but ``about`` (on the loop; see ``actors.presence``).

        Changes announced within ``PRESENCE_FLUSH_S`` go out together. Each
        frame is encoded once, as a whole WebSocket frame (server frames are
        unmasked, so the same bytes suit every socket), and each socket gets
        one write holding every change of the window.
        """
        if not self._presence_pending:
            IOLoop.current().call_later(PRESENCE_FLUSH_S, self._flush_presence)
        kind = frame["type"]
        if kind == "status_changed":
            # Only an agent's latest status is worth sending: an agent that
            # changes it in a loop costs each listener one frame per window.
            self._presence_pending = [
                entry for entry in self._presence_pending if entry[1:3] != (about, kind)
            ]
        encoded = _text_frame(compact_json.dumps(frame))
        self._presence_pending.append((next(self._presence_numbers), about, kind, encoded))

    def listen_to_presence(self, socket: AgentSocket) -> None:
        self.presence_listeners[socket] = next(self._presence_numbers)

    def _flush_presence(self) -> None:
        pending, self._presence_pending = self._presence_pending, []
        subjects = {about for _, about, _, _ in pending}
        first = pending[0][0]
        everything = b"".join(encoded for _, _, _, encoded in pending)
        for socket, since in list(self.presence_listeners.items()):
            if socket.agent_id in subjects or since > first:
                # Not told of its own change, nor of changes before it identified.
                socket.write_encoded(
                    b"".join(
                        encoded
                        for number, about, _, encoded in pending
                        if number >= since and about != socket.agent_id
                    )
                )
            else:
                socket.write_encoded(everything)

    def _ping_all(self) -> None:
        now = time.monotonic()
        for socket in list(self.sockets):
            if now - socket.last_heard > self._timeout_s:
                log.warning("agent_silent", agent_id=socket.agent_id)
                socket.drop_silent()
            else:
                try:
                    socket.ping()
                except tornado.websocket.WebSocketClosedError:
                    continue
                except StreamBufferFullError:
                    socket.drop_slow_consumer()


class AgentSocket(tornado.websocket.WebSocketHandler):
    def initialize(self, services: Services, registry: SocketRegistry) -> None:
        self.services = services
        self.registry = registry
        self.agent_id: str | None = None
        self.connection: Connection | None = None
        self.fsm_ref: pykka.ActorRef[Any] | None = None
        self.token_hash: str | None = None
        self.wants_presence = True
        self.last_heard = time.monotonic()
        self._identify_deadline: object | None = None

    async def get(self, *args: str, **kwargs: str) -> None:
        if self.request.headers.get("Upgrade", "").lower() != "websocket":
            # Tornado's own refusal is an HTML page; every reply here is JSON.
            self.set_status(400)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"error": "websocket_upgrade_required"}))
            return
        origin = self.request.headers.get("Origin")
        if origin is not None and not self.check_origin(origin):
            # Tornado's own refusal is plain text; every reply here is JSON.
            log.warning("websocket_origin_refused", origin=origin)
            self.set_status(403)
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"error": "origin_not_allowed"}))
            return
        await super().get(*args, **kwargs)

    def check_origin(self, origin: str) -> bool:
        """Programs send no Origin and are served; a browser page only from here or allowed.

        Without this, any web page a developer opens could talk to a hub on
        their localhost (with a token it found, or to probe it).
        """
        if origin in self.registry.allowed_origins:
            return True
        # Same origin: the page's host:port is the one it asks (Tornado < 6.6 did
        # this in check_origin, later versions before it; doing it here holds for both).
        return urlsplit(origin).netloc.lower() == self.request.headers.get("Host", "").lower()

    @property
    def max_message_size(self) -> int:
        return UNIDENTIFIED_FRAME_BYTES  # raised for this socket once it identifies

    def open(self, *args: str, **kwargs: str) -> None:
        # Frames are small and often come in pairs (two acks, an ack and an
        # assignment): with Nagle on, the second waits for the peer's delayed
        # ACK, ~40 ms, which was most of a task's round trip.
        self.set_nodelay(True)
        if self.ws_connection is not None and self.ws_connection.stream is not None:
            # Past this much unsent, a write raises and the socket is dropped.
            self.ws_connection.stream.max_write_buffer_size = SLOW_CONSUMER_BYTES
        self.registry.sockets.add(self)
        self._identify_deadline = IOLoop.current().call_later(
            self.registry.identify_timeout_s, self._identify_overdue
        )

    def _identify_overdue(self) -> None:
        self._identify_deadline = None
        if self.fsm_ref is None:
            log.info("agent_identify_timeout")
            self.close_for("identify_timeout")

    def _cancel_identify_deadline(self) -> None:
        if self._identify_deadline is not None:
            IOLoop.current().remove_timeout(self._identify_deadline)
            self._identify_deadline = None

    def on_pong(self, data: bytes) -> None:
        self.last_heard = time.monotonic()

    def on_ping(self, data: bytes) -> None:
        self.last_heard = time.monotonic()

    def on_close(self) -> None:
        self._cancel_identify_deadline()
        self.registry.sockets.discard(self)
        self.registry.presence_listeners.pop(self, None)
        if self.connection is not None:
            self.connection.close("disconnected")
        log.info("agent_socket_closed", agent_id=self.agent_id, code=self.close_code)

    # --- the loop's side of bridge.Connection ------------------------------------------

    def send_frame(self, frame: dict[str, Any]) -> None:
        self.send_text(compact_json.dumps(frame))
        if frame["type"] == "identified" and self.wants_presence:
            # Presence changes follow the agent's own "identified", never precede it.
            self.registry.listen_to_presence(self)

    def send_text(self, text: str) -> None:
        """A frame encoded by an actor (``PostOffice`` encodes a broadcast once).

        Framed here and written to the stream directly: Tornado's
        ``write_message`` makes the same bytes (no compression is offered) but
        wraps every frame's write in an asyncio Task of its own.
        """
        self.write_encoded(_text_frame(text))

    def write_encoded(self, frames: bytes) -> None:
        """Write whole WebSocket frames encoded elsewhere (``_text_frame``)."""
        if not frames or self.ws_connection is None or self.ws_connection.is_closing():
            return
        stream = self.ws_connection.stream
        if stream is None:
            return
        try:
            written = stream.write(frames)
        except StreamClosedError:
            return
        except StreamBufferFullError:
            self.drop_slow_consumer()
            return
        written.add_done_callback(_ignore_closed)

    def drop_slow_consumer(self) -> None:
        """An agent that does not read what it is sent must not grow the hub's memory.

        Its unacknowledged direct messages stay in its mailbox and come again
        after its next identify; its task is handled as a disconnect.
        """
        log.warning("agent_slow_consumer_dropped", agent_id=self.agent_id)
        self.drop_silent()

    def close_for(self, reason: str) -> None:
        if self.connection is not None:
            self.connection.close(reason)  # tells the FSM first, if it was not told yet
        self.close(CLOSE_CODES.get(reason, 1000), reason)

    def drop_silent(self) -> None:
        """A peer that answers nothing will not finish a close handshake either."""
        if self.connection is not None:
            self.connection.close("disconnected")
        stream = self.ws_connection.stream if self.ws_connection is not None else None
        if stream is not None:
            stream.close()

    # --- frames from the agent ---------------------------------------------------------

    def on_message(self, message: str | bytes) -> Awaitable[None] | None:
        """Check a frame and handle it; frames that wait for an actor's answer return a
        coroutine, which Tornado awaits before it reads the next frame, so order holds.

        The frames of a task's life only tell the agent's FSM and are handled here
        and now: a coroutine per frame cost an asyncio Task, a future and a loop
        turn for each (issue 15).
        """
        self.last_heard = time.monotonic()
        size = len(message) if isinstance(message, bytes) else len(message.encode())
        if size > MAX_MESSAGE_BYTES:
            self._error("frame_too_large", f"frames are limited to {MAX_MESSAGE_BYTES} bytes")
            return None
        try:
            frame = json_input.loads(message)
        except json_input.JsonRefused as refused:
            self._error(str(refused))
            return None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            self._error("invalid_message", "expected a JSON object with a string type")
            return None
        kind = frame["type"]
        shape = FRAMES.get(kind)
        if shape is None:
            self._error("unknown_type", kind)
            return None
        try:
            check(shape, frame)
        except Invalid as invalid:
            self._error(str(invalid))
            return None
        if kind == "identify":
            return self._awaiting_answer(kind, self._identify(frame))
        if self.fsm_ref is None:
            self._error("not_identified")
            return None
        if kind in _ANSWERED_FRAMES:
            return self._awaiting_answer(kind, self._answered_message(kind, frame))
        try:
            self._told_message(kind, frame)
        except pykka.ActorDeadError:
            self._busy(kind)
        return None

    async def _awaiting_answer(self, kind: str, handling: Awaitable[None]) -> None:
        try:
            await handling
        except (TimeoutError, pykka.Timeout, pykka.ActorDeadError):
            self._busy(kind)

    def _busy(self, kind: str) -> None:
        # Tornado would drop the socket on an exception; an agent is owed a reason.
        log.warning("hub_busy", agent_id=self.agent_id, frame_type=kind)
        self._error("hub_busy", "the hub did not answer in time; try again")

    async def _identify(self, frame: dict[str, Any]) -> None:
        if self.fsm_ref is not None:
            self._error("already_identified")
            return
        if self._refused_as_fenced(frame["agent_id"]):
            return
        info: TokenInfo | None = None
        if frame.get("token"):
            info = await self.services.token_check.verify(frame["token"])
        if self.ws_connection is None:
            # Closed while the token was checked: connecting now could replace a
            # newer connection of the same agent that identified meanwhile.
            return
        if self._refused_as_fenced(frame["agent_id"]):
            return
        if info is None:
            self._error("invalid_token")
            return
        if info.agent_id != frame["agent_id"]:
            self._error("token_agent_mismatch")
            return
        if info.role not in CHANGES_STATE:
            # Taking and finishing tasks changes them; a viewer changes nothing.
            self._error("forbidden", "a viewer token cannot identify as an agent")
            return
        capabilities = frame.get("capabilities") or []
        identity = Identity(
            agent_id=frame["agent_id"],
            name=frame.get("name") or frame["agent_id"],
            status=frame.get("status") or "idle",
            capabilities=capabilities,
            capability_names=capability_names(capabilities),
        )
        self.agent_id = identity.agent_id
        self.wants_presence = frame.get("presence") is not False
        self.token_hash = hash_token(frame["token"])
        self.connection = Connection(self, asyncio.get_running_loop())
        self.fsm_ref = await reply(self.services.presence.connect(identity, self.connection))
        self._cancel_identify_deadline()
        if self.ws_connection is not None:
            # Tornado reads the limit from the protocol's params for each frame.
            self.ws_connection.params.max_message_size = IDENTIFIED_FRAME_BYTES  # type: ignore[attr-defined]
        log.info("agent_identified", agent_id=self.agent_id)

    def _refused_as_fenced(self, agent_id: str) -> bool:
        """A fenced hub takes no agent: it says so and closes, and the agent goes elsewhere."""
        if not self.registry.fenced:
            return False
        log.info("agent_refused_hub_fenced", agent_id=agent_id)
        self._error("hub_fenced")
        self.close_for("hub_fenced")
        return True

    async def _answered_message(self, kind: str, frame: dict[str, Any]) -> None:
        if kind == "list_agents":
            agents = await reply(self.services.presence.list_agents())
            self.send_frame({"type": "agents", "agents": agents})
        else:
            await messaging_frames.handle(self, kind, frame)

    def _told_message(self, kind: str, frame: dict[str, Any]) -> None:
        assert self.fsm_ref is not None
        match kind:
            case "ping":
                self.send_frame({"type": "pong", "timestamp": now_ms()})
            case "status":
                self.services.presence.set_status.defer(self.agent_id, frame["status"])
                self.send_frame({"type": "status_updated"})
            case "task_accepted":
                self._tell_fsm(AgentAccepted(frame["task_id"]))
            case "task_progress":
                blocked = frame.get("status") == "blocked"
                progress = frame.get("progress")
                self._tell_fsm(AgentReportedProgress(frame["task_id"], blocked, progress))
            case "task_complete":
                self._tell_fsm(
                    AgentCompleted(
                        frame["task_id"],
                        frame["generation"],
                        frame.get("result"),
                        frame.get("tokens_used"),
                    )
                )
            case "task_failed":
                error = _as_text(frame.get("error") or frame.get("reason"))
                self._tell_fsm(AgentFailed(frame["task_id"], frame["generation"], error))
            case "task_rejected":
                self._tell_fsm(AgentRejected(frame["task_id"], _as_text(frame.get("reason"))))
            case "task_recovering":
                self._tell_fsm(AgentRecovering(frame["task_id"]))

    def _error(self, error: str, detail: str | None = None) -> None:
        self.send_frame({"type": "error", "error": f"{error}: {detail}" if detail else error})

    def _tell_fsm(self, message: object) -> None:
        assert self.fsm_ref is not None
        try:
            self.fsm_ref.tell(message)
        except pykka.ActorDeadError:
            self._error("agent_offline", "this connection's agent state has ended; reconnect")


def _text_frame(text: str) -> bytes:
    """``text`` as one final, unmasked WebSocket text frame (RFC 6455, 5.2)."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


def _ignore_closed(written: Future[None]) -> None:
    # A socket that closed with presence frames unsent: nothing to do, and
    # nobody else would ever retrieve the error.
    if not written.cancelled():
        written.exception()


def _as_text(value: Any) -> str | None:
    """An error or reason as stored: text as given, any other JSON as its encoding."""
    return value if value is None or isinstance(value, str) else compact_json.dumps(value)
