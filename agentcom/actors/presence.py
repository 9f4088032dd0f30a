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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import pykka
import structlog

from agentcom.actors.agent_fsm import AgentFSM, AgentLink
from agentcom.actors.base import HubActor, tell_quietly
from agentcom.clock import Clock, now_ms
from agentcom.messages import (
    AGENTS_TOPIC,
    EVENTS_TOPIC,
    RECLAIMS_TOPIC,
    AgentLeft,
    AgentStopped,
    HubEvent,
    TaskCancelled,
    TaskReclaimed,
)
from agentcom.timers import Timers

log = structlog.get_logger(__name__)

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

    def on_start(self) -> None:
        self._pubsub.subscribe(RECLAIMS_TOPIC, self.actor_ref).get()

    def on_stop(self) -> None:
        for agent in list(self._agents.values()):
            agent.link.close("shutdown")
            agent.fsm_ref.stop(block=True, timeout=STOP_TIMEOUT_S)

    def connect(self, identity: Identity, link: AgentLink) -> pykka.ActorRef[Any]:
        """Start the FSM for a newly identified connection, replacing any older one."""
        old = self._agents.pop(identity.agent_id, None)
        if old is not None:
            log.info("agent_replaced", agent_id=identity.agent_id)
            old.link.close("replaced")
            old.fsm_ref.stop(block=True, timeout=STOP_TIMEOUT_S)
            self._left(old)
        connected_at = self._clock()
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
        )
        self._agents[identity.agent_id] = agent
        self._announce({"type": "agent_joined", "agent": agent.public()}, agent.agent_id)
        log.info("agent_connected", agent_id=identity.agent_id)
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
                self._left(agent)

    def set_status(self, agent_id: str, status: str) -> None:
        agent = self._agents.get(agent_id)
        if agent is not None and agent.status != status:
            agent.status = status
            self._announce({"type": "status_changed", "agent": agent.public()}, agent_id)

    def count(self) -> int:
        return len(self._agents)

    def list_agents(self) -> list[dict[str, Any]]:
        """Connected agents as ``/api/agents`` and ``list_agents`` show them."""
        return [
            {**agent.public(), "fsm_state": snapshot["fsm_state"]}
            for agent, snapshot in self._snapshots(list(self._agents.values()))
        ]

    def agent_states(self, agent_id: str | None = None) -> list[dict[str, Any]]:
        """FSM states as ``/api/agents/states`` shows them (one agent if ``agent_id``)."""
        if agent_id is None:
            agents = list(self._agents.values())
        else:
            agents = [self._agents[agent_id]] if agent_id in self._agents else []
        return [
            {
                **snapshot,
                "capabilities": agent.capabilities,
                "connected_at": agent.connected_at,
                "name": agent.name,
            }
            for agent, snapshot in self._snapshots(agents)
        ]

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
