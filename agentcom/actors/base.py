"""What every hub actor shares: futures that call back, and batches that commit once.

Two gaps in Pykka are filled here, and only here:

* ``ThreadingFuture`` can only be waited on. ``CallbackFuture`` also runs a
  callback when it is set, so the IOLoop can be woken by the actor thread
  (``http/bridge.py``) instead of parking an executor thread on ``get()``.
* Pykka replies to each message as soon as it is handled. ``BatchingActor``
  handles every message already waiting in the inbox, calls ``end_batch()``
  (TaskQueue commits there), and only then sends the replies: group commit,
  so that a reply never reports a change that is not yet on disk.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from typing import Any

import pykka
import structlog
from pykka._envelope import Envelope

log = structlog.get_logger(__name__)

MAX_BATCH = 256
"""Replies wait for the whole batch; capping it bounds the wait of the first caller."""


class CallbackFuture(pykka.ThreadingFuture[Any]):
    """A ThreadingFuture that also calls ``callback(self)`` once it is set."""

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: list[Callable[[CallbackFuture], None]] = []
        self._callbacks_lock = threading.Lock()
        self._done = False

    def add_done_callback(self, callback: Callable[[CallbackFuture], None]) -> None:
        with self._callbacks_lock:
            if not self._done:
                self._callbacks.append(callback)
                return
        callback(self)

    def set(self, value: Any | None = None) -> None:
        super().set(value)
        self._run_callbacks()

    def set_exception(self, exc_info: Any = None) -> None:
        super().set_exception(exc_info if exc_info is not None else sys.exc_info())
        self._run_callbacks()

    def _run_callbacks(self) -> None:
        with self._callbacks_lock:
            self._done = True
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback(self)
            except Exception:
                log.exception("future_callback_failed")


class HubActor(pykka.ThreadingActor):
    """Base of every hub actor: its asks return ``CallbackFuture``s."""

    # An interpreter exiting without a clean stop must not hang on actor
    # threads; nothing acknowledged is lost, since replies follow commits.
    use_daemon_thread = True

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return CallbackFuture()


class BatchingActor(HubActor):
    """Handles all waiting messages, then ``end_batch()``, then replies to them all."""

    survives_failed_tells = False
    """If True, a ``tell`` whose handler raises is logged and the actor carries on
    (Pykka would stop it); for actors that undo a failed message themselves."""

    def end_batch(self) -> None:
        """Make the batch's changes durable. Raising here fails every reply of the batch.

        Also runs after the batch that stopped the actor, once ``on_stop`` is done.
        """

    def _actor_loop_running(self) -> None:
        while not self.actor_stopped.is_set():
            batch = [self.actor_inbox.get()]
            inbox = self.actor_inbox
            assert isinstance(inbox, queue.Queue)  # ThreadingActor's inbox
            while len(batch) < MAX_BATCH and not inbox.empty():
                batch.append(inbox.get_nowait())
            replies: list[tuple[Envelope[Any], Any, Any]] = []
            for envelope in batch:
                if self.actor_stopped.is_set():
                    if envelope.reply_to is not None:
                        replies.append((envelope, None, _dead_letter_of(self)))
                    continue
                outcome = self._handle_in_batch(envelope)
                if outcome is not None:
                    replies.append(outcome)
            try:
                self.end_batch()
            except Exception:
                log.exception("batch_end_failed", actor=str(self))
                failure = sys.exc_info()
                replies = [(envelope, None, failure) for envelope, _, _ in replies]
            for envelope, response, exc_info in replies:
                assert envelope.reply_to is not None
                if exc_info is None:
                    envelope.reply_to.set(response)
                else:
                    envelope.reply_to.set_exception(exc_info)

    def _handle_in_batch(self, envelope: Envelope[Any]) -> tuple[Envelope[Any], Any, Any] | None:
        """Handle one message as Pykka's own loop would, holding back the reply."""
        try:
            response = self._handle_receive(envelope.message)
        except Exception:
            if envelope.reply_to is not None:
                return envelope, None, sys.exc_info()
            if self.survives_failed_tells:
                log.exception(
                    "tell_failed", actor=str(self), message=type(envelope.message).__name__
                )
                return None
            self._handle_failure(*sys.exc_info())
            try:
                self.on_failure(*sys.exc_info())
            except Exception:
                self._handle_failure(*sys.exc_info())
            return None
        except BaseException:
            # As Pykka's own loop does: an interrupt stops every actor.
            self._stop()
            pykka.ActorRegistry.stop_all()
            return None
        if envelope.reply_to is None:
            return None
        return envelope, response, None


def _dead_letter_of(actor: pykka.Actor) -> Any:
    """What Pykka answers to a message that arrived after its actor stopped."""
    error = pykka.ActorDeadError(f"{actor.actor_ref} stopped before handling the message")
    return (pykka.ActorDeadError, error, None)


def tell_quietly(ref: pykka.ActorRef[Any], message: object) -> None:
    """Tell, for senders to whom a stopped receiver no longer matters (timers, notices)."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        log.debug("receiver_gone", receiver=str(ref), message=type(message).__name__)
