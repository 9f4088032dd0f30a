"""The event stream (``GET /api/events``) and what waits on events (``?wait=``).

``EventHub`` lives on the IOLoop. EventFeed (an actor) hands it each batch of
numbered events through ``OnLoop``; it keeps the last ``RING_SIZE`` of them
for clients that resume with ``Last-Event-ID``, passes each event to every
stream client whose view and filters want it, and wakes whoever waits on a
task's end (``wait_for_end``: one asyncio future per waiter, no thread).

A stream client never slows the hub: what it has not taken yet waits in its
own queue, at most ``CLIENT_QUEUE`` events (a resume's backlog counts as one);
past that it is disconnected, and it may resume with its last id. One write
is in flight per client at a time; what arrives meanwhile goes out in the
next write, so a burst costs one write per client, not one per event.

A browser's EventSource cannot set headers, so the token may come as
``?token=``; the URI is then a secret, and ``access_log`` (the Application's
``log_function``) writes every URI with ``token=`` values redacted.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import structlog
import tornado.web
from tornado.ioloop import PeriodicCallback
from tornado.log import access_log

from agentcom.actors.event_feed import EVENT_TYPES, WireEvent, sse_text
from agentcom.clock import now_ms
from agentcom.http.base import BaseHandler, HttpError
from agentcom.store import TokenInfo
from agentcom.validation import AGENT_ID_MAX_CHARS, Invalid, Query, query_text

log = structlog.get_logger(__name__)

RING_SIZE = 10_000
"""Events kept for clients that resume; a client further behind gets ``reset``."""
CLIENT_QUEUE = 1_000
"""Events a client may have waiting before it is disconnected."""
PING_INTERVAL_S = 15.0
"""A comment line this often keeps proxies from closing a quiet stream."""
SEND_BUFFER_BYTES = 128 * 1024
"""The kernel's send buffer on a stream socket: small, so a client that stops
reading shows as a growing queue soon, not after megabytes."""
END_TYPES = frozenset({"task_completed", "task_dead_letter", "task_cancelled"})
_TASK_ID_MAX_CHARS = 64


def redact_tokens(text: str) -> str:
    """``text`` (a URI or a line holding one) with every ``token=`` value replaced."""
    return re.sub(r"(?i)([?&;]token=)[^&;\s#]*", r"\1[redacted]", text)


def access_log_line(handler: tornado.web.RequestHandler) -> None:
    """Tornado's access log line, with ``token=`` values redacted (the Application's
    ``log_function``): a browser's EventSource sends its token in the URI."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if not access_log.isEnabledFor(level):
        return  # the line is not built at all: this runs for every request
    request = handler.request
    summary = f"{request.method} {redact_tokens(request.uri or '')} ({request.remote_ip})"
    access_log.log(level, "%d %s %.2fms", status, summary, 1000.0 * request.request_time())


# --- who sees what ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class View:
    """What one client is shown: its token's scope, then its filters."""

    scope: str | None  # an agent token's agent id; None: admin and viewer see everything
    task_id: str | None = None
    agent_id: str | None = None
    types: frozenset[str] | None = None

    def wants(self, event: WireEvent) -> bool:
        if self.types is not None and event.type not in self.types:
            return False
        if self.task_id is not None and event.task_id != self.task_id:
            return False
        if self.agent_id is not None and self.agent_id not in (event.agent_id, event.to):
            return False
        return self.scope is None or may_see(self.scope, event)


def may_see(agent_id: str, event: WireEvent) -> bool:
    """What an agent token sees: events of the tasks it submitted or holds (held),
    presence, the messages it sent or received and broadcasts, and every channel
    publish (which names the channel, the sender and the seq, never the payload)."""
    if event.task_id is not None:
        return agent_id in (event.submitted_by, event.agent_id)
    if event.type == "message_sent":
        return event.to is None or agent_id in (event.agent_id, event.to)
    return True  # agent_joined, agent_left, agent_state, channel_published


# --- the hub side ---------------------------------------------------------------------------


class EventClient:
    """One stream client's queue and its single write in flight."""

    def __init__(self, handler: EventsHandler, view: View, limit: int) -> None:
        self.handler = handler
        self.view = view
        self._limit = limit
        self._pending: list[str] = []
        self._writing = False
        self.closed = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def push(self, text: str) -> None:
        if self.closed:
            return
        self._pending.append(text)
        if len(self._pending) > self._limit:
            log.warning("event_client_too_slow", queued=len(self._pending))
            self.close()

    def send(self) -> None:
        """Hand what is queued to the socket, unless a write is still in flight."""
        if self.closed or self._writing or not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._writing = True
        try:
            self.handler.write(text)
            written = self.handler.flush()
        except Exception:
            self.close()
            return
        written.add_done_callback(self._written)

    def _written(self, written: asyncio.Future[None]) -> None:
        self._writing = False
        if written.cancelled() or written.exception() is not None:
            self.close()
        else:
            self.send()

    def close(self) -> None:
        """Disconnect (or note that the client went); the handler's request then ends."""
        if self.closed:
            return
        self.closed = True
        self._pending.clear()
        connection = self.handler.request.connection
        if connection is not None:
            connection.close()  # type: ignore[attr-defined]
        if not self.done.done():
            self.done.set_result(None)


class EventHub:
    """The ring of recent events, the stream clients, and the waiters on a task's end."""

    def __init__(
        self,
        last_id: int = 0,
        ring_size: int = RING_SIZE,
        client_queue: int = CLIENT_QUEUE,
        ping_interval_s: float = PING_INTERVAL_S,
    ) -> None:
        self.last_id = last_id  # the id of the newest event (first_id - 1 before any)
        self._ring: collections.deque[WireEvent] = collections.deque(maxlen=ring_size)
        self._client_queue = client_queue
        self._clients: set[EventClient] = set()
        self._waiters: dict[str, set[asyncio.Future[str]]] = {}
        self._ping = PeriodicCallback(self._send_ping, ping_interval_s * 1000)

    def start(self) -> None:
        self._ping.start()

    def close(self) -> None:
        self._ping.stop()
        for client in list(self._clients):
            client.close()
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result("closing")

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def waiting(self) -> int:
        return sum(len(waiters) for waiters in self._waiters.values())

    # --- from EventFeed -------------------------------------------------------------------

    def publish(self, events: Iterable[WireEvent]) -> None:
        clients = [client for client in self._clients if not client.closed]
        for event in events:
            self._ring.append(event)
            self.last_id = event.id
            for client in clients:
                if client.view.wants(event):
                    client.push(event.text)
            if event.type in END_TYPES and event.task_id in self._waiters:
                for waiter in self._waiters.pop(event.task_id):
                    if not waiter.done():
                        waiter.set_result(event.type)
        for client in clients:
            client.send()

    # --- stream clients -------------------------------------------------------------------

    def attach(self, handler: EventsHandler, view: View, last_event_id: int | None) -> EventClient:
        """Register a client; first it gets what it missed, or ``reset`` if that is gone."""
        client = EventClient(handler, view, self._client_queue)
        client.push(": agentcom events\n\n")  # sends the headers at once: EventSource opens
        if last_event_id is not None:
            missed = self._since(last_event_id)
            if missed is None:
                reset = {"id": self.last_id, "type": "reset", "timestamp": now_ms()}
                client.push(sse_text(self.last_id, "reset", reset))
            else:
                client.push("".join(e.text for e in missed if view.wants(e)))
        self._clients.add(client)
        client.done.add_done_callback(lambda _: self._clients.discard(client))
        client.send()
        return client

    def _since(self, last_event_id: int) -> list[WireEvent] | None:
        """Events after ``last_event_id``, or None if the ring no longer holds them all."""
        oldest = self._ring[0].id if self._ring else self.last_id + 1
        if not oldest - 1 <= last_event_id <= self.last_id:
            return None
        skip = last_event_id - (oldest - 1)
        return list(self._ring)[skip:]

    def _send_ping(self) -> None:
        for client in list(self._clients):
            client.push(": ping\n\n")
            client.send()

    # --- waiters (?wait=) -----------------------------------------------------------------

    def wait_for_end(self, task_id: str) -> asyncio.Future[str]:
        """A future set to the event type when ``task_id`` completes, is dead-lettered or
        is cancelled."""
        waiter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(task_id, set()).add(waiter)
        return waiter

    def stop_waiting(self, task_id: str, waiter: asyncio.Future[str]) -> None:
        waiters = self._waiters.get(task_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[task_id]
        if not waiter.done():
            waiter.cancel()


# --- the route ------------------------------------------------------------------------------


def events_query(query: Query) -> tuple[str | None, str | None, frozenset[str] | None, int | None]:
    """``task_id``, ``agent_id``, ``types`` (known names) and ``last_event_id``."""
    task_id = query_text(query, "task_id", max_chars=_TASK_ID_MAX_CHARS)
    agent_id = query_text(query, "agent_id", max_chars=AGENT_ID_MAX_CHARS)
    listed = query_text(query, "types", max_chars=1024)
    types = None
    if listed is not None:
        types = frozenset(name.strip() for name in listed.split(",") if name.strip())
        unknown = sorted(types.difference(EVENT_TYPES))
        if unknown or not types:
            raise Invalid("invalid_query", f"types must be names from {', '.join(EVENT_TYPES)}")
    return task_id, agent_id, types, event_id(query_text(query, "last_event_id", max_chars=19))


def event_id(text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    if not re.fullmatch(r"[0-9]{1,19}", text.strip()):
        raise Invalid("invalid_query", "last_event_id must be an event id")
    return int(text.strip())


class EventsHandler(BaseHandler):
    """``GET /api/events``: Server-Sent Events, filtered and scoped to the token."""

    _client: EventClient | None = None

    async def get(self) -> None:
        hub = self.services.events
        assert hub is not None, "the hub wires an EventHub into Services"
        reader = await self.token_from_header_or_query()
        try:
            task_id, agent_id, types, last_id = events_query(self.request.query_arguments)
            header_id = event_id(self.request.headers.get("Last-Event-ID"))
        except Invalid as invalid:
            raise HttpError(400, str(invalid)) from None
        view = View(reader.task_scope, task_id, agent_id, types)
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
        _shrink_send_buffer(self)
        self._client = hub.attach(self, view, header_id if header_id is not None else last_id)
        log.info("event_stream_opened", agent_id=reader.agent_id, role=reader.role)
        await self._client.done
        log.info("event_stream_closed", agent_id=reader.agent_id)

    async def token_from_header_or_query(self) -> TokenInfo:
        if self.request.headers.get("Authorization"):
            return await self.authenticate()
        token = self.get_query_argument("token", "").strip()
        info = await self.services.token_check.verify(token) if token else None
        if info is None:
            raise HttpError(401, "unauthorized")
        return info

    def on_connection_close(self) -> None:
        if self._client is not None:
            self._client.close()

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        log.error(
            "event_stream_failed",
            uri=redact_tokens(self.request.uri or ""),
            error=repr(value),
        )


def _shrink_send_buffer(handler: tornado.web.RequestHandler) -> None:
    stream = getattr(handler.request.connection, "stream", None)
    sock = getattr(stream, "socket", None)
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
