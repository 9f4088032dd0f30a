"""The WebSocket link to the hub: connect, identify, keep alive, and wait between attempts.

`open_connection` returns only an identified connection. It tells apart the
two ways that can fail: the hub is unreachable or misbehaving (`HubUnavailable`,
worth retrying with `Backoff`), or it refused this agent's credentials
(`CredentialsRejected`, which no retry will fix, so the worker stops).
Liveness uses WebSocket protocol pings from this side (the hub pings too): a
hub that stops answering is noticed within a ping interval even when no frame
is due, and the connection is dropped and made again.

What to say over the connection is the worker's business, not this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Callable
from typing import Any

import structlog
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


class HubConnection:
    """One identified connection: JSON frames in and out."""

    def __init__(self, socket: WebSocketClientConnection) -> None:
        self._socket = socket

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


async def open_connection(config: WorkerConfig, status: str) -> HubConnection:
    """Connect and identify; raises HubUnavailable or CredentialsRejected."""
    request = HTTPRequest(config.hub, connect_timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        socket = await websocket_connect(
            request, ping_interval=config.ping_interval, max_message_size=MAX_FRAME_BYTES
        )
    except (OSError, HTTPClientError, WebSocketError, TimeoutError) as error:
        raise HubUnavailable(f"{type(error).__name__}: {error}") from None

    connection = HubConnection(socket)
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
