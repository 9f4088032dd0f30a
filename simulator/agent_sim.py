"""A scripted agent that speaks the hub's WebSocket protocol.

`AgentSim` owns one WebSocket connection to a hub and answers every
`task_assign` the way its `Behaviour` says. It also talks: it sends direct
messages and broadcasts, acknowledges its mailbox, subscribes and publishes to
channels (`request` and the helpers around it, each returning the hub's reply
frame), and with `auto_ack` acknowledges every pushed message as it arrives. It runs its own asyncio loop on a
daemon thread so that synchronous callers (pytest, the command line's main
thread) can drive several agents at once, and so that one agent's delayed
completion never holds up another agent; or, given a running loop, it lives
on that loop beside many others (the benchmark's thousand agents).

It records what it saw for assertions: the tasks it was handed, the
`task_ack`s that confirmed a completion, every `message` and
`channel_message` pushed to it (with the wall-clock time it arrived), and every
error frame. Given one hub URL it never reconnects: an agent that was
stopped or killed stays gone, which is what a test of the hub's recovery
needs; a new `AgentSim` with the same agent id is its reconnection. Given
several (hubs sharing one queue), it fails over like the worker
(`agentcom.worker.connection.HubRotation`): a hub it cannot reach, or that
closes the connection, is followed by the next, with the backoff once per
pass, until it is stopped or killed or a hub refuses its token. A new
connection is a new session: what the agent was doing for a task ends with the
old one, and `wait_identified` waits for the new identify.

Requests are answered in order: the hub handles a socket's messaging frames
one at a time, so the next reply frame (or error frame) answers the oldest
request still waiting.

Threads: the public methods run in the caller's thread; everything that
touches the connection runs on the agent's loop thread. Recorded state is
shared under a lock and read back as copies.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import structlog
from structlog.typing import FilteringBoundLogger
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from agentcom.worker.connection import FATAL_IDENTIFY_ERRORS, HubRotation, hub_is_leaving
from simulator.behaviour import Action, Behaviour

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 10.0
# Tornado waits up to 5 s for the hub to answer a close frame before it
# drops the connection itself; leave room for that.
STOP_TIMEOUT_S = 10.0
KILL_TIMEOUT_S = 5.0
FAILURE_ERROR = "simulated failure"
REJECT_REASON = "busy"
REQUEST_TIMEOUT_S = 5.0

# Each messaging request frame and the frame that answers it.
REPLY_TO_REQUEST = {
    "message": "message_sent",
    "mailbox_ack": "mailbox_acked",
    "channel_subscribe": "channel_subscribed",
    "channel_unsubscribe": "channel_unsubscribed",
    "channel_publish": "channel_published",
    "channel_history": "channel_history",
    "list_channels": "channels",
}
REPLIES = frozenset(REPLY_TO_REQUEST.values())
PUSHES = frozenset({"message", "channel_message"})


class AgentSimError(Exception):
    """The simulated agent could not do what it was asked (identify, be killed, stop)."""


class ReceivedTask(NamedTuple):
    task_id: str
    generation: int
    # Wall-clock ms since the Unix epoch, comparable with the hub's timestamps.
    received_at: float


class ReceivedMessage(NamedTuple):
    """A ``message`` or ``channel_message`` frame pushed by the hub, as it arrived."""

    frame: dict[str, Any]
    # Wall-clock ms since the Unix epoch, taken as the frame was read off the socket.
    received_at: float


def message_frame(
    to: str | None,
    payload: Any,
    message_type: str = "chat",
    reply_to: str | None = None,
) -> dict[str, Any]:
    """A ``message`` frame; ``to=None`` is a broadcast."""
    return {
        "type": "message",
        "to": to,
        "message_type": message_type,
        "payload": payload,
        "reply_to": reply_to,
    }


class AgentSim:
    """One simulated agent; see the module docstring."""

    def __init__(
        self,
        hub_ws_url: str | Sequence[str],
        agent_id: str,
        token: str,
        behaviour: Behaviour | str = "complete",
        capabilities: Iterable[str] = (),
        name: str | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        presence: bool = True,
        auto_ack: bool = False,
    ) -> None:
        self.agent_id = agent_id
        self.name = name or agent_id
        self.behaviour = Behaviour.parse(behaviour) if isinstance(behaviour, str) else behaviour
        self.capabilities = tuple(capabilities)
        # False: `"presence": false` in identify, no agent_joined/left frames
        # (for load generators; the `scale` benchmark keeps it on).
        self.presence = presence
        # True: acknowledge every pushed message with a seq, coalescing acks
        # that pile up while one is on its way.
        self.auto_ack = auto_ack
        self._token = token
        self.log: FilteringBoundLogger = log.bind(agent_id=agent_id)
        urls = (hub_ws_url,) if isinstance(hub_ws_url, str) else tuple(hub_ws_url)
        self._hubs = HubRotation(urls, event_log=self.log)  # used on the loop thread
        self._refused = False  # a hub refused the token: no other hub will take it

        # Written on the loop thread, read from any thread.
        self._lock = threading.Lock()
        self._received: list[ReceivedTask] = []
        self._errors: list[dict[str, Any]] = []
        self._completed_count = 0
        self._messages: list[ReceivedMessage] = []
        self._acked_up_to = 0
        self._identified = threading.Event()
        # Set once the identify question has an answer: identified, refused,
        # or the connection is gone. `_failure` says why when not identified.
        self._handshake_over = threading.Event()
        self._failure = "connection ended"

        # Owned by the loop thread once it runs.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_ready = threading.Event()
        self._main_task: asyncio.Task[None] | None = None
        self._connection: WebSocketClientConnection | None = None
        self._delayed_work: set[asyncio.Task[None]] = set()
        # Requests sent and not yet answered, oldest first: (request type, reply).
        self._pending: deque[tuple[str, asyncio.Future[dict[str, Any]]]] = deque()
        self._highest_pushed_seq = 0
        self._ack_running = False
        # Once set by stop() or kill_connection(), nothing more goes on the wire.
        self._silenced = False
        # Given a running loop (on another thread), the agent lives on it, so
        # a benchmark can run a thousand agents without a thousand threads.
        self._shared_loop = loop
        self._thread = threading.Thread(target=self._run, name=f"agent-sim-{agent_id}", daemon=True)
        # Waited on instead of joining the thread: a Ctrl-C that interrupts
        # Thread.join() leaves the thread looking dead (CPython before 3.13).
        self._ended = threading.Event()

    # -- called from the caller's thread ---------------------------------

    def start(self) -> None:
        """Connect and identify in the background; see `wait_identified`."""
        if self._shared_loop is not None:
            asyncio.run_coroutine_threadsafe(self._serve_until_ended(), self._shared_loop)
        else:
            self._thread.start()
        self._loop_ready.wait()

    def wait_identified(self, timeout: float = 5.0) -> None:
        """Return once the hub answered `identified`; raise `AgentSimError` otherwise."""
        if not self._handshake_over.wait(timeout):
            raise AgentSimError(f"{self.agent_id}: not identified after {timeout}s")
        if not self._identified.is_set():
            raise AgentSimError(f"{self.agent_id}: not identified: {self._failure}")

    @property
    def hub_ws_url(self) -> str:
        """The hub URL connected to, or tried next."""
        return self._hubs.current

    @property
    def identified(self) -> bool:
        return self._identified.is_set()

    @property
    def received_tasks(self) -> list[ReceivedTask]:
        with self._lock:
            return list(self._received)

    @property
    def completed_count(self) -> int:
        """How many `task_ack` frames with status `complete` the hub sent this agent."""
        with self._lock:
            return self._completed_count

    @property
    def messages(self) -> list[ReceivedMessage]:
        """Every ``message`` frame pushed to this agent (live or replayed), in order."""
        with self._lock:
            return [m for m in self._messages if m.frame["type"] == "message"]

    @property
    def channel_messages(self) -> list[ReceivedMessage]:
        """Every ``channel_message`` frame pushed to this agent, in order."""
        with self._lock:
            return [m for m in self._messages if m.frame["type"] == "channel_message"]

    @property
    def acked_up_to(self) -> int:
        """The highest seq the hub confirmed acknowledged (``mailbox_acked``) on this connection."""
        with self._lock:
            return self._acked_up_to

    @property
    def errors(self) -> list[dict[str, Any]]:
        """Error frames from the hub, and frames the agent could not read."""
        with self._lock:
            return list(self._errors)

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the connection has ended and the loop is gone; True if so."""
        return self._ended.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Close the connection with a close frame and end the thread.

        Safe to call more than once, before `start`, and after `kill_connection`.
        """
        if self._loop is None or self._ended.is_set():
            return
        self.stop_soon()
        if not self.wait_closed(timeout):
            raise AgentSimError(f"{self.agent_id}: still running {timeout}s after stop()")

    def stop_soon(self) -> None:
        """Begin `stop` and return at once, so many agents can close together;
        `wait_closed` says when this one is done."""
        if self._loop is None or self._ended.is_set():
            return
        # RuntimeError: the loop already closed, the connection ended on its own.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._close_cleanly)

    def kill_connection(self, timeout: float = KILL_TIMEOUT_S) -> None:
        """Drop the TCP connection abruptly, with no close frame.

        The hub sees a reset connection, not a goodbye. Returns once the socket
        is closed; from then on the agent sends nothing and does not reconnect.
        """
        if self._loop is None or self._ended.is_set():
            raise AgentSimError(f"{self.agent_id}: no connection to kill")
        drop = self._drop_connection()
        try:
            future = asyncio.run_coroutine_threadsafe(drop, self._loop)
        except RuntimeError:
            drop.close()  # never scheduled: the loop is already closed
            raise AgentSimError(f"{self.agent_id}: connection already ended") from None
        future.result(timeout)

    def request(self, frame: dict[str, Any], timeout: float = REQUEST_TIMEOUT_S) -> dict[str, Any]:
        """Send a messaging frame and return the hub's reply frame.

        Raises `AgentSimError` on an error frame, a timeout, or a connection
        that is gone. Not for the agent's own loop thread: there, await `ask`.
        """
        loop = self._loop
        if loop is None or self._ended.is_set():
            raise AgentSimError(f"{self.agent_id}: not connected")
        asked = self.ask(frame)
        try:
            future = asyncio.run_coroutine_threadsafe(asked, loop)
        except RuntimeError:
            asked.close()  # never scheduled: the loop is already closed
            raise AgentSimError(f"{self.agent_id}: connection already ended") from None
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise AgentSimError(
                f"{self.agent_id}: no reply to {frame['type']} after {timeout}s"
            ) from None

    def send_message(
        self,
        to: str | None,
        payload: Any,
        message_type: str = "chat",
        reply_to: str | None = None,
    ) -> str:
        """A direct message (``to=None``: a broadcast); the id from ``message_sent``."""
        reply = self.request(message_frame(to, payload, message_type, reply_to))
        message_id: str = reply["id"]
        return message_id

    def ack_mailbox(self, seq: int) -> int:
        """``mailbox_ack`` up to ``seq``; the ``up_to`` the hub confirmed."""
        up_to: int = self.request({"type": "mailbox_ack", "seq": seq})["up_to"]
        return up_to

    def subscribe(self, channel: str) -> dict[str, Any]:
        return self.request({"type": "channel_subscribe", "channel": channel})

    def unsubscribe(self, channel: str) -> dict[str, Any]:
        return self.request({"type": "channel_unsubscribe", "channel": channel})

    def publish(
        self,
        channel: str,
        payload: Any,
        message_type: str = "chat",
        reply_to: str | None = None,
    ) -> dict[str, Any]:
        """``channel_publish``; the ``channel_published`` reply (channel, seq, id)."""
        frame = {
            "type": "channel_publish",
            "channel": channel,
            "payload": payload,
            "message_type": message_type,
            "reply_to": reply_to,
        }
        return self.request(frame)

    # -- the loop thread ---------------------------------------------------

    async def ask(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a messaging frame and await its reply (on the agent's loop)."""
        if frame["type"] not in REPLY_TO_REQUEST:
            raise ValueError(f"not a request with a reply: {frame['type']!r}")
        if self._silenced or self._connection is None:
            raise AgentSimError(f"{self.agent_id}: not connected")
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        # Queued before the write: the reply can be read before write_message returns.
        self._pending.append((frame["type"], answer))
        try:
            await self._connection.write_message(json.dumps(frame))
        except WebSocketClosedError:
            answer.cancel()
            raise AgentSimError(f"{self.agent_id}: connection closed") from None
        return await answer

    def _run(self) -> None:
        asyncio.run(self._serve_until_ended())

    async def _serve_until_ended(self) -> None:
        try:
            await self._serve()
        finally:
            self._ended.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._main_task = asyncio.current_task()
        self._loop_ready.set()
        try:
            while True:
                try:
                    why = await self._connect_and_listen()
                except Exception as error:  # connection refused, handshake rejected, ...
                    self._failure = f"{type(error).__name__}: {error}"
                    self.log.error("connection_failed", hub=self.hub_ws_url, error=self._failure)
                    why = "unreachable"
                if self._silenced or self._refused or len(self._hubs.urls) == 1:
                    break
                self._forget_connection()
                await self._hubs.next_hub(why, leaving=why == "leaving")
        except asyncio.CancelledError:
            self._failure = "stopped before the connection was made"
        finally:
            self._silence()
            self._handshake_over.set()

    def _forget_connection(self) -> None:
        """Before failing over: what the agent did on the old connection ends with it."""
        self._connection = None
        self._identified.clear()
        self._handshake_over.clear()
        for work in self._delayed_work:
            work.cancel()

    async def _connect_and_listen(self) -> str:
        """Serve one connection; how it ended: "lost", or "leaving" (the hub went away)."""
        self.log.info("connecting", hub=self.hub_ws_url, behaviour=str(self.behaviour))
        connection = await websocket_connect(self.hub_ws_url, connect_timeout=CONNECT_TIMEOUT_S)
        self._connection = connection
        identify: dict[str, Any] = {
            "type": "identify",
            "agent_id": self.agent_id,
            "token": self._token,
            "name": self.name,
            "status": "idle",
            "capabilities": list(self.capabilities),
        }
        if not self.presence:
            identify["presence"] = False
        await self._send(identify, "identify_sent", self.log)
        try:
            while (message := await connection.read_message()) is not None:
                received_at = time.time() * 1000
                try:
                    await self._on_frame(json.loads(message), received_at)
                except (ValueError, KeyError, TypeError) as error:
                    self._note_unreadable(message, error)
        finally:
            self._fail_pending()
        if not self._silenced:
            self.log.warning(
                "connection_lost", close_code=connection.close_code, reason=connection.close_reason
            )
            if not self._handshake_over.is_set():
                self._failure = f"hub closed the connection (code {connection.close_code})"
        self.log.info("connection_closed")
        return (
            "leaving" if hub_is_leaving(connection.close_code, connection.close_reason) else "lost"
        )

    async def _on_frame(self, frame: dict[str, Any], received_at: float) -> None:
        kind = frame["type"]
        if kind in PUSHES:
            self._on_push(frame, received_at)
            return
        if kind in REPLIES:
            self._on_reply(frame)
            return
        match kind:
            case "identified":
                self._hubs.connected()
                self._identified.set()
                self._handshake_over.set()
                self.log.info("identified", capabilities=list(self.capabilities))
            case "error":
                self._on_error(frame)
            case "task_assign":
                await self._on_task_assign(frame["task_id"], frame["generation"])
            case "task_ack":
                self._on_task_ack(frame["task_id"], frame["status"])
            case other:  # presence broadcasts, pongs: nothing to do
                self.log.debug("frame_ignored", frame_type=other)

    def _on_error(self, frame: dict[str, Any]) -> None:
        with self._lock:
            self._errors.append(frame)
        self.log.warning("hub_error", error=frame.get("error"))
        if not self._identified.is_set():
            self._failure = f"hub refused identify: {frame.get('error')}"
            if len(self._hubs.urls) > 1 and frame.get("error") not in FATAL_IDENTIFY_ERRORS:
                if self._connection is not None:  # another hub may take us
                    self._connection.close(1000, "identify refused")
                return
            self._refused = True
            self._handshake_over.set()
        elif self._pending:
            request, answer = self._pending.popleft()
            if not answer.done():
                answer.set_exception(
                    AgentSimError(f"{self.agent_id}: {request} refused: {frame.get('error')}")
                )

    def _on_push(self, frame: dict[str, Any], received_at: float) -> None:
        with self._lock:
            self._messages.append(ReceivedMessage(frame, received_at))
        seq = frame.get("seq") if frame["type"] == "message" else None
        self.log.debug("message_received", message_id=frame.get("id"), seq=seq)
        if isinstance(seq, int) and seq > self._highest_pushed_seq:
            self._highest_pushed_seq = seq
            if self.auto_ack and not self._ack_running:
                self._ack_running = True
                acking = asyncio.create_task(self._ack_pushed())
                self._delayed_work.add(acking)
                acking.add_done_callback(self._delayed_work.discard)

    async def _ack_pushed(self) -> None:
        """Acknowledge the highest pushed seq until no higher one arrived meanwhile."""
        try:
            acked = 0
            while self._highest_pushed_seq > acked:
                acked = self._highest_pushed_seq
                await self.ask({"type": "mailbox_ack", "seq": acked})
        except AgentSimError as error:
            self.log.info("auto_ack_stopped", problem=str(error))
        finally:
            self._ack_running = False

    def _on_reply(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "mailbox_acked":
            with self._lock:
                self._acked_up_to = max(self._acked_up_to, frame["up_to"])
        if not self._pending:
            self._note_unreadable(json.dumps(frame), ValueError("a reply to no request"))
            return
        request, answer = self._pending.popleft()
        if answer.done():  # the caller gave up waiting
            return
        if REPLY_TO_REQUEST[request] != frame["type"]:
            answer.set_exception(
                AgentSimError(f"{self.agent_id}: {request} answered by {frame['type']}")
            )
        else:
            answer.set_result(frame)

    def _fail_pending(self) -> None:
        while self._pending:
            request, answer = self._pending.popleft()
            if not answer.done():
                answer.set_exception(AgentSimError(f"{self.agent_id}: {request}: connection ended"))

    def _note_unreadable(self, message: str | bytes, error: Exception) -> None:
        with self._lock:
            self._errors.append(
                {"type": "unreadable_frame", "frame": message, "problem": repr(error)}
            )
        self.log.warning("frame_unreadable", frame=message, problem=repr(error))

    async def _on_task_assign(self, task_id: str, generation: int) -> None:
        task_log = self.log.bind(task_id=task_id, generation=generation)
        with self._lock:
            self._received.append(ReceivedTask(task_id, generation, time.time() * 1000))
        task_log.info("task_received", behaviour=str(self.behaviour))

        action = self.behaviour.action
        if action is Action.IGNORE:
            task_log.info("task_ignored")
            return
        if action is Action.REJECT:
            rejected = {"type": "task_rejected", "task_id": task_id, "reason": REJECT_REASON}
            await self._send(rejected, "task_rejected", task_log)
            return

        await self._send({"type": "task_accepted", "task_id": task_id}, "task_accepted", task_log)
        if action is Action.COMPLETE:
            await self._send_complete(task_id, generation, task_log)
        elif action is Action.FAIL:
            failed = {
                "type": "task_failed",
                "task_id": task_id,
                "generation": generation,
                "error": FAILURE_ERROR,
            }
            await self._send(failed, "task_failed", task_log)
        else:
            # A task of its own, so the agent keeps reading frames while it
            # "works"; kept in a set so stop and kill can cancel it.
            work = asyncio.create_task(self._complete_after_delay(task_id, generation, task_log))
            self._delayed_work.add(work)
            work.add_done_callback(self._delayed_work.discard)

    async def _complete_after_delay(
        self, task_id: str, generation: int, task_log: FilteringBoundLogger
    ) -> None:
        task_log.info("task_working", delay_ms=self.behaviour.delay_ms)
        await asyncio.sleep(self.behaviour.delay_ms / 1000)
        await self._send_complete(task_id, generation, task_log)

    async def _send_complete(
        self, task_id: str, generation: int, task_log: FilteringBoundLogger
    ) -> None:
        complete = {
            "type": "task_complete",
            "task_id": task_id,
            "generation": generation,
            "result": {"ok": True},
            "tokens_used": 0,
        }
        await self._send(complete, "task_completed", task_log)

    def _on_task_ack(self, task_id: str, status: str) -> None:
        if status == "complete":
            with self._lock:
                self._completed_count += 1
        self.log.info("task_ack", task_id=task_id, status=status)

    async def _send(
        self, frame: dict[str, Any], event: str, event_log: FilteringBoundLogger
    ) -> None:
        """Send one frame unless the agent was stopped or killed; log `event` once sent."""
        if self._silenced or self._connection is None:
            event_log.debug("send_skipped", frame_type=frame["type"])
            return
        try:
            await self._connection.write_message(json.dumps(frame))
        except WebSocketClosedError:
            event_log.warning("send_failed_connection_closed", frame_type=frame["type"])
            return
        event_log.info(event)

    def _silence(self) -> None:
        self._silenced = True
        for work in self._delayed_work:
            work.cancel()

    def _close_cleanly(self) -> None:
        self._silence()
        if self._connection is not None:
            self._connection.close(1000, "agent stopped")
        elif self._main_task is not None:
            self._main_task.cancel()  # still connecting
        self.log.info("stopping")

    async def _drop_connection(self) -> None:
        connection = self._connection
        if connection is None or connection.protocol is None or connection.protocol.stream is None:
            raise AgentSimError(f"{self.agent_id}: not connected")
        self._silence()
        stream = connection.protocol.stream
        # A zero linger time makes close() discard unsent data and send a TCP
        # reset instead of the orderly FIN: the hub's next read fails at once.
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        stream.close()
        self.log.info("connection_killed")
