"""The one place that knows both Tornado and Pykka.

Tornado runs on the main thread; each actor runs on its own. Two rules keep
them apart:

* The IOLoop never blocks on an actor. ``reply`` awaits an actor's answer by
  having the actor's thread wake the loop (``call_soon_threadsafe``) when the
  answer is set; no executor thread sits in ``future.get()``.
* Actors never touch a socket. They hold a ``Connection`` and its ``send`` and
  ``close`` hop onto the loop with ``add_callback``.

A ``Connection`` is also what an AgentFSM watches (``death_watch``): when the
socket closes, or the hub closes it, the FSM is told why.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import pykka
from tornado.ioloop import IOLoop

from agentcom.actors.base import CallbackFuture
from agentcom.actors.death_watch import DeathWatch
from agentcom.messages import ConnectionClosed

ACTOR_REPLY_TIMEOUT_S = 10.0


async def reply(future: pykka.Future[Any], timeout: float = ACTOR_REPLY_TIMEOUT_S) -> Any:
    """The actor's answer, without blocking the IOLoop; raises what the actor raised."""
    assert isinstance(future, CallbackFuture), "hub actors answer with CallbackFutures"
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[Any] = loop.create_future()

    def on_actor_thread(done: CallbackFuture) -> None:
        loop.call_soon_threadsafe(_settle, done, answer)

    future.add_done_callback(on_actor_thread)
    return await asyncio.wait_for(answer, timeout)


def _settle(done: CallbackFuture, answer: asyncio.Future[Any]) -> None:
    if answer.done():  # the waiter timed out
        return
    try:
        answer.set_result(done.get(timeout=0))
    except Exception as error:
        answer.set_exception(error)


class SocketEnd(Protocol):
    """What a Connection needs from the WebSocket handler; runs on the loop."""

    def send_frame(self, frame: dict[str, Any]) -> None: ...

    def close_for(self, reason: str) -> None: ...


class Connection:
    """What an actor holds instead of a WebSocketHandler."""

    def __init__(self, socket: SocketEnd, io_loop: IOLoop) -> None:
        self._socket = socket
        self._io_loop = io_loop
        self.death_watch = DeathWatch(ConnectionClosed)

    def send(self, frame: dict[str, Any]) -> None:
        self._io_loop.add_callback(self._socket.send_frame, frame)

    def close(self, reason: str) -> None:
        """Close the socket; watchers hear ``reason`` now, not after the close handshake."""
        if self.death_watch.died(reason):
            self._io_loop.add_callback(self._socket.close_for, reason)

    def watch(self, watcher: pykka.ActorRef[Any]) -> None:
        self.death_watch.watch(watcher)
