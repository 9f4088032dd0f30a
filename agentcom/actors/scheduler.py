"""Scheduler: decides when to match queued tasks to idle agents, and delivers the matches.

Triggers are events: a task queued (submitted, retried, reclaimed, rejected,
requeued) or an agent idle (joined, or finished a task). Any number of triggers
that arrive together collapse into one ``ScheduleDue``, so a burst of events is
one matching round, never a storm. A round offers every idle agent to
TaskQueue's matcher in preference order: agents not flagged ``unresponsive``
first, each group longest idle first, so work spreads evenly. Each assignment
is then handed to the agent's FSM; if the FSM is gone or no longer idle, the
task is reclaimed at once.

The periodic sweep (stuck and overdue tasks, unaccepted orphans) is armed
here; it is a safety net, not the recovery path (see ``death_watch``).
"""

from __future__ import annotations

import functools
import itertools
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import pykka
import structlog

from agentcom.actors.base import CallbackFuture, HubActor, tell_quietly
from agentcom.messages import (
    AGENTS_TOPIC,
    QUEUE_TOPIC,
    AgentIdle,
    AgentLeft,
    Assignment,
    AssignmentMade,
    ClusterFenced,
    IdleAgent,
    ReclaimCause,
    ScheduleDue,
    SweepDue,
    TaskQueued,
)
from agentcom.timers import TimerHandle, Timers

log = structlog.get_logger(__name__)


OFFER_PER_GROUP = 64


@dataclass(frozen=True, slots=True)
class _Waiting:
    since: int  # idle order: lower has waited longer
    agent: AgentIdle


def _preference(waiting: _Waiting) -> tuple[bool, int]:
    """Agents not flagged unresponsive first; within each, the one idle longest."""
    return waiting.agent.unresponsive, waiting.since


@dataclass(frozen=True, slots=True)
class SchedulerTiming:
    stuck_threshold_ms: int
    acceptance_timeout_ms: int
    sweep_interval_ms: int


class Scheduler(HubActor):
    def __init__(
        self,
        task_queue: pykka.ActorRef[Any],
        pubsub: pykka.ActorRef[Any],
        timers: Timers,
        timing: SchedulerTiming,
    ) -> None:
        super().__init__()
        self._task_queue = task_queue.proxy()
        self._pubsub = pubsub.proxy()
        self._timers = timers
        self._timing = timing
        # Idle agents grouped by what they can do (and whether flagged), each
        # group in idle order; seq numbers order agents across groups.
        self._groups: dict[tuple[bool, frozenset[str]], OrderedDict[str, _Waiting]] = {}
        self._idle: dict[str, tuple[bool, frozenset[str]]] = {}
        self._idle_order = itertools.count()
        self._round_pending = False
        self._fenced = False  # the hub lost its lease (HubLease): no assignment now
        self._sweep_timer: TimerHandle | None = None

    def on_start(self) -> None:
        self._pubsub.subscribe(QUEUE_TOPIC, self.actor_ref).get()
        self._pubsub.subscribe(AGENTS_TOPIC, self.actor_ref).get()
        self._arm_sweep()

    def on_stop(self) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()

    def on_receive(self, message: Any) -> None:
        if isinstance(message, TaskQueued):
            self._want_round()
        elif isinstance(message, AgentIdle):
            self._remember(message)
            self._want_round()
        elif isinstance(message, AgentLeft):
            left = self._waiting(message.agent_id)
            if left is not None and left.agent.fsm_urn == message.fsm_urn:
                self._forget(message.agent_id)
        elif isinstance(message, ClusterFenced):
            self._fenced = message.fenced
            self._want_round()
        elif isinstance(message, ScheduleDue):
            self._round_pending = False
            self._round()
        elif isinstance(message, SweepDue):
            self._task_queue.sweep.defer(
                self._timing.stuck_threshold_ms, self._timing.acceptance_timeout_ms
            )
            self._arm_sweep()

    def idle_agents(self) -> list[str]:
        """Every idle agent id, in preference order (for operators and tests)."""
        everyone = [waiting for group in self._groups.values() for waiting in group.values()]
        return [waiting.agent.agent_id for waiting in sorted(everyone, key=_preference)]

    def _want_round(self) -> None:
        if self._idle and not self._round_pending:
            self._round_pending = True
            self.actor_ref.tell(ScheduleDue())

    def _round(self) -> None:
        if self._fenced:
            return
        offered = self._offer()
        if not offered:
            return
        candidates = [IdleAgent(w.agent.agent_id, w.agent.capabilities) for w in offered]
        try:
            assignments: list[Assignment] = self._task_queue.assign_next(candidates).get()
        except Exception:
            # The batch holding this request failed to commit (a full disk): no
            # assignment was made. Pykka would stop the Scheduler for good; the
            # next TaskQueued or AgentIdle starts another round.
            log.warning("matching_round_failed", exc_info=True)
            return
        if len(assignments) == len(offered) and len(self._idle) > len(offered):
            self._want_round()  # every agent offered got work: there may be more for the rest
        for assignment in assignments:
            waiting = self._forget(assignment.agent_id)
            assert waiting is not None
            try:
                future = waiting.agent.fsm_ref.ask(AssignmentMade(assignment), block=False)
            except pykka.ActorDeadError:
                self._undelivered(assignment)
                continue
            assert isinstance(future, CallbackFuture)
            future.add_done_callback(functools.partial(self._check_delivery, assignment))

    def _offer(self) -> list[_Waiting]:
        """The agents a round offers: from each group only the longest idle, so a
        round costs the same with a thousand idle agents as with ten."""
        offered = [
            waiting
            for group in self._groups.values()
            for waiting in itertools.islice(group.values(), OFFER_PER_GROUP)
        ]
        return sorted(offered, key=_preference)

    def _remember(self, agent: AgentIdle) -> None:
        self._forget(agent.agent_id)
        group = (agent.unresponsive, agent.capabilities)
        waiting = _Waiting(next(self._idle_order), agent)
        self._groups.setdefault(group, OrderedDict())[agent.agent_id] = waiting
        self._idle[agent.agent_id] = group

    def _waiting(self, agent_id: str) -> _Waiting | None:
        group = self._idle.get(agent_id)
        return None if group is None else self._groups[group][agent_id]

    def _forget(self, agent_id: str) -> _Waiting | None:
        """No longer idle; returns how it was waiting, if it was."""
        group = self._idle.pop(agent_id, None)
        if group is None:
            return None
        members = self._groups[group]
        waiting = members.pop(agent_id)
        if not members:
            del self._groups[group]
        return waiting

    def _check_delivery(self, assignment: Assignment, done: CallbackFuture) -> None:
        # Runs on the FSM's thread (or Pykka's teardown): only tell from here.
        try:
            delivered = done.get(timeout=0)
        except Exception:
            delivered = False
        if not delivered:
            self._undelivered(assignment)

    def _undelivered(self, assignment: Assignment) -> None:
        log.info("assignment_undelivered", task_id=assignment.task_id, agent_id=assignment.agent_id)
        self._task_queue.reclaim.defer(
            assignment.task_id, assignment.generation, ReclaimCause.DISCONNECTED
        )

    def _arm_sweep(self) -> None:
        ref = self.actor_ref
        self._sweep_timer = self._timers.call_later(
            self._timing.sweep_interval_ms / 1000, lambda: tell_quietly(ref, SweepDue())
        )
