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
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import pykka
import structlog

from agentcom.actors.base import CallbackFuture, HubActor, tell_quietly
from agentcom.messages import (
    AGENTS_TOPIC,
    TASKS_TOPIC,
    AgentIdle,
    AgentLeft,
    Assignment,
    AssignmentMade,
    IdleAgent,
    ReclaimCause,
    ScheduleDue,
    SweepDue,
    TaskQueued,
)
from agentcom.timers import TimerHandle, Timers

log = structlog.get_logger(__name__)


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
        self._idle: OrderedDict[str, AgentIdle] = OrderedDict()
        self._round_pending = False
        self._sweep_timer: TimerHandle | None = None

    def on_start(self) -> None:
        self._pubsub.subscribe(TASKS_TOPIC, self.actor_ref).get()
        self._pubsub.subscribe(AGENTS_TOPIC, self.actor_ref).get()
        self._arm_sweep()

    def on_stop(self) -> None:
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()

    def on_receive(self, message: Any) -> None:
        if isinstance(message, TaskQueued):
            self._want_round()
        elif isinstance(message, AgentIdle):
            self._idle.pop(message.agent_id, None)
            self._idle[message.agent_id] = message
            self._want_round()
        elif isinstance(message, AgentLeft):
            idle = self._idle.get(message.agent_id)
            if idle is not None and idle.fsm_urn == message.fsm_urn:
                del self._idle[message.agent_id]
        elif isinstance(message, ScheduleDue):
            self._round_pending = False
            self._round()
        elif isinstance(message, SweepDue):
            self._task_queue.sweep.defer(
                self._timing.stuck_threshold_ms, self._timing.acceptance_timeout_ms
            )
            self._arm_sweep()

    def idle_agents(self) -> list[str]:
        """Agent ids in the order the next round will offer them."""
        return [agent.agent_id for agent in self._preference_order()]

    def _want_round(self) -> None:
        if self._idle and not self._round_pending:
            self._round_pending = True
            self.actor_ref.tell(ScheduleDue())

    def _round(self) -> None:
        if not self._idle:
            return
        candidates = [
            IdleAgent(agent.agent_id, agent.capabilities) for agent in self._preference_order()
        ]
        assignments: list[Assignment] = self._task_queue.assign_next(candidates).get()
        for assignment in assignments:
            idle = self._idle.pop(assignment.agent_id)
            try:
                future = idle.fsm_ref.ask(AssignmentMade(assignment), block=False)
            except pykka.ActorDeadError:
                self._undelivered(assignment)
                continue
            assert isinstance(future, CallbackFuture)
            future.add_done_callback(functools.partial(self._check_delivery, assignment))

    def _preference_order(self) -> list[AgentIdle]:
        idle = list(self._idle.values())
        return [a for a in idle if not a.unresponsive] + [a for a in idle if a.unresponsive]

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
