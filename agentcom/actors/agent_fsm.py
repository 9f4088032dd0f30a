"""AgentFSM: one per identified connection; the hub's view of what that agent is doing.

Started by Presence when an agent identifies, stopped when its connection dies
(it watches the ``AgentLink``). States move only through ``TRANSITIONS``.
It relays the agent's lifecycle messages to TaskQueue, which is the authority
(fencing by agent and generation); it answers the agent through its link; it
tells the Scheduler it is idle; and it times out assignments the agent does
not accept, flagging the agent ``unresponsive``. However it ends, stopped or
crashed, its watchers (TaskQueue, Presence) are told which task it held, so
that task goes back to the queue at once. For the people watching, it publishes
an ``agent_state`` HubEvent on ``EVENTS_TOPIC`` when it starts, and after each
message that changed its state, flags or current task (``offline`` last).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Protocol

import pykka
import structlog

from agentcom.actors.base import HubActor, tell_quietly
from agentcom.actors.death_watch import DeathWatch
from agentcom.clock import Clock, now_ms
from agentcom.messages import (
    AGENTS_TOPIC,
    EVENTS_TOPIC,
    AcceptanceDue,
    AgentAccepted,
    AgentCompleted,
    AgentFailed,
    AgentIdle,
    AgentOnline,
    AgentRecovering,
    AgentRejected,
    AgentReportedProgress,
    AgentStopped,
    AssignmentMade,
    ConnectionClosed,
    HubEvent,
    IdleDue,
    ReclaimCause,
    StorageFull,
    TaskCancelled,
    TaskReclaimed,
    TaskRefused,
)
from agentcom.timers import TimerHandle, Timers

log = structlog.get_logger(__name__)

REPLY_TIMEOUT_S = 10.0
UNRESPONSIVE = "unresponsive"
BUSY = "busy"
BUSY_BACKOFF_MS = 1_000
MAX_BUSY_BACKOFF_MS = 30_000
STORAGE_RETRY_MS = 1_000  # when the store is full, how soon to retry a timed-out reclaim


_REFUSED = object()  # what _answer returns once it has told the agent why not


class FsmState(StrEnum):
    IDLE = "idle"
    ASSIGNED = "assigned"
    WORKING = "working"
    BLOCKED = "blocked"
    OFFLINE = "offline"


TRANSITIONS: dict[FsmState, set[FsmState]] = {
    FsmState.IDLE: {FsmState.ASSIGNED, FsmState.OFFLINE},
    FsmState.ASSIGNED: {FsmState.WORKING, FsmState.IDLE, FsmState.OFFLINE},
    FsmState.WORKING: {FsmState.IDLE, FsmState.BLOCKED, FsmState.OFFLINE},
    FsmState.BLOCKED: {FsmState.WORKING, FsmState.IDLE, FsmState.OFFLINE},
    FsmState.OFFLINE: set(),
}


class InvalidTransition(Exception):
    def __init__(self, current: FsmState, wanted: FsmState) -> None:
        super().__init__(f"{current} -> {wanted}")


class AgentLink(Protocol):
    """The FSM's only way to its agent's socket (``http.bridge.Connection``)."""

    def send(self, frame: dict[str, Any]) -> None: ...

    def send_encoded(self, text: str) -> None:
        """Send a frame already encoded as JSON text (one encoding for many links)."""
        ...

    def close(self, reason: str) -> None: ...

    def watch(self, watcher: pykka.ActorRef[Any]) -> None: ...


class AgentFSM(HubActor):
    def __init__(
        self,
        agent_id: str,
        capabilities: frozenset[str],
        link: AgentLink,
        task_queue: pykka.ActorRef[Any],
        pubsub: pykka.ActorRef[Any],
        timers: Timers,
        acceptance_timeout_ms: int,
        post_office: pykka.ActorRef[Any] | None = None,
        watchers: Sequence[pykka.ActorRef[Any]] = (),
        clock: Clock = now_ms,
    ) -> None:
        super().__init__()
        self._post_office = post_office
        self.agent_id = agent_id
        self.capabilities = capabilities
        self.link = link
        self.state = FsmState.IDLE
        self.task_id: str | None = None
        self.generation: int | None = None
        self.flags: set[str] = set()
        self.stop_reason = "disconnected"
        self._task_queue = task_queue.proxy()
        self._pubsub = pubsub.proxy()
        self._timers = timers
        self._acceptance_timeout_ms = acceptance_timeout_ms
        self._acceptance_timer: TimerHandle | None = None
        self._idle_delay_ms = 0
        self._idle_epoch = 0
        self._clock = clock
        self.log = log.bind(agent_id=agent_id)
        self.death_watch = DeathWatch(self._stopped_notice)
        for watcher in watchers:
            self.death_watch.watch(watcher)
        self._shown: tuple[FsmState, frozenset[str], str | None] | None = None  # last agent_state

    # --- lifecycle ------------------------------------------------------------------

    def on_start(self) -> None:
        # Pykka calls neither on_stop nor on_failure when on_start fails: announce here.
        try:
            self.link.watch(self.actor_ref)
            held = self._task_queue.held_by(self.agent_id).get(timeout=REPLY_TIMEOUT_S)
            self.link.send({"type": "identified", "agent_id": self.agent_id})
            if self._post_office is not None:
                # After "identified" on the same link, so the agent's mail follows it.
                tell_quietly(
                    self._post_office, AgentOnline(self.agent_id, self.actor_urn, self.link)
                )
            if held is None:
                self._show_state()
                self._announce_idle()
                self.log.info("agent_fsm_started", fsm_state=self.state.value)
                return
            self.task_id, self.generation = held.task_id, held.generation
            if held.accepted:
                self._move(FsmState.ASSIGNED)
                self._move(FsmState.WORKING)
            else:
                self._move(FsmState.ASSIGNED)
                waited_ms = self._clock() - held.assigned_at
                self._arm_acceptance(max(0, self._acceptance_timeout_ms - waited_ms))
            self._show_state()
            self.log.info("agent_fsm_started", fsm_state=self.state.value, task_id=self.task_id)
        except Exception:
            self.death_watch.died("crashed")
            self.link.close("internal_error")
            raise

    def on_stop(self) -> None:
        self._cancel_acceptance()
        if self.state is not FsmState.OFFLINE:
            self._move(FsmState.OFFLINE)
        self._show_state()
        self.death_watch.died(self.stop_reason)
        self.log.info("agent_fsm_stopped", reason=self.stop_reason, task_id=self.task_id)

    def on_failure(self, *exc_info: object) -> None:
        self._cancel_acceptance()
        self.death_watch.died("crashed")
        self.link.close("internal_error")
        self.log.error("agent_fsm_crashed", task_id=self.task_id)

    def _stopped_notice(self, reason: str) -> AgentStopped:
        return AgentStopped(self.agent_id, self.actor_urn, self.task_id, self.generation, reason)

    # --- queries --------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "fsm_state": self.state.value,
            "current_task_id": self.task_id,
            "flags": sorted(self.flags),
        }

    # --- messages ---------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        try:
            return self._handle(message)
        finally:
            self._show_state()

    def _handle(self, message: Any) -> Any:
        match message:
            case AssignmentMade(assignment):
                return self._deliver(assignment)
            case AgentAccepted(task_id):
                self._accepted(task_id)
            case AgentReportedProgress(task_id, blocked, progress):
                self._progressed(task_id, blocked, progress)
            case AgentCompleted(task_id, generation, result, tokens_used):
                self._completed(task_id, generation, result, tokens_used)
            case AgentFailed(task_id, generation, error):
                self._failed(task_id, generation, error)
            case AgentRejected(task_id, reason):
                self._rejected(task_id, reason)
            case AgentRecovering(task_id):
                self._recovering(task_id)
            case AcceptanceDue(task_id, generation):
                self._acceptance_due(task_id, generation)
            case IdleDue(epoch):
                if epoch == self._idle_epoch and self.state is FsmState.IDLE:
                    self._announce_idle()
            case TaskReclaimed(task_id, _, generation, cause):
                self._taken_back(task_id, generation, cause.value)
            case TaskCancelled(task_id, _, generation, reason):
                self._taken_back(task_id, generation, reason)
            case ConnectionClosed(reason):
                self.stop_reason = reason
                self.stop()
            case _:
                self.log.warning("agent_fsm_unknown_message", message=type(message).__name__)
        return None

    def _deliver(self, assignment: Any) -> bool:
        if (assignment.task_id, assignment.generation) == (self.task_id, self.generation):
            # The agent reconnected holding this task and its task_recovering
            # was handled before this offer of the same assignment arrived.
            self.log.info("assignment_already_held", task_id=assignment.task_id)
            return True
        if self.state is not FsmState.IDLE:
            self.log.info(
                "assignment_refused", task_id=assignment.task_id, fsm_state=self.state.value
            )
            return False
        self._move(FsmState.ASSIGNED)
        self.task_id, self.generation = assignment.task_id, assignment.generation
        self.link.send(assignment.frame())
        self._arm_acceptance(self._acceptance_timeout_ms)
        # TaskQueue's task_assigned (info) already names the task, agent and generation.
        self.log.debug("task_delivered", task_id=self.task_id, generation=self.generation)
        return True

    def _accepted(self, task_id: str) -> None:
        request = self._task_queue.accept(task_id, self.agent_id)
        if self._answer("task_accept_failed", task_id, request) is _REFUSED:
            return
        if task_id == self.task_id and self.state is FsmState.ASSIGNED:
            self._cancel_acceptance()
            self.flags.discard(UNRESPONSIVE)
            self._idle_delay_ms = 0
            self._move(FsmState.WORKING)
        self.link.send({"type": "task_ack", "task_id": task_id, "status": "accepted"})

    def _progressed(self, task_id: str, blocked: bool, progress: float | None) -> None:
        self._task_queue.progress.defer(task_id, self.agent_id, progress)
        if task_id != self.task_id:
            return
        if blocked and self.state is FsmState.WORKING:
            self._move(FsmState.BLOCKED)
        elif not blocked and self.state is FsmState.BLOCKED:
            self._move(FsmState.WORKING)

    def _completed(self, task_id: str, generation: int, result: Any, tokens: int | None) -> None:
        request = self._task_queue.complete(task_id, self.agent_id, generation, result, tokens)
        if self._answer("task_complete_failed", task_id, request) is _REFUSED:
            return
        self.link.send({"type": "task_ack", "task_id": task_id, "status": "complete"})
        self._finished(task_id)

    def _failed(self, task_id: str, generation: int, error: str | None) -> None:
        request = self._task_queue.fail(task_id, self.agent_id, generation, error)
        outcome = self._answer("task_fail_failed", task_id, request)
        if outcome is _REFUSED:
            return
        self.link.send({"type": "task_ack", "task_id": task_id, "status": outcome})
        self._finished(task_id)

    def _rejected(self, task_id: str, reason: str | None) -> None:
        request = self._task_queue.reject(task_id, self.agent_id, reason)
        if self._answer("task_reject_failed", task_id, request) is _REFUSED:
            return
        self.link.send({"type": "task_ack", "task_id": task_id, "status": "rejected"})
        if reason == BUSY:
            # The agent is still running something the hub no longer counts
            # (a task the sweep took back). Offering it work again at once
            # would bounce a task off it many times a second: wait, longer
            # each time it says busy, until it accepts something.
            self._idle_delay_ms = min(
                max(self._idle_delay_ms * 2, BUSY_BACKOFF_MS), MAX_BUSY_BACKOFF_MS
            )
        self._finished(task_id)

    def _recovering(self, task_id: str) -> None:
        request = self._task_queue.recover(task_id, self.agent_id)
        generation = self._answer("task_recover_failed", task_id, request)
        if generation is _REFUSED:
            return
        if generation is None:
            self.link.send({"type": "task_reassign", "task_id": task_id})
            if task_id == self.task_id:
                self._finished(task_id)
            return
        if self.state is FsmState.IDLE:
            # Held without our knowing (it cannot normally happen: on_start picks
            # it up). Adopt it; a concurrent offer will be refused and reclaimed.
            self._move(FsmState.ASSIGNED)
        self.task_id, self.generation = task_id, generation
        if self.state is FsmState.ASSIGNED:
            self._cancel_acceptance()
            self._move(FsmState.WORKING)
        self.link.send({"type": "task_continue", "task_id": task_id, "generation": generation})

    def _acceptance_due(self, task_id: str, generation: int) -> None:
        if (
            self.state is not FsmState.ASSIGNED
            or task_id != self.task_id
            or generation != self.generation
        ):
            return  # stale: accepted, finished or replaced since the timer was armed
        try:
            self._task_queue.reclaim(task_id, generation, ReclaimCause.ACCEPTANCE_TIMEOUT).get(
                timeout=REPLY_TIMEOUT_S
            )
        except StorageFull:
            # Nothing was taken back; try again soon rather than crash the FSM
            # (and close the agent's socket) over a full disk.
            self.log.warning("acceptance_timeout_deferred", task_id=task_id, reason="storage_full")
            self._arm_acceptance(STORAGE_RETRY_MS)
            return
        self.flags.add(UNRESPONSIVE)
        self.log.warning("acceptance_timed_out", task_id=task_id, generation=generation)
        self._tell_cancelled(task_id, ReclaimCause.ACCEPTANCE_TIMEOUT.value)
        self._finished(task_id)

    def _taken_back(self, task_id: str, generation: int, reason: str) -> None:
        """Reclaimed (stuck, overdue, acceptance timeout by the sweep) or cancelled."""
        if task_id == self.task_id and generation == self.generation:
            self.log.warning("task_taken_back", task_id=task_id, reason=reason)
            self._tell_cancelled(task_id, reason)
            self._finished(task_id)

    def _tell_cancelled(self, task_id: str, reason: str) -> None:
        """Stop the agent spending time on work whose result would be refused."""
        self.link.send(
            {
                "type": "task_cancelled",
                "task_id": task_id,
                "reason": reason,
                "timestamp": self._clock(),
            }
        )

    # --- internals ----------------------------------------------------------------------

    def _answer(self, error: str, task_id: str, request: pykka.Future[Any]) -> Any:
        """TaskQueue's answer, or ``_REFUSED`` once the agent has been told why not."""
        try:
            return request.get(timeout=REPLY_TIMEOUT_S)
        except TaskRefused as refused:
            reason = refused.reason
        except pykka.Timeout:
            # The request may still be carried out; the agent learns the outcome
            # from a retry (refused as not_assigned once done) or from the task.
            reason = "hub_busy"
        self.log.info(error, task_id=task_id, reason=reason)
        self.link.send({"type": "error", "error": f"{error}: {reason}"})
        return _REFUSED

    def _finished(self, task_id: str) -> None:
        """The task this FSM held is no longer its own: back to idle."""
        if task_id != self.task_id or self.state in (FsmState.IDLE, FsmState.OFFLINE):
            return
        self._cancel_acceptance()
        self.task_id = self.generation = None
        self._move(FsmState.IDLE)
        if self._idle_delay_ms:
            self._idle_epoch += 1
            ref, due = self.actor_ref, IdleDue(self._idle_epoch)
            self._timers.call_later(self._idle_delay_ms / 1000, lambda: tell_quietly(ref, due))
        else:
            self._announce_idle()

    def _show_state(self) -> None:
        """Publish ``agent_state`` if the state, flags or task changed since the last one."""
        shown = (self.state, frozenset(self.flags), self.task_id)
        if shown == self._shown:
            return
        self._shown = shown
        fields = {
            "agent_id": self.agent_id,
            "fsm_state": self.state.value,
            "flags": sorted(self.flags),
            "current_task_id": self.task_id,
        }
        event = HubEvent("agent_state", self._clock(), fields, agent_id=self.agent_id)
        try:
            self._pubsub.publish.defer(EVENTS_TOPIC, [event])
        except pykka.ActorDeadError:
            self.log.debug("pubsub_gone", event="agent_state")

    def _announce_idle(self) -> None:
        event = AgentIdle(
            self.agent_id,
            self.actor_urn,
            self.actor_ref,
            self.capabilities,
            UNRESPONSIVE in self.flags,
        )
        self._pubsub.publish.defer(AGENTS_TOPIC, [event])

    def _move(self, to: FsmState) -> None:
        if to not in TRANSITIONS[self.state]:
            raise InvalidTransition(self.state, to)
        self.log.debug("agent_fsm_moved", from_state=self.state.value, to_state=to.value)
        self.state = to

    def _arm_acceptance(self, delay_ms: int) -> None:
        self._cancel_acceptance()
        assert self.task_id is not None and self.generation is not None
        ref, due = self.actor_ref, AcceptanceDue(self.task_id, self.generation)
        self._acceptance_timer = self._timers.call_later(
            delay_ms / 1000, lambda: tell_quietly(ref, due)
        )

    def _cancel_acceptance(self) -> None:
        if self._acceptance_timer is not None:
            self._acceptance_timer.cancel()
            self._acceptance_timer = None
