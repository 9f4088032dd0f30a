"""The one place that knows both Tornado and Pykka.

Tornado runs on the main thread; each actor runs on its own. Two rules keep
them apart:

* The IOLoop never blocks on an actor. ``reply`` awaits an actor's answer by
  having the actor's thread post it to the loop (``LoopInbox``) when it is
  set; no executor thread sits in ``future.get()``.
* Actors never touch a socket. They hold a ``Connection``, whose ``send`` and
  ``close`` are posted to the loop the same way.

A ``Connection`` is also what an AgentFSM watches (``death_watch``): when the
socket closes, or the hub closes it, the FSM is told why.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import pykka
import structlog

from agentcom.actors.base import CallbackFuture
from agentcom.actors.death_watch import DeathWatch
from agentcom.messages import ConnectionClosed

log = structlog.get_logger(__name__)

ACTOR_REPLY_TIMEOUT_S = 10.0


def use_fastest_event_loop() -> str:
    """Give this thread uvloop's event loop, where uvloop is installed; asyncio's own
    otherwise. Call before Tornado's ``IOLoop.current()``, which wraps it. Returns
    which loop it is, for the start-up log.

    uvloop does the loop's own work (the selector, callbacks, socket reads and
    writes) in compiled code, which the loop thread spends much of its time in.
    """
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop(uvloop.new_event_loop())
    return "uvloop"


class LoopInbox:
    """Runs callables posted from actor threads on the loop, waking it once per burst.

    ``call_soon_threadsafe`` writes to the loop's self-pipe on every call; under
    load, actor threads post answers and frames far faster than the loop wakes,
    so only the first post after each drain pays for the wake-up.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._posted: collections.deque[tuple[Callable[..., None], tuple[Any, ...]]] = (
            collections.deque()
        )
        self._lock = threading.Lock()
        self._wake_pending = False

    def post(self, callback: Callable[..., None], *args: Any) -> None:
        with self._lock:
            self._posted.append((callback, args))
            if self._wake_pending:
                return
            self._wake_pending = True
        # A closed loop means the hub has stopped: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            posted, self._posted = self._posted, collections.deque()
            self._wake_pending = False
        for callback, args in posted:
            try:
                callback(*args)
            except Exception:
                log.exception("loop_callback_failed")


_inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopInbox] = (
    weakref.WeakKeyDictionary()
)


def loop_inbox(loop: asyncio.AbstractEventLoop) -> LoopInbox:
    inbox = _inboxes.get(loop)
    if inbox is None:
        inbox = _inboxes[loop] = LoopInbox(loop)
    return inbox


async def reply(future: pykka.Future[Any], timeout: float = ACTOR_REPLY_TIMEOUT_S) -> Any:
    """The actor's answer, without blocking the IOLoop; raises what the actor raised."""
    assert isinstance(future, CallbackFuture), "hub actors answer with CallbackFutures"
    loop = asyncio.get_running_loop()
    inbox = loop_inbox(loop)
    answer: asyncio.Future[Any] = loop.create_future()
    # A timer on the answer itself, not asyncio.wait_for, which adds a future
    # and two callbacks to every request the hub answers.
    overdue = loop.call_later(timeout, _time_out, answer)
    future.add_done_callback(lambda done: inbox.post(_settle, done, answer))
    try:
        return await answer
    finally:
        overdue.cancel()


async def stop_actor(ref: pykka.ActorRef[Any], timeout: float = ACTOR_REPLY_TIMEOUT_S) -> None:
    """Stop an actor and wait until it has run ``on_stop``, off the loop thread.

    Pykka's non-blocking ``stop`` returns a future that only resolves when
    someone calls ``get()`` on it (a get-hook), so it cannot wake the loop;
    shutdown is rare enough to park one executor thread on it instead.
    """
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, functools.partial(ref.stop, block=True, timeout=timeout))


def _time_out(answer: asyncio.Future[Any]) -> None:
    if not answer.done():
        answer.set_exception(TimeoutError())


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

    def send_text(self, text: str) -> None: ...

    def close_for(self, reason: str) -> None: ...


class Connection:
    """What an actor holds instead of a WebSocketHandler."""

    def __init__(self, socket: SocketEnd, loop: asyncio.AbstractEventLoop) -> None:
        self._socket = socket
        self._inbox = loop_inbox(loop)
        self.death_watch = DeathWatch(ConnectionClosed)

    def send(self, frame: dict[str, Any]) -> None:
        self._inbox.post(self._socket.send_frame, frame)

    def send_encoded(self, text: str) -> None:
        self._inbox.post(self._socket.send_text, text)

    def close(self, reason: str) -> None:
        """Close the socket; watchers hear ``reason`` now, not after the close handshake."""
        if self.death_watch.died(reason):
            self._inbox.post(self._socket.close_for, reason)

    def watch(self, watcher: pykka.ActorRef[Any]) -> None:
        self.death_watch.watch(watcher)


class OnLoop:
    """A loop-side function that actors may call from their threads; it runs on the loop.

    Presence announces joins and leaves through one of these, so a presence
    change costs the actor one post, not one per connected agent.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, function: Callable[..., None]) -> None:
        self._inbox = loop_inbox(loop)
        self._function = function

    def __call__(self, *args: Any) -> None:
        self._inbox.post(self._function, *args)
