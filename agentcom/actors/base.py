"""What every hub actor shares: futures that call back, and batches that commit once.

Two gaps in Pykka are filled here, and only here:

* ``ThreadingFuture`` can only be waited on. ``CallbackFuture`` also runs a
  callback when it is set, so the IOLoop can be woken by the actor thread
  (``http/bridge.py``) instead of parking an executor thread on ``get()``.
* Pykka replies to each message as soon as it is handled. ``BatchingActor``
  handles every message already waiting in the inbox, calls ``end_batch()``
  (TaskQueue commits there), and only then sends the replies: group commit,
  so that a reply never reports a change that is not yet on disk.

On top of that, ``StoreActor`` is what the actors that own a store (TaskQueue,
PostOffice, Analytics) share: an undo point (savepoint) per message, one commit per batch,
an outbox sent only after it, and a full disk or a database gone away
handled as one episode. Which store it is (SQLite or PostgreSQL) they do not
know: they are handed ``Stores`` and connect.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import pykka
import pykka.messages
import structlog
from pykka._actor import ActorInbox
from pykka._envelope import Envelope

from agentcom.clock import Clock
from agentcom.messages import StorageFull
from agentcom.store import GroupCommitStore
from agentcom.stores import as_stores
from agentcom.stores.interface import Stores, StoreUnavailable

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

    @staticmethod
    def _create_actor_inbox() -> ActorInbox:
        # Pykka's queue.Queue puts and gets in Python, through Conditions, and
        # every tell in the hub goes through one: SimpleQueue does it in C.
        inbox: queue.SimpleQueue[Envelope[Any]] = queue.SimpleQueue()
        return inbox


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
            assert isinstance(inbox, queue.SimpleQueue)  # HubActor's inbox
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


StoreT = TypeVar("StoreT", bound=GroupCommitStore)
OutT = TypeVar("OutT")


class StoreActor(BatchingActor, Generic[StoreT, OutT]):
    """A ``BatchingActor`` that owns a ``GroupCommitStore``, and what it queues to send.

    Each message runs in its own savepoint, kept if it is handled and undone if
    it raises, so one failed request cannot undo the others of its batch. What
    a message causes besides the store (events, pushes) waits in ``_outbox``;
    ``end_batch`` commits once, and only then ``_flush``es the outbox, so no
    reply, event or push reports a change that is not on disk. A message that
    fails half-way, or a commit that fails, takes its outbox entries with it
    and leaves memory as the store holds it (``_load``).

    A full disk is an episode, not an error per request: the first write that
    fails raises ``StorageFull``, ``storage_full`` is logged once, and until a
    write succeeds again (``storage_writable_again``) each message is committed
    on its own, so each refused request fails alone. A sweep calls
    ``_probe_if_full`` so that the episode ends without waiting for traffic.

    A database that went away (``StoreUnavailable``, a ``StorageFull``) is the
    same episode, answered 503 instead of 507: its connection reconnects on
    the next statement. Unlike a full disk it refuses reads too, so memory
    may not be rebuilt from it at once: it is then marked stale, and rebuilt
    before the next message is handled (which is refused while that fails).

    What differs between the owners are the hooks: ``refusals``, ``_load``,
    ``_flush``, ``_answer_when_full`` and ``_outlives_lost_batch``.
    """

    # A fire-and-forget message that fails is rolled back by its savepoint;
    # stopping the actor for it would stop everyone who talks to it.
    survives_failed_tells = True

    refusals: tuple[type[Exception], ...] = ()
    """Errors a handler raises before it changes anything: only its savepoint is undone."""

    commit_observer: Callable[[float], None] | None = None
    """Told the seconds of each commit that wrote (the hub's ``/metrics``)."""

    _store: StoreT  # opened in on_start, in the actor's thread

    def __init__(self, stores: Stores | Path, clock: Clock) -> None:
        super().__init__()
        self._stores = as_stores(stores)
        self._clock = clock
        self._full_since: int | None = None  # when the store last refused a write
        self._memory_stale = False  # memory could not be rebuilt from the store yet
        self._outbox: list[OutT] = []  # sent by _flush, after the commit

    # --- hooks ----------------------------------------------------------------------

    def _load(self) -> None:
        """Build what memory holds of the store from what the store holds."""
        raise NotImplementedError

    def _flush(self) -> None:
        """Send what the outbox holds, and empty it."""
        raise NotImplementedError

    def _answer_when_full(self, message: Any, full: StorageFull) -> Any:
        """The answer to ``message``, whose changes a full store refused; it fails by default."""
        raise full

    def _outlives_lost_batch(self, out: OutT) -> bool:
        """Whether ``out`` still goes out when its batch's commit fails."""
        return False

    # --- one message, one batch -----------------------------------------------------

    def _handle_receive(self, message: Any) -> Any:
        if isinstance(message, pykka.messages._ActorStop):
            return super()._handle_receive(message)
        outbox_before = len(self._outbox)
        try:
            if self._memory_stale:
                self._load()
                self._memory_stale = False
            response = super()._handle_receive(message)
            self._store.end_message(keep=True)
            if self._full_since is not None and self._store.commit():
                self._storage_writable()
        except StorageFull as full:
            # Caught before the refusals (it is a TaskRefused): whatever this
            # message changed is not stored, so memory follows the store.
            self._store.end_message(keep=False)
            self._undo(outbox_before)
            self._storage_full(full)
            return self._answer_when_full(message, full)
        except self.refusals as refusal:
            # Refusals are decided before anything is changed, except one that
            # found the store changed under it (another hub's write): memory
            # follows the store then.
            self._store.end_message(keep=False)
            if getattr(refusal, "rebuilds_memory", False):
                self._undo(outbox_before)
            raise
        except BaseException:
            # Anything else may have failed half-way: undo it on disk, and
            # rebuild memory from disk rather than trust what was changed.
            self._store.end_message(keep=False)
            self._undo(outbox_before)
            raise
        return response

    def _undo(self, outbox_before: int) -> None:
        del self._outbox[outbox_before:]
        self._reload()

    def _reload(self) -> None:
        """``_load``, or mark memory stale if the store cannot be read now."""
        try:
            self._load()
        except StoreUnavailable:
            self._memory_stale = True

    def end_batch(self) -> None:
        """Commit the batch, then flush the outbox."""
        try:
            self._commit()
        except Exception as error:
            # Nothing of this batch is on disk: its replies fail (BatchingActor),
            # only what outlives the batch goes out, and memory goes back to the
            # store's view.
            self._store.rollback()
            self._outbox = [out for out in self._outbox if self._outlives_lost_batch(out)]
            self._reload()
            if isinstance(error, StorageFull):
                self._storage_full(error)
            self._flush()
            raise
        try:
            self._flush()
        except Exception:
            # The batch is on disk: failing its replies now would tell callers a
            # change they made did not happen (and a retry would make it twice).
            log.exception("flush_after_commit_failed", actor=str(self))

    def _commit(self) -> bool:
        started = time.perf_counter()
        wrote = self._store.commit()
        if wrote and self.commit_observer is not None:
            try:
                self.commit_observer(time.perf_counter() - started)
            except Exception:
                log.exception("commit_observer_failed", actor=str(self))
        return wrote

    # --- the full-disk episode ------------------------------------------------------

    def _storage_full(self, full: StorageFull) -> None:
        if self._full_since is None:
            self._full_since = self._clock()
            log.warning(full.reason, store=self._stores.description, detail=full.detail)

    def _storage_writable(self) -> None:
        assert self._full_since is not None
        log.info("storage_writable_again", full_for_ms=self._clock() - self._full_since)
        self._full_since = None

    def _probe_if_full(self, now: int) -> None:
        if self._full_since is not None:
            self._store.probe(now)  # committed on its own: the episode ends if it is stored


def _dead_letter_of(actor: pykka.Actor) -> Any:
    """What Pykka answers to a message that arrived after its actor stopped."""
    error = pykka.ActorDeadError(f"{actor.actor_ref} stopped before handling the message")
    return (pykka.ActorDeadError, error, None)


def asked_method(message: Any) -> str | None:
    """The proxy method a message asks for (``submit``, ``send`` …), or None for a tell."""
    if isinstance(message, pykka.messages.ProxyCall):
        return message.attr_path[-1]
    return None


def tell_quietly(ref: pykka.ActorRef[Any], message: object) -> None:
    """Tell, for senders to whom a stopped receiver no longer matters (timers, notices)."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        log.debug("receiver_gone", receiver=str(ref), message=type(message).__name__)
