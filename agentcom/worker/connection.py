"""The WebSocket link to a hub: connect, identify, keep alive, and which hub next, when.

`open_connection` returns only an identified connection. It tells apart the
two ways that can fail: the hub is unreachable or misbehaving (`HubUnavailable`,
worth retrying with `Backoff`), or it refused this agent's credentials
(`CredentialsRejected`, which no retry will fix, so the worker stops).
Liveness uses WebSocket protocol pings from this side (the hub pings too): a
hub that stops answering is noticed within a ping interval even when no frame
is due, and the connection is dropped and made again.

`HubRotation` takes the hub URLs in turn: after a failed attempt or a lost
connection, the next one, with the backoff's wait once per pass over the list.
The simulator's agents fail over with it too.

What to say over the connection is the worker's business, not this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import (
    WebSocketClientConnection,
    WebSocketClosedError,
    WebSocketError,
    websocket_connect,
)

from agentcom.worker.config import WorkerConfig

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_SECONDS = 10.0
IDENTIFY_TIMEOUT_SECONDS = 10.0
CLOSE_HANDSHAKE_SECONDS = 2.0
MAX_FRAME_BYTES = 16 * 1024 * 1024
FATAL_IDENTIFY_ERRORS = frozenset({"invalid_token", "token_agent_mismatch"})
GOING_AWAY = 1001  # WebSocket close code: the server is shutting down
# Close reasons of a hub that is leaving, whatever their code: it is stopping,
# or it no longer serves the queue. Another hub may well be there.
LEAVING_REASONS = frozenset({"shutdown", "hub_fenced"})


class HubUnavailable(Exception):
    """Could not reach the hub, or it did not identify us; try again later."""


class CredentialsRejected(Exception):
    """The hub refused the token for this agent id; retrying cannot help."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class Backoff:
    """Delays between connection attempts: 1 s doubling to 60 s, each with +-20 % jitter.

    Jitter keeps a fleet of workers from reconnecting in lockstep after a hub
    restart.
    """

    def __init__(
        self,
        initial: float = 1.0,
        maximum: float = 60.0,
        jitter: float = 0.2,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._initial, self._maximum, self._jitter = initial, maximum, jitter
        self._uniform = uniform
        self._nominal = initial

    def next_delay(self) -> float:
        nominal = self._nominal
        self._nominal = min(self._maximum, nominal * 2)
        jittered = nominal * self._uniform(1 - self._jitter, 1 + self._jitter)
        return min(self._maximum, max(self._initial, jittered))

    def reset(self) -> None:
        self._nominal = self._initial


class HubRotation:
    """Which hub URL to try next, and after how long.

    After a failed attempt or a lost connection, the next URL in the list
    (round-robin), and the backoff's delay once every full pass: every
    `len(urls)` attempts since the last wait, a lost connection counting as
    one. An unreachable hub thus never delays reaching the next one, while
    hubs that all fail, or all drop us at once, are tried no faster than one
    pass per backoff step. A hub that says it is leaving (close code 1001, or
    a reason in `LEAVING_REASONS`) is followed by the next one at once even
    when the pass is over: that once per pass, the wait comes after the next
    attempt instead. With a single URL the delays are the backoff's alone.

    One owner, on one loop; `event_log` is where `next_hub` logs (default:
    this module's logger, which carries the worker's bound agent id).
    """

    def __init__(
        self,
        urls: Sequence[str],
        backoff: Backoff | None = None,
        event_log: FilteringBoundLogger | None = None,
    ) -> None:
        if not urls:
            raise ValueError("HubRotation needs at least one URL")
        self.urls = tuple(urls)
        self._backoff = backoff or Backoff()
        self._log: FilteringBoundLogger = event_log or log
        self._index = 0
        self._tried = 0  # attempts since the last wait
        self._wait_put_off = False  # this pass's wait was put off once for a leaving hub

    @property
    def current(self) -> str:
        """The URL to try now."""
        return self.urls[self._index]

    def connected(self) -> None:
        """The current URL identified us: the next wait starts from the backoff's first step."""
        self._backoff.reset()

    def move_on(self, *, leaving: bool = False) -> float:
        """The current URL failed or its connection was lost: go to the next one.

        Returns the seconds to wait before trying it.
        """
        self._index = (self._index + 1) % len(self.urls)
        self._tried += 1
        if self._tried < len(self.urls):
            return 0.0
        if leaving and len(self.urls) > 1 and not self._wait_put_off:
            self._wait_put_off = True
            return 0.0
        self._tried, self._wait_put_off = 0, False
        return self._backoff.next_delay()

    async def next_hub(self, why: str, *, leaving: bool = False) -> None:
        """`move_on`, say so (`hub_switched`, or `hub_reconnect_wait` to the same URL), and wait.

        why: what ended the attempt, for the log (unreachable, lost, leaving).
        """
        previous = self.current
        delay = round(self.move_on(leaving=leaving), 2)
        if self.current == previous:
            self._log.info("hub_reconnect_wait", hub=previous, why=why, delay_s=delay)
        else:
            self._log.info(
                "hub_switched", from_hub=previous, to_hub=self.current, why=why, delay_s=delay
            )
        await asyncio.sleep(delay)


def hub_is_leaving(close_code: int | None, close_reason: str | None) -> bool:
    """The hub closed the connection because it is going away, not because of us."""
    return close_code == GOING_AWAY or close_reason in LEAVING_REASONS


class HubConnection:
    """One identified connection to the hub at `url`: JSON frames in and out."""

    def __init__(self, socket: WebSocketClientConnection, url: str) -> None:
        self._socket = socket
        self.url = url

    async def send(self, frame: dict[str, Any]) -> bool:
        """False if the connection is already closed; the reader will notice too."""
        try:
            await self._socket.write_message(json.dumps(frame))
        except WebSocketClosedError:
            return False
        return True

    async def receive(self) -> dict[str, Any] | None:
        """The next JSON object from the hub, or None once the connection is closed."""
        while True:
            message = await self._socket.read_message()
            if message is None:
                return None
            try:
                frame = json.loads(message)
            except ValueError:
                frame = None
            if isinstance(frame, dict):
                return frame
            log.warning("hub_frame_unreadable", frame=str(message)[:200])

    async def close(self) -> None:
        """Close cleanly: wait (briefly) for the hub's half of the close handshake.

        Only call this once nobody else is reading from the connection.
        """
        self._socket.close(code=1000, reason="worker closing")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._discard_until_closed(), CLOSE_HANDSHAKE_SECONDS)

    async def _discard_until_closed(self) -> None:
        while await self._socket.read_message() is not None:
            pass

    @property
    def close_reason(self) -> str | None:
        return self._socket.close_reason

    @property
    def close_code(self) -> int | None:
        return self._socket.close_code


async def open_connection(config: WorkerConfig, url: str, status: str) -> HubConnection:
    """Connect to the hub at `url` and identify; raises HubUnavailable or CredentialsRejected."""
    request = HTTPRequest(url, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        socket = await websocket_connect(
            request, ping_interval=config.ping_interval, max_message_size=MAX_FRAME_BYTES
        )
    except (OSError, HTTPClientError, WebSocketError, TimeoutError) as error:
        raise HubUnavailable(f"{type(error).__name__}: {error}") from None

    connection = HubConnection(socket, url)
    identify = {
        "type": "identify",
        "agent_id": config.agent_id,
        "token": config.token,
        "name": config.name,
        "status": status,
        "capabilities": list(config.capabilities),
        "client_type": "agentcom-worker",
        "protocol_version": 1,
    }
    try:
        if not await connection.send(identify):
            raise HubUnavailable("connection closed before identify was sent")
        await asyncio.wait_for(_await_identified(connection), IDENTIFY_TIMEOUT_SECONDS)
    except TimeoutError:
        await connection.close()
        raise HubUnavailable("no reply to identify") from None
    except BaseException:
        await connection.close()
        raise
    return connection


async def _await_identified(connection: HubConnection) -> None:
    while True:
        reply = await connection.receive()
        if reply is None:
            raise HubUnavailable(f"closed during identify: {connection.close_reason}")
        if reply.get("type") == "identified":
            return
        if reply.get("type") == "error":
            error = str(reply.get("error"))
            if error in FATAL_IDENTIFY_ERRORS:
                raise CredentialsRejected(error)
            raise HubUnavailable(f"hub answered identify with error {error!r}")
        log.debug("frame_before_identified_ignored", frame_type=reply.get("type"))
