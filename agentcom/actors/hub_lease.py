"""HubLease: this hub's lease on a shared store, the cluster's poll, and self-fencing.

Each hub on a PostgreSQL store holds a row in ``hubs`` whose
``lease_expires_at`` it pushes forward every third of ``--hub-lease-ms``,
on the database's clock (``now()``), so hubs on machines whose clocks
disagree still agree on whose lease ran out. Once it has, any hub's poll
(``TaskQueue.poll``, every ``--cluster-poll-ms``) returns the dead hub's
tasks to their lanes, unless their agents recovered them on a live hub
first: each rescue is a conditional update.

A hub that cannot renew in time fences itself, before the others can take
its tasks or soon after: it stops assigning (the Scheduler is told), closes
every agent socket with ``hub_fenced`` so the agents reconnect elsewhere,
and refuses new ones. Its lease may have been taken over already, so it
never renews it again: once the database answers, it joins as a new hub
(a new id, its task memory rebuilt) and serves again. Writes made while it
was fenced were conditional like all others, so none could undo another
hub's work; fencing is for the agents, which must not wait on a hub that
cannot act.

The poll also forgets hubs whose lease expired and that hold no task, and
the connections registered through them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pykka
import structlog

from agentcom.actors.base import HubActor, tell_quietly
from agentcom.cluster import Cluster, new_hub_id
from agentcom.messages import ClusterFenced
from agentcom.stores.interface import Connection, Stores
from agentcom.timers import TimerHandle, Timers

log = structlog.get_logger(__name__)

ASK_TIMEOUT_S = 10.0

_REGISTER = (
    "INSERT INTO hubs (hub_id, url, lease_expires_at)"
    " VALUES (?, ?, now() + ? * interval '1 millisecond')"
)
_RENEW = (
    "UPDATE hubs SET lease_expires_at = now() + ? * interval '1 millisecond'"
    " WHERE hub_id = ? AND lease_expires_at > now()"
)
_FORGET_DEAD_HUBS = (
    "DELETE FROM hubs WHERE lease_expires_at < now() AND NOT EXISTS"
    " (SELECT 1 FROM tasks WHERE tasks.status = 'assigned' AND tasks.hub_id = hubs.hub_id)"
)
_FORGET_DEAD_CONNECTIONS = (
    "DELETE FROM connections WHERE hub_id NOT IN"
    " (SELECT hub_id FROM hubs WHERE lease_expires_at > now())"
)


class _Renew:
    pass


class _Poll:
    pass


class HubLease(HubActor):
    def __init__(
        self,
        cluster: Cluster,
        stores: Stores,
        hub_url: str,
        lease_ms: int,
        poll_ms: int,
        timers: Timers,
        on_fenced: Callable[[], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._cluster = cluster
        self._stores = stores
        self._hub_url = hub_url
        self._lease_ms = lease_ms
        self._poll_ms = poll_ms
        # Attached once they run (``attach``): they start after the lease is taken.
        self._task_queue: pykka.ActorProxy[Any] | None = None
        self._scheduler: pykka.ActorRef[Any] | None = None
        self._timers = timers
        self._on_fenced = on_fenced
        self._monotonic = monotonic
        self._renewed_at = 0.0  # monotonic, when the last renewal that succeeded was sent
        self._renew_timer: TimerHandle | None = None
        self._poll_timer: TimerHandle | None = None
        self._log = log.bind(hub_id=cluster.hub_id)

    def on_start(self) -> None:
        self._conn: Connection = self._stores.connect("tasks")
        self._register()  # a database that cannot be reached stops the hub's start
        self._arm_renew()
        self._arm_poll()

    def attach(self, task_queue: pykka.ActorRef[Any], scheduler: pykka.ActorRef[Any]) -> None:
        self._task_queue = task_queue.proxy()
        self._scheduler = scheduler

    def on_stop(self) -> None:
        for timer in (self._renew_timer, self._poll_timer):
            if timer is not None:
                timer.cancel()
        # The lease is left to run out: the agents of this hub get that long to
        # recover their tasks on another hub (or on this one, restarted).
        self._conn.close()

    def on_receive(self, message: Any) -> None:
        # A tick that fails is logged and the next one tries again: Pykka would
        # stop the actor for it, and a hub without its lease actor never rejoins.
        if isinstance(message, _Renew):
            try:
                self._renew()
            except Exception:
                self._log.exception("hub_lease_tick_failed")
            finally:
                self._arm_renew()
        elif isinstance(message, _Poll):
            try:
                self._poll()
            except Exception:
                self._log.exception("cluster_poll_tick_failed")
            finally:
                self._arm_poll()

    # --- the lease ------------------------------------------------------------------

    def _register(self) -> None:
        sent_at = self._monotonic()
        self._conn.execute(_REGISTER, (self._cluster.hub_id, self._hub_url, self._lease_ms))
        self._renewed_at = sent_at
        self._log.info("hub_lease_taken", lease_ms=self._lease_ms, url=self._hub_url)

    def _renew(self) -> None:
        if self._cluster.fenced:
            self._rejoin()
            return
        sent_at = self._monotonic()
        try:
            # A renewal that cannot finish within a third of the lease is a failed
            # one (a server that stopped answering must not hold the hub forever).
            self._conn.execute(f"SET statement_timeout = {max(self._lease_ms // 3, 1)}")
            renewed = self._conn.execute(_RENEW, (self._lease_ms, self._cluster.hub_id)).rowcount
        except Exception as error:  # the server gone, or answering with an error
            detail = getattr(error, "detail", None) or str(error)
            if (sent_at - self._renewed_at) * 1000 >= self._lease_ms:
                self._fence("lease_not_renewed", detail)
            else:
                self._log.warning("hub_lease_renewal_failed", error=detail)
            return
        if renewed != 1:
            self._fence("lease_expired", "the lease ran out before it was renewed")
            return
        self._renewed_at = sent_at

    def _fence(self, cause: str, detail: str) -> None:
        self._cluster.fenced = True
        self._log.warning("hub_fenced", cause=cause, detail=detail)
        if self._scheduler is not None:
            tell_quietly(self._scheduler, ClusterFenced(True))
        self._on_fenced()

    def _rejoin(self) -> None:
        """Join again as a new hub, once the database answers."""
        hub_id = new_hub_id()
        try:
            self._conn.execute(_REGISTER, (hub_id, self._hub_url, self._lease_ms))
            if self._task_queue is not None:
                self._task_queue.rejoin(hub_id).get(timeout=ASK_TIMEOUT_S)
        except Exception as error:
            # The database still cannot be reached: the next tick tries again, as
            # another new hub (a lease taken here and not used runs out unused).
            self._log.info("hub_rejoin_failed", error=str(error))
            return
        self._renewed_at = self._monotonic()
        self._cluster.hub_id = hub_id
        self._cluster.listener.hub_id = hub_id
        self._cluster.fenced = False
        self._log.warning("hub_rejoined", new_hub_id=hub_id)
        self._log = log.bind(hub_id=hub_id)
        if self._scheduler is not None:
            tell_quietly(self._scheduler, ClusterFenced(False))

    # --- the poll -------------------------------------------------------------------

    def _poll(self) -> None:
        if self._cluster.fenced or self._task_queue is None:
            return
        # Not waited for: a TaskQueue busy for a while must not hold up the next
        # renewal, or a healthy hub would fence itself (TaskQueue logs rescues).
        self._task_queue.poll.defer()
        try:
            self._conn.execute(_FORGET_DEAD_HUBS)
            self._conn.execute(_FORGET_DEAD_CONNECTIONS)
        except Exception as error:  # the next poll tries again
            self._log.warning("cluster_poll_failed", error=str(error))

    def _arm_renew(self) -> None:
        ref = self.actor_ref
        self._renew_timer = self._timers.call_later(
            self._lease_ms / 3000, lambda: tell_quietly(ref, _Renew())
        )

    def _arm_poll(self) -> None:
        ref = self.actor_ref
        self._poll_timer = self._timers.call_later(
            self._poll_ms / 1000, lambda: tell_quietly(ref, _Poll())
        )
