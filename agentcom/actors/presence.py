"""Presence: who is connected. Starts an AgentFSM per identified connection.

It is the only place that maps an agent id to its live FSM, so it enforces
"one connection per agent id": a second identify replaces the first, whose FSM
is stopped (its task reclaimed with cause ``replaced``) before the new FSM
starts and looks for a task still assigned to this agent. It watches every FSM
it starts and forgets an agent when its FSM ends, and it passes each
``TaskReclaimed`` and ``TaskCancelled`` to the FSM of the agent that held the
task, which is how a sweep's reclaim or a submitter's cancel reaches that FSM. Reads (lists for the API, ``list_agents``)
ask the FSMs for their state at that moment.

Every identified agent hears who joins, who leaves and whose status changes
(``agent_joined``, ``agent_left``, ``status_changed``). Presence announces
each change once, through ``announce``, which runs on the IOLoop: there the
socket registry encodes the frame once and writes it to every socket in one
pass, coalescing the changes of one loop turn. Going through an actor per
recipient made a mass connect O(agents²) hand-offs.

For the people watching, joins and leaves also go out as HubEvents on
``EVENTS_TOPIC`` (``agent_joined`` before the new FSM starts, so before its
first ``agent_state``; ``agent_left`` after the FSM has ended).

Several hubs on one PostgreSQL store (``cluster``, ``agentcom.cluster``): each
connection is also a row of the ``connections`` table (``ConnectionsTable``,
on Presence's own database connection; every read and write here is made in
Presence's thread, never on the IOLoop). A connect writes the agent's row
before its FSM starts; if the row named another hub, the same transaction
sends a ``CONNECTIONS_CHANNEL`` notice, and the hub holding the older
connection closes it as ``replaced``, as a local second identify would (it
first checks that the row no longer names that connection: a notice can
arrive after a yet newer connection was made here). A disconnect deletes the
row if it is still this connection's. The lists for the API add the agents
connected to other hubs whose lease is live, read from that table, with an
FSM state read from the tasks they hold, and every entry names its
``hub_id``. Agents here hear of joins and leaves on other hubs from those
hubs' event streams (``EVENTS_CHANNEL``), each checked against the table so
that an agent that only moved from one hub to another is not said to have left.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import pykka
import structlog

from agentcom import compact_json
from agentcom.actors.agent_fsm import AgentFSM, AgentLink
from agentcom.actors.base import HubActor, tell_quietly
from agentcom.clock import Clock, now_ms
from agentcom.cluster import CONNECTIONS_CHANNEL, EVENTS_CHANNEL, Cluster
from agentcom.messages import (
    AGENTS_TOPIC,
    EVENTS_TOPIC,
    RECLAIMS_TOPIC,
    AgentLeft,
    AgentStopped,
    HubEvent,
    TaskCancelled,
    TaskReclaimed,
    TaskStatus,
)
from agentcom.stores.interface import Connection, Stores
from agentcom.timers import Timers

log = structlog.get_logger(__name__)

T = TypeVar("T")

STOP_TIMEOUT_S = 10.0


class PresenceFeed(Protocol):
    """Tells every identified agent but ``about`` of a change (``SocketRegistry.announce``)."""

    def __call__(self, frame: dict[str, Any], about: str) -> None: ...


@dataclass(slots=True)
class _Connected:
    agent_id: str
    name: str
    status: str
    capabilities: list[Any]
    connected_at: int
    link: AgentLink
    fsm_ref: pykka.ActorRef[Any]
    connection_id: str = ""  # its row in ``connections`` (several hubs)

    def public(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "name": self.name,
            "status": self.status,
            "capabilities": self.capabilities,
            "connected_at": self.connected_at,
        }


@dataclass(frozen=True, slots=True)
class Identity:
    """What an identify frame says about the agent, once validated."""

    agent_id: str
    name: str
    status: str
    capabilities: list[Any]
    capability_names: frozenset[str]


# --- several hubs --------------------------------------------------------------------

_PUBLIC = ("agent_id", "name", "status", "capabilities", "connected_at")
_LISTED = (*_PUBLIC, "fsm_state", "hub_id")
CONNECTIONS_LOCK = 0x61636F6E  # "acon": with hashtext(agent_id), an advisory lock's two keys

_REMOTE = (
    "SELECT c.agent_id, c.hub_id, c.name, c.status, c.capabilities, c.connected_at,"
    " t.id, t.accepted_at FROM connections c"
    " JOIN hubs h ON h.hub_id = c.hub_id AND h.lease_expires_at > now()"
    " LEFT JOIN LATERAL (SELECT id, accepted_at FROM tasks"
    "  WHERE assigned_to = c.agent_id AND status = ? ORDER BY seq DESC LIMIT 1) t ON TRUE"
    " WHERE c.hub_id <> ?"
)


@dataclass(frozen=True, slots=True)
class ConnectedElsewhere:
    """A ``CONNECTIONS_CHANNEL`` notice: ``agent_id`` connected through ``to_hub``."""

    agent_id: str
    to_hub: str


@dataclass(frozen=True, slots=True)
class PresenceElsewhere:
    """Another hub's ``agent_joined`` or ``agent_left`` event (``EVENTS_CHANNEL``)."""

    kind: str
    agent_id: str


def presence_events(ref: pykka.ActorRef[Any], notice: dict[str, Any]) -> None:
    """The listener's handler for ``EVENTS_CHANNEL``: joins and leaves go to Presence."""
    for event in notice.get("events", ()):
        if event.get("type") in ("agent_joined", "agent_left") and event.get("agent_id"):
            tell_quietly(ref, PresenceElsewhere(event["type"], str(event["agent_id"])))


class ConnectionsTable:
    """Who is connected through which hub: the ``connections`` table (PostgreSQL)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def register(
        self, hub_id: str, identity: Identity, connection_id: str, connected_at: int
    ) -> str | None:
        """Write the agent's row as this connection's; the hub it named before, if
        another (``tell_replaced`` tells that hub)."""
        conn = self._conn
        agent_id = identity.agent_id
        try:
            conn.execute("BEGIN")
            # Two hubs connecting one agent at once: one after the other, so the
            # second sees the first's row (and tells that hub).
            conn.execute(
                "SELECT pg_advisory_xact_lock(?, hashtext(?))", (CONNECTIONS_LOCK, agent_id)
            )
            before = conn.execute(
                "SELECT hub_id FROM connections WHERE agent_id=?", (agent_id,)
            ).fetchone()
            conn.execute(
                "INSERT INTO connections (agent_id, hub_id, connection_id, name, status,"
                " capabilities, connected_at) VALUES (?,?,?,?,?,?,?)"
                " ON CONFLICT (agent_id) DO UPDATE SET hub_id=excluded.hub_id,"
                " connection_id=excluded.connection_id, name=excluded.name,"
                " status=excluded.status, capabilities=excluded.capabilities,"
                " connected_at=excluded.connected_at",
                (
                    agent_id,
                    hub_id,
                    connection_id,
                    identity.name,
                    identity.status,
                    compact_json.dumps(identity.capabilities),
                    connected_at,
                ),
            )
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return None if before is None or before[0] == hub_id else str(before[0])

    def tell_replaced(self, hub_id: str, agent_id: str, connection_id: str) -> None:
        """A ``CONNECTIONS_CHANNEL`` notice: the hub holding an older connection of
        ``agent_id`` closes it (``Presence._replaced_elsewhere``)."""
        notice = {
            "hub": hub_id,
            "agent_id": agent_id,
            "connection_id": connection_id,
            "to_hub": hub_id,
        }
        self._conn.execute(
            "SELECT pg_notify(?, ?)", (CONNECTIONS_CHANNEL, compact_json.dumps(notice))
        )

    def set_status(self, agent_id: str, connection_id: str, status: str) -> None:
        self._conn.execute(
            "UPDATE connections SET status=? WHERE agent_id=? AND connection_id=?",
            (status, agent_id, connection_id),
        )

    def deregister(self, connections: list[tuple[str, str]]) -> None:
        """Delete the rows (agent id, connection id) that are still these connections'
        (the row of a newer connection, here or elsewhere, stays)."""
        if connections:
            self._conn.executemany(
                "DELETE FROM connections WHERE agent_id=? AND connection_id=?", connections
            )

    def connection_of(self, agent_id: str) -> str | None:
        """The connection id the agent's row names, if it has one."""
        row = self._conn.execute(
            "SELECT connection_id FROM connections WHERE agent_id=?", (agent_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def remote(self, hub_id: str, agent_id: str | None = None) -> list[dict[str, Any]]:
        """Agents connected through other hubs whose lease is live, oldest first, with
        the task each holds: ``fsm_state`` working (accepted), assigned, or idle."""
        sql, params = _REMOTE, [TaskStatus.ASSIGNED.value, hub_id]
        if agent_id is not None:
            sql += " AND c.agent_id = ?"
            params.append(agent_id)
        rows = self._conn.execute(sql + " ORDER BY c.connected_at, c.agent_id", params)
        return [
            {
                "agent_id": agent,
                "hub_id": hub,
                "name": name,
                "status": status,
                "capabilities": json.loads(capabilities),
                "connected_at": connected_at,
                "current_task_id": task_id,
                "fsm_state": "idle"
                if task_id is None
                else "assigned"
                if accepted_at is None
                else "working",
            }
            for agent, hub, name, status, capabilities, connected_at, task_id, accepted_at in rows
        ]

    def close(self) -> None:
        self._conn.close()

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except Exception:
            log.debug("connections_rollback_failed")


class Presence(HubActor):
    def __init__(
        self,
        task_queue: pykka.ActorRef[Any],
        pubsub: pykka.ActorRef[Any],
        timers: Timers,
        acceptance_timeout_ms: int,
        announce: PresenceFeed,
        post_office: pykka.ActorRef[Any] | None = None,
        clock: Clock = now_ms,
        *,
        cluster: Cluster | None = None,
        stores: Stores | None = None,
    ) -> None:
        super().__init__()
        self._announce = announce
        self._post_office_ref = post_office
        self._task_queue_ref = task_queue
        self._pubsub_ref = pubsub
        self._pubsub = pubsub.proxy()
        self._timers = timers
        self._acceptance_timeout_ms = acceptance_timeout_ms
        self._clock = clock
        self._agents: dict[str, _Connected] = {}
        self._cluster = cluster
        self._stores = stores
        self._table: ConnectionsTable | None = None
        if cluster is not None:
            if stores is None:
                raise TypeError("Presence on a cluster needs its stores")
            # Registered before the hub starts the listener; handlers only tell.
            ref = self.actor_ref
            cluster.listener.on(
                CONNECTIONS_CHANNEL,
                lambda notice: tell_quietly(
                    ref, ConnectedElsewhere(str(notice["agent_id"]), str(notice.get("to_hub")))
                ),
            )
            cluster.listener.on(EVENTS_CHANNEL, lambda notice: presence_events(ref, notice))

    def on_start(self) -> None:
        if self._cluster is not None:
            assert self._stores is not None
            self._table = ConnectionsTable(self._stores.connect("tasks"))
        self._pubsub.subscribe(RECLAIMS_TOPIC, self.actor_ref).get()

    def on_stop(self) -> None:
        agents = list(self._agents.values())
        for agent in agents:
            agent.link.close("shutdown")
            agent.fsm_ref.stop(block=True, timeout=STOP_TIMEOUT_S)
        if self._table is not None:
            rows = [(agent.agent_id, agent.connection_id) for agent in agents]
            self._in_table("deregister", lambda table: table.deregister(rows))
            self._table.close()

    def connect(self, identity: Identity, link: AgentLink) -> pykka.ActorRef[Any]:
        """Start the FSM for a newly identified connection, replacing any older one."""
        old = self._agents.pop(identity.agent_id, None)
        if old is not None:
            log.info("agent_replaced", agent_id=identity.agent_id)
            old.link.close("replaced")
            old.fsm_ref.stop(block=True, timeout=STOP_TIMEOUT_S)
            self._left(old)
        connected_at = self._clock()
        connection_id = uuid.uuid4().hex if self._cluster is not None else ""
        moved_from = None
        if self._table is not None:
            # Committed before the FSM starts: the lists of every hub show the
            # agent here from now on.
            assert self._cluster is not None
            hub_id = self._cluster.hub_id
            moved_from = self._in_table(
                "register",
                lambda table: table.register(hub_id, identity, connection_id, connected_at),
            )
        joined = {
            "agent_id": identity.agent_id,
            "name": identity.name,
            "capabilities": identity.capabilities,
            "connected_at": connected_at,
        }
        self._watched("agent_joined", connected_at, joined, identity.agent_id)
        fsm_ref = AgentFSM.start(
            agent_id=identity.agent_id,
            capabilities=identity.capability_names,
            link=link,
            task_queue=self._task_queue_ref,
            pubsub=self._pubsub_ref,
            timers=self._timers,
            acceptance_timeout_ms=self._acceptance_timeout_ms,
            post_office=self._post_office_ref,
            watchers=self._fsm_watchers(),
            clock=self._clock,
        )
        agent = _Connected(
            identity.agent_id,
            identity.name,
            identity.status,
            identity.capabilities,
            connected_at,
            link,
            fsm_ref,
            connection_id,
        )
        self._agents[identity.agent_id] = agent
        self._announce({"type": "agent_joined", "agent": agent.public()}, agent.agent_id)
        log.info("agent_connected", agent_id=identity.agent_id)
        if moved_from is not None:
            self._tell_replaced(agent, moved_from)
        return fsm_ref

    def _fsm_watchers(self) -> tuple[pykka.ActorRef[Any], ...]:
        """Who hears of an FSM's end: its task's owner, this registry, the post office."""
        watchers = (self._task_queue_ref, self.actor_ref)
        return watchers if self._post_office_ref is None else (*watchers, self._post_office_ref)

    def on_receive(self, message: Any) -> None:
        if isinstance(message, TaskReclaimed | TaskCancelled):
            # Taken back by a sweep or a cancel (any path the FSM did not start):
            # its FSM must stop holding it, or the agent would never get work again.
            holder = self._agents.get(message.agent_id)
            if holder is not None:
                tell_quietly(holder.fsm_ref, message)
        elif isinstance(message, AgentStopped):
            agent = self._agents.get(message.agent_id)
            if agent is not None and agent.fsm_ref.actor_urn == message.fsm_urn:
                del self._agents[message.agent_id]
                if self._table is not None:
                    # Before agent_left goes out: a hub hearing of it reads the table.
                    row = [(agent.agent_id, agent.connection_id)]
                    self._in_table("deregister", lambda table: table.deregister(row))
                self._left(agent)
        elif isinstance(message, ConnectedElsewhere):
            self._replaced_elsewhere(message.agent_id, message.to_hub)
        elif isinstance(message, PresenceElsewhere):
            self._presence_elsewhere(message.kind, message.agent_id)

    def set_status(self, agent_id: str, status: str) -> None:
        agent = self._agents.get(agent_id)
        if agent is not None and agent.status != status:
            agent.status = status
            if self._table is not None:
                connection_id = agent.connection_id
                self._in_table(
                    "set_status", lambda table: table.set_status(agent_id, connection_id, status)
                )
            self._announce({"type": "status_changed", "agent": agent.public()}, agent_id)

    def count(self) -> int:
        """Agents connected to this hub (``/api/health``)."""
        return len(self._agents)

    def list_agents(self) -> list[dict[str, Any]]:
        """Connected agents as ``/api/agents`` and ``list_agents`` show them: this
        hub's, then (several hubs) the other live hubs', each with its ``hub_id``."""
        here = [
            {**agent.public(), "fsm_state": snapshot["fsm_state"]}
            for agent, snapshot in self._snapshots(list(self._agents.values()))
        ]
        if self._cluster is None:
            return here
        hub_id = self._cluster.hub_id
        return [{**agent, "hub_id": hub_id} for agent in here] + [
            {field: agent[field] for field in _LISTED}
            for agent in self._remote()
            if agent["agent_id"] not in self._agents
        ]

    def agent_states(self, agent_id: str | None = None) -> list[dict[str, Any]]:
        """FSM states as ``/api/agents/states`` shows them (one agent if ``agent_id``):
        this hub's, then (several hubs) the other live hubs', each with its ``hub_id``."""
        if agent_id is None:
            agents = list(self._agents.values())
        else:
            agents = [self._agents[agent_id]] if agent_id in self._agents else []
        here = [
            {
                **snapshot,
                "capabilities": agent.capabilities,
                "connected_at": agent.connected_at,
                "name": agent.name,
            }
            for agent, snapshot in self._snapshots(agents)
        ]
        if self._cluster is None:
            return here
        hub_id = self._cluster.hub_id
        if agent_id is not None and here:
            return [{**here[0], "hub_id": hub_id}]
        return [{**state, "hub_id": hub_id} for state in here] + [
            {
                "agent_id": agent["agent_id"],
                "fsm_state": agent["fsm_state"],
                "current_task_id": agent["current_task_id"],
                "flags": [],  # known to the agent's own hub only
                "capabilities": agent["capabilities"],
                "connected_at": agent["connected_at"],
                "name": agent["name"],
                "hub_id": agent["hub_id"],
            }
            for agent in self._remote(agent_id)
            if agent["agent_id"] not in self._agents
        ]

    # --- several hubs ---------------------------------------------------------------

    def _remote(self, agent_id: str | None = None) -> list[dict[str, Any]]:
        """Agents on the other live hubs; none if the table cannot be read now."""
        assert self._cluster is not None
        hub_id = self._cluster.hub_id
        found = self._in_table("remote", lambda table: table.remote(hub_id, agent_id))
        return [] if found is None else found

    def _tell_replaced(self, agent: _Connected, moved_from: str) -> None:
        """Tell the hub the agent was connected to that this connection replaces its
        own: once the new FSM has started, so it has looked for (and taken over) the
        task the agent holds through that hub before that hub closes its connection."""
        # An ask is answered after on_start; an FSM that failed to start closes its
        # connection, and the other hub is told all the same.
        with contextlib.suppress(pykka.ActorDeadError, pykka.Timeout):
            agent.fsm_ref.proxy().agent_id.get(timeout=STOP_TIMEOUT_S)
        assert self._cluster is not None
        hub_id = self._cluster.hub_id
        log.info("agent_moved_here", agent_id=agent.agent_id, from_hub=moved_from)
        self._in_table(
            "tell_replaced",
            lambda table: table.tell_replaced(hub_id, agent.agent_id, agent.connection_id),
        )

    def _replaced_elsewhere(self, agent_id: str, to_hub: str) -> None:
        """Another hub took a connection of ``agent_id``: close this hub's, if it is older."""
        agent = self._agents.get(agent_id)
        if agent is None:
            return
        registered = self._in_table("connection_of", lambda table: table.connection_of(agent_id))
        if registered == agent.connection_id:
            return  # a notice older than this connection (made here since)
        log.info("agent_replaced", agent_id=agent_id, by_hub=to_hub)
        del self._agents[agent_id]
        agent.link.close("replaced")
        agent.fsm_ref.stop(block=True, timeout=STOP_TIMEOUT_S)
        self._left(agent)

    def _presence_elsewhere(self, kind: str, agent_id: str) -> None:
        """Tell the agents here of a join or leave on another hub, unless the table
        says otherwise by now (gone again; or only moved to another hub, or here)."""
        if agent_id in self._agents:
            return
        found = self._remote(agent_id)
        if kind == "agent_joined" and found:
            agent = found[0]
            self._announce(
                {"type": "agent_joined", "agent": {field: agent[field] for field in _PUBLIC}},
                agent_id,
            )
        elif kind == "agent_left" and not found:
            self._announce({"type": "agent_left", "agent_id": agent_id}, agent_id)

    def _in_table(self, what: str, call: Callable[[ConnectionsTable], T]) -> T | None:
        """Run ``call`` on the connections table; a failure is logged, not raised: the
        table is what other hubs know of this one, and an agent is served without it."""
        assert self._table is not None
        try:
            return call(self._table)
        except Exception as error:
            log.warning("connections_table_failed", what=what, error=" ".join(str(error).split()))
            return None

    def _snapshots(self, agents: list[_Connected]) -> list[tuple[_Connected, dict[str, Any]]]:
        futures = []
        for agent in agents:
            try:
                futures.append((agent, agent.fsm_ref.proxy().snapshot()))
            except pykka.ActorDeadError:
                continue  # stopping: its AgentStopped notice is on its way
        snapshots = []
        for agent, future in futures:
            try:
                snapshots.append((agent, future.get(timeout=STOP_TIMEOUT_S)))
            except pykka.ActorDeadError:
                continue
        return snapshots

    def _left(self, agent: _Connected) -> None:
        log.info("agent_left", agent_id=agent.agent_id)
        self._pubsub.publish.defer(
            AGENTS_TOPIC, [AgentLeft(agent.agent_id, agent.fsm_ref.actor_urn)]
        )
        self._watched("agent_left", self._clock(), {"agent_id": agent.agent_id}, agent.agent_id)
        self._announce({"type": "agent_left", "agent_id": agent.agent_id}, agent.agent_id)

    def _watched(self, kind: str, now: int, fields: dict[str, Any], agent_id: str) -> None:
        self._pubsub.publish.defer(EVENTS_TOPIC, [HubEvent(kind, now, fields, agent_id=agent_id)])
