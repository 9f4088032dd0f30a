"""TaskQueue: the durable queue. Owns the SQLite task table and the in-memory lanes.

Everything that changes a task happens here, one message at a time, so fencing
needs no locks: ``complete``/``fail`` must come from the agent the task is
assigned to, under the generation of that assignment (each assignment bumps
it). Queued and assigned tasks also live in memory (``_live`` and the
``QueuedIndex``), rebuilt from disk at start, so that scheduling, sweeps and
stats never scan the table; finished tasks are read from disk on request.

Priority aging (``priority_aging_ms``, see ``matching.py``) counts from a
task's ``created_at``: a task that goes back to the queue keeps its place in
its lane (its seq) and so its age too. It is a rule of matching, so the stored
priority never changes and the history records nothing; a task read here
(``get``, ``list_tasks``) shows the lane it competes in as
``effective_priority``, None when it is not queued.

As a ``StoreActor`` (``actors/base.py``) it handles every waiting message,
commits once, then replies and publishes: a reply or event never reports a
change that is not on disk. Each message runs in its own savepoint, so one bad
request cannot undo the others in its batch. Besides the topics the Scheduler
and the FSMs hear, every change people watch goes out as a ``HubEvent`` on
``EVENTS_TOPIC`` (``task_queued`` … ``task_requeued``), from the same outbox.
TaskQueue only ever ``tell``s (PubSub), so actors that block on its replies cannot deadlock with it.

Who may see a task is decided here too (``visible_to``): an agent token sees
the tasks it submitted or holds (held last); the HTTP layer passes None for
roles that read everything.

A full disk is an episode, not an error per request: the first write that
fails raises ``StorageFull`` (a refusal: memory goes back to what the store
holds), a warning is logged once, and until a write succeeds again each
message is committed on its own, so each refused request fails alone and
quietly. Fire-and-forget writes (progress, sweeps, death notices) are dropped
meanwhile; the sweep redoes what is due. The sweep also probes the store, so
the episode ends, and the scheduler is nudged, without waiting for traffic.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pykka
import structlog

from agentcom.actors.base import StoreActor, asked_method
from agentcom.clock import Clock, now_ms
from agentcom.cluster import TASKS_CHANNEL, notices
from agentcom.matching import QueuedIndex, effective_priority
from agentcom.messages import (
    EVENTS_TOPIC,
    FINISHED_STATUSES,
    QUEUE_TOPIC,
    RECLAIMS_TOPIC,
    AgentStopped,
    Assignment,
    HeldTask,
    HubEvent,
    IdempotencyKeyReused,
    IdleAgent,
    Priority,
    ReclaimCause,
    StorageFull,
    Submitted,
    TaskCancelled,
    TaskChanged,
    TaskFinished,
    TaskQueued,
    TaskReclaimed,
    TaskRefused,
    TaskSpec,
    TaskStatus,
)
from agentcom.store import TaskRecord, TaskStore
from agentcom.stores.interface import Stores

log = structlog.get_logger(__name__)

_STOP_CAUSES = {ReclaimCause.DISCONNECTED, ReclaimCause.REPLACED, ReclaimCause.CRASHED}

IDEMPOTENCY_TTL_MS = 24 * 60 * 60 * 1000
"""How long an Idempotency-Key returns its first task; older keys are ignored and pruned."""
KEYS_PRUNED_PER_SUBMIT = 16  # more than one per new key, so pruning keeps up with use
KEYS_PRUNED_PER_SWEEP = 1_000
RESCUED_PER_POLL = 1_000  # the rest go back at the next poll, a second later

# While the store is full, what these return when their write is refused: the
# scheduler must not see an error for a round that assigns nothing, and nobody
# waits for the others (their work is redone by the sweep).
_ANSWER_WHEN_FULL: dict[str, Any] = {"assign_next": [], "progress": None, "sweep": 0}


def _visible(task: TaskRecord, visible_to: str | None) -> bool:
    return visible_to is None or visible_to in (task.submitted_by, task.assigned_to)


def _still_held(old: TaskRecord, holder: str, fresh: TaskRecord | None) -> bool:
    """Whether ``holder`` holds the assignment of ``old`` in the store's row ``fresh``
    (through whichever hub: the agent may have moved)."""
    return (
        fresh is not None
        and fresh.status is TaskStatus.ASSIGNED
        and fresh.assigned_to == holder
        and fresh.generation == old.generation
    )


def _cause_of(fresh: TaskRecord | None) -> ReclaimCause:
    """Why another hub took a task back, as its history says (``hub_lost`` if it
    does not say: the task is gone, or it was not a reclaim)."""
    last = fresh.history[-1] if fresh is not None and fresh.history else {}
    cause = last.get("details", {}).get("cause") if last.get("event") == "reclaimed" else None
    return ReclaimCause(cause) if cause in set(ReclaimCause) else ReclaimCause.HUB_LOST


class TaskQueue(StoreActor[TaskStore, tuple[str, object]]):  # outbox: (topic, event)
    refusals = (TaskRefused,)  # StorageFull is one too; StoreActor handles it first

    def __init__(
        self,
        stores: Stores | Path,
        pubsub: pykka.ActorRef[Any],
        clock: Clock = now_ms,
        idempotency_ttl_ms: int = IDEMPOTENCY_TTL_MS,
        priority_aging_ms: int = 0,
        hub_id: str | None = None,
    ) -> None:
        super().__init__(stores, clock)
        # On a store several hubs share (PostgreSQL), this hub's id; None on SQLite.
        self._hub_id = hub_id
        self._changed: set[str] = set()  # tasks this batch wrote: the other hubs are told
        self._pubsub = pubsub.proxy()
        self._idempotency_ttl_ms = idempotency_ttl_ms
        self._aging_ms = priority_aging_ms
        self._live: dict[str, TaskRecord] = {}
        self._held_by: dict[str, str] = {}
        self._queued = self._new_index()
        self._counts: Counter[tuple[TaskStatus, Priority]] = Counter()

    # --- lifecycle -------------------------------------------------------------

    def on_start(self) -> None:
        self._db = self._stores.connect("tasks")
        self._store = TaskStore(self._db)
        self._load()
        log.info("task_queue_started", queued=len(self._queued), assigned=len(self._held_by))

    def _load(self) -> None:
        """Build the in-memory view (lanes, holders, counts) from what the store holds.

        Rebuilt after a failure, memory may find that a task one of this hub's
        agents held was taken from it meanwhile (by another hub, on a shared
        store): that agent's FSM is told, as when a notice says so; one it
        still holds through another hub stays adopted.
        """
        held_before = [(holder, self._live[task_id]) for holder, task_id in self._held_by.items()]
        self._live.clear()
        self._held_by.clear()
        self._queued = self._new_index()
        self._counts = Counter(self._store.counts())
        for task in self._store.live(self._hub_id):
            self._remember(task)
        for holder, old in held_before:
            if self._held_by.get(holder) != old.id:
                fresh = self._store.get(old.id)
                if _still_held(old, holder, fresh):
                    # Held through another hub still (a change of it not committed
                    # yet, say): keep watching it, so its notice finds it here.
                    assert fresh is not None
                    self._adopt(fresh)
                else:
                    self._tell_holder(old, holder, fresh)

    def on_stop(self) -> None:
        self._commit()  # with its notices to the other hubs
        self._db.close()
        log.info("task_queue_stopped")

    def _answer_when_full(self, message: Any, full: StorageFull) -> Any:
        if isinstance(message, AgentStopped):
            log.info("reclaim_deferred_storage_full", task_id=message.task_id)
            return None
        if (method := asked_method(message)) in _ANSWER_WHEN_FULL:
            return _ANSWER_WHEN_FULL[method]
        raise full

    def end_batch(self) -> None:
        if self.actor_stopped.is_set():
            self._flush()  # on_stop committed the last batch and closed the store
        else:
            super().end_batch()

    def _commit(self) -> bool:
        if self._hub_id is not None and self._changed:
            changed, self._changed = sorted(self._changed), set()
            for payload in notices(self._hub_id, "ids", changed):
                self._store.notify(TASKS_CHANNEL, payload)
        return super()._commit()

    def _flush(self) -> None:
        by_topic: dict[str, list[object]] = {}
        for topic, event in self._outbox:
            by_topic.setdefault(topic, []).append(event)
        self._outbox.clear()
        for topic, events in by_topic.items():
            self._pubsub.publish.defer(topic, events)

    def _publish(self, topic: str, event: object) -> None:
        self._outbox.append((topic, event))

    def _watched(self, kind: str, task: TaskRecord, now: int, **fields: Any) -> None:
        """A HubEvent about ``task`` for the people watching; sent after the commit."""
        agent_id = fields.get("agent_id")
        wire = {"task_id": task.id, **fields, "submitted_by": task.submitted_by}
        event = HubEvent(kind, now, wire, task.id, agent_id, task.submitted_by)
        self._outbox.append((EVENTS_TOPIC, event))

    def _storage_writable(self) -> None:
        super()._storage_writable()
        # Rounds that failed meanwhile assigned nothing: have the Scheduler try again.
        waiting = next((t for t in self._live.values() if t.status is TaskStatus.QUEUED), None)
        if waiting is not None:
            self._publish(QUEUE_TOPIC, TaskQueued(waiting.id, "storage_writable"))

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, AgentStopped):
            self._agent_stopped(message)
        return None

    # --- requests from submitters and operators -----------------------------------

    def submit(self, spec: TaskSpec) -> dict[str, Any]:
        return self._submit(spec, self._clock())

    def submit_many(self, specs: Sequence[TaskSpec]) -> list[dict[str, Any]]:
        """Queue every task of a batch, in order, in this one message: one savepoint,
        so all of them are committed or none."""
        now = self._clock()
        return [self._submit(spec, now) for spec in specs]

    def submit_once(self, spec: TaskSpec, key: str) -> Submitted:
        """Submit, unless ``spec.submitted_by`` used ``key`` within the key's lifetime.

        Then the answer is that first submission's reply, and nothing is queued;
        the same key for a different task is refused (``IdempotencyKeyReused``).
        Handled one message at a time, two concurrent requests with one key
        make one task. The key is stored in the task's transaction.
        """
        now = self._clock()
        fingerprint = spec.fingerprint()
        cutoff = now - self._idempotency_ttl_ms
        earlier = self._store.idempotent_reply(spec.submitted_by, key, since=cutoff + 1)
        if earlier is not None:
            if earlier[0] != fingerprint:
                raise IdempotencyKeyReused()
            reply = earlier[1]
            log.info(
                "task_submission_replayed", task_id=reply["task_id"], agent_id=spec.submitted_by
            )
            return Submitted(reply, replayed=True)
        reply = self._submit(spec, now)
        self._store.remember_key(spec.submitted_by, key, now, reply["task_id"], fingerprint, reply)
        self._store.forget_keys_before(cutoff + 1, KEYS_PRUNED_PER_SUBMIT)
        return Submitted(reply, replayed=False)

    def _submit(self, spec: TaskSpec, now: int) -> dict[str, Any]:
        task = TaskRecord(
            id=f"task-{secrets.token_hex(8)}",
            description=spec.description,
            priority=spec.priority,
            submitted_by=spec.submitted_by,
            created_at=now,
            updated_at=now,
            metadata=dict(spec.metadata or {}),
            max_retries=spec.max_retries,
            needed_capabilities=spec.needed_capabilities,
            complete_by=spec.complete_by,
        )
        task.record("queued", now, submitted_by=spec.submitted_by)
        self._store.insert(task)
        self._changed.add(task.id)
        self._counts[task.status, task.priority] += 1
        self._remember(task)
        self._publish(QUEUE_TOPIC, TaskQueued(task.id, "submitted"))
        self._watched(
            "task_queued",
            task,
            now,
            priority=task.priority.lane,
            needed_capabilities=list(task.needed_capabilities),
        )
        log.info("task_queued", task_id=task.id, priority=task.priority.lane)
        return {
            "status": "queued",
            "task_id": task.id,
            "priority": task.priority.lane,
            "created_at": task.created_at,
        }

    def get(self, task_id: str, visible_to: str | None = None) -> dict[str, Any] | None:
        """The task, or None if there is none that ``visible_to`` (an agent id) may see."""
        task = self._find(task_id)
        if task is None or not _visible(task, visible_to):
            return None
        return self._wire(task, self._clock())

    def list_tasks(
        self,
        status: TaskStatus | None = None,
        priority: Priority | None = None,
        assigned_to: str | None = None,
        limit: int | None = None,
        cursor: int = 0,
        visible_to: str | None = None,
    ) -> dict[str, Any]:
        """A page: ``tasks`` after ``cursor``, oldest first, and the ``next_cursor`` to
        ask for the next page with (None when this page is the last)."""
        more = None if limit is None else limit + 1
        found = self._store.select(
            status, priority, assigned_to, more, after=cursor, visible_to=visible_to
        )
        page = found if limit is None else found[:limit]
        next_cursor = None
        if limit is not None and len(found) > limit:
            next_cursor = page[-1].seq if page else cursor
        now = self._clock()
        return {"tasks": [self._wire(t, now) for t in page], "next_cursor": next_cursor}

    def dead_letter(
        self, limit: int | None = None, cursor: int = 0, visible_to: str | None = None
    ) -> dict[str, Any]:
        return self.list_tasks(
            status=TaskStatus.DEAD_LETTER, limit=limit, cursor=cursor, visible_to=visible_to
        )

    def stats(self) -> dict[str, Any]:
        # Other hubs change the table too: on a shared store the counts are read.
        counts = self._counts if self._hub_id is None else Counter(self._store.counts())
        by_status = {s.value: 0 for s in TaskStatus if s is not TaskStatus.DEAD_LETTER}
        by_priority = {p.lane: 0 for p in Priority}
        dead = 0
        for (status, priority), count in counts.items():
            if status is TaskStatus.DEAD_LETTER:
                dead += count
            else:
                by_status[status.value] += count
                by_priority[priority.lane] += count
        return {"by_status": by_status, "by_priority": by_priority, "dead_letter": dead}

    def retry(self, task_id: str, visible_to: str | None = None) -> dict[str, Any] | None:
        """Move a dead-letter task back to its lane with a fresh retry budget."""
        task = self._store.get(task_id) if task_id not in self._live else None
        if task is None or task.status is not TaskStatus.DEAD_LETTER:
            return None
        if not _visible(task, visible_to):
            return None
        now = self._clock()
        task.retry_count = 0
        task.record("queued", now, requeued_from="dead_letter")
        self._requeue(task, "requeued", now, changed="task_changed")
        self._watched("task_requeued", task, now)
        log.info("task_requeued", task_id=task_id)
        return {"status": "requeued", "task_id": task_id, "priority": task.priority.lane}

    def cancel(
        self, task_id: str, cancelled_by: str, reason: str | None, submitted_by: str | None = None
    ) -> dict[str, Any] | None:
        """Make a queued or assigned task ``cancelled``, for good.

        ``submitted_by`` (an agent token's id; None for an admin) must be the
        task's submitter: None is returned for a task it cannot see, exactly as
        for an unknown id, and ``TaskRefused("forbidden")`` for one it only
        holds. A finished task raises ``TaskFinished``, nothing changed. The
        holder of an assigned task hears of it through its FSM (``TaskCancelled``).
        """
        task = self._find(task_id)
        if task is None or not _visible(task, submitted_by):
            return None
        if submitted_by is not None and task.submitted_by != submitted_by:
            raise TaskRefused("forbidden")
        if task.status in FINISHED_STATUSES:
            raise TaskFinished(task.status)
        now = self._clock()
        previous, holder, generation = task.status, task.assigned_to, task.generation
        if previous is TaskStatus.QUEUED:
            self._queued.remove(task.id, task.priority, task.needed_capabilities)
        self._move(task, TaskStatus.CANCELLED)
        task.record(
            "cancelled",
            now,
            cancelled_by=cancelled_by,
            reason=reason,
            previous_status=previous.value,
            agent_id=holder,
        )
        # Like a dead-lettered task, it keeps its last holder in assigned_to.
        task.assigned_at = task.accepted_at = None
        task.updated_at = now
        self._save(task, "task_changed")
        self._forget(task, holder)
        if holder is not None:
            notice = TaskCancelled(task_id, holder, generation, reason or "cancelled")
            self._publish(RECLAIMS_TOPIC, notice)
        self._watched(
            "task_cancelled",
            task,
            now,
            agent_id=holder,
            cancelled_by=cancelled_by,
            reason=reason,
            previous_status=previous.value,
        )
        log.info(
            "task_cancelled",
            task_id=task_id,
            agent_id=holder,
            cancelled_by=cancelled_by,
            previous_status=previous.value,
        )
        return {"status": "cancelled", "task_id": task_id, "previous_status": previous.value}

    # --- the scheduler's side --------------------------------------------------------

    def assign_next(self, agents: Sequence[IdleAgent]) -> list[Assignment]:
        """Match queued tasks to ``agents`` (in preference order) and record each assignment."""
        if not self._queued or not agents:
            return []
        now = self._clock()
        assignments = []
        lost_claim: str | None = None
        for task_id, agent_id in self._queued.match(agents, now):
            task = self._live[task_id]
            self._move(task, TaskStatus.ASSIGNED)
            task.generation += 1
            task.assigned_to, task.assigned_at, task.accepted_at = agent_id, now, None
            task.hub_id = self._hub_id
            task.record("assigned", now, agent_id=agent_id, generation=task.generation)
            if not self._store.claim(task):
                # Another hub claimed (or cancelled) it first: memory takes the task
                # as it now is, and this agent waits for the next round, which must
                # come even if nothing else is queued meanwhile.
                self._lost_claim(task)
                lost_claim = task_id
                continue
            self._changed.add(task_id)
            self._held_by[agent_id] = task_id
            self._watched("task_assigned", task, now, agent_id=agent_id, generation=task.generation)
            log.info(
                "task_assigned", task_id=task_id, agent_id=agent_id, generation=task.generation
            )
            assignments.append(
                Assignment(
                    task_id=task_id,
                    agent_id=agent_id,
                    generation=task.generation,
                    description=task.description,
                    metadata=task.metadata,
                    assigned_at=now,
                    complete_by=task.complete_by,
                )
            )
        if lost_claim is not None and self._queued:
            self._publish(QUEUE_TOPIC, TaskQueued(lost_claim, "claim_lost"))
        return assignments

    def reclaim(self, task_id: str, generation: int, cause: ReclaimCause) -> bool:
        """Take back an assignment the agent did not give up itself, if it still stands."""
        task = self._live.get(task_id)
        if task is None or task.status is not TaskStatus.ASSIGNED or task.generation != generation:
            return False
        agent_id = task.assigned_to
        assert agent_id is not None
        self._take_back(task, agent_id, cause, self._clock())
        log.info("task_reclaimed", task_id=task_id, agent_id=agent_id, cause=cause.value)
        return True

    def _take_back(
        self, task: TaskRecord, agent_id: str, cause: ReclaimCause, now: int, **details: Any
    ) -> None:
        """Back to its lane from ``agent_id``, whose FSM is told to let go of it."""
        generation = task.generation
        task.record(
            "reclaimed", now, cause=cause.value, agent_id=agent_id, generation=generation, **details
        )
        self._requeue(task, "reclaimed", now)
        self._publish(RECLAIMS_TOPIC, TaskReclaimed(task.id, agent_id, generation, cause))
        self._watched("task_reclaimed", task, now, agent_id=agent_id, cause=cause.value)

    def sweep(self, stuck_threshold_ms: int, acceptance_timeout_ms: int) -> int:
        """Safety net for assignments nobody is watching; returns how many were taken back.

        Overdue tasks (past ``complete_by``) spend a retry, so a deadline nobody
        can meet ends in the dead letter instead of cycling forever.
        """
        now = self._clock()
        self._store.forget_keys_before(now - self._idempotency_ttl_ms + 1, KEYS_PRUNED_PER_SWEEP)
        self._probe_if_full(now)
        swept = 0
        for task_id in list(self._held_by.values()):
            task = self._live[task_id]
            assert task.assigned_at is not None
            if task.complete_by is not None and task.complete_by < now:
                # Whether it goes back to its lane or to the dead letter, its
                # holder's FSM must let go of it.
                assert task.assigned_to is not None
                self._publish(
                    RECLAIMS_TOPIC,
                    TaskReclaimed(task_id, task.assigned_to, task.generation, ReclaimCause.OVERDUE),
                )
                self._fail(task, f"overdue: not completed by {task.complete_by}", now, overdue=True)
            elif now - task.updated_at >= stuck_threshold_ms:
                self.reclaim(task_id, task.generation, ReclaimCause.STUCK)
            elif task.accepted_at is None and now - task.assigned_at >= acceptance_timeout_ms:
                self.reclaim(task_id, task.generation, ReclaimCause.ACCEPTANCE_TIMEOUT)
            else:
                continue
            swept += 1
        return swept

    # --- the agent's side (through its AgentFSM) ------------------------------------

    def held_by(self, agent_id: str) -> HeldTask | None:
        task_id = self._held_by.get(agent_id)
        if task_id is None and self._hub_id is not None:
            # Held through another hub, which died or which the agent left.
            elsewhere = self._store.held_by_agent(agent_id)
            if elsewhere is not None:
                task_id = self._adopt(elsewhere).id
        if task_id is None:
            return None
        task = self._live[task_id]
        assert task.assigned_at is not None
        return HeldTask(task_id, task.generation, task.accepted_at is not None, task.assigned_at)

    def accept(self, task_id: str, agent_id: str) -> None:
        task = self._assigned_to(task_id, agent_id)
        now = self._clock()
        task.accepted_at = task.updated_at = now
        self._save(task)
        self._watched("task_accepted", task, now, agent_id=agent_id)
        log.info("task_accepted", task_id=task_id, agent_id=agent_id)

    def progress(self, task_id: str, agent_id: str, progress: float | None = None) -> None:
        """A heartbeat; sent without waiting, so a stale one is ignored, never raised.

        ``progress`` (0 to 100, checked at the edge) is not stored: it only goes
        to the watchers, in the ``task_progress`` event.
        """
        task = self._held(task_id, agent_id)
        if task is None:
            log.info("stale_progress_ignored", task_id=task_id, agent_id=agent_id)
            return
        task.updated_at = self._clock()
        self._save(task)
        self._watched("task_progress", task, task.updated_at, agent_id=agent_id, progress=progress)

    def complete(
        self, task_id: str, agent_id: str, generation: int, result: Any, tokens_used: int | None
    ) -> None:
        task = self._assigned_to(task_id, agent_id, generation)
        now = self._clock()
        self._move(task, TaskStatus.COMPLETED)
        task.result, task.tokens_used = result, tokens_used
        task.record("completed", now, agent_id=agent_id, generation=generation)
        self._save(task)
        self._forget(task)
        self._watched("task_completed", task, now, agent_id=agent_id, generation=generation)
        log.info("task_completed", task_id=task_id, agent_id=agent_id, generation=generation)

    def fail(self, task_id: str, agent_id: str, generation: int, error: str | None) -> str:
        """Spend a retry; returns ``retried`` or ``dead_letter``."""
        task = self._assigned_to(task_id, agent_id, generation)
        return self._fail(task, error, self._clock(), overdue=False)

    def reject(self, task_id: str, agent_id: str, reason: str | None) -> None:
        """The agent hands the task back without trying it: no retry is spent."""
        task = self._assigned_to(task_id, agent_id)
        now = self._clock()
        task.record("rejected", now, agent_id=agent_id, reason=reason, generation=task.generation)
        self._requeue(task, "rejected", now)
        self._watched("task_rejected", task, now, agent_id=agent_id, reason=reason)
        log.info("task_rejected", task_id=task_id, agent_id=agent_id, reason=reason)

    def recover(self, task_id: str, agent_id: str) -> int | None:
        """The generation to continue under, or None if the agent must drop the task."""
        task = self._held(task_id, agent_id)
        if task is None:
            log.info("task_recovery_refused", task_id=task_id, agent_id=agent_id)
            return None
        # An agent recovering a task is working on it: that is acceptance too.
        task.updated_at = self._clock()
        task.accepted_at = task.accepted_at or task.updated_at
        self._save(task)
        log.info("task_recovery_continued", task_id=task_id, agent_id=agent_id)
        return task.generation

    def _agent_stopped(self, notice: AgentStopped) -> None:
        if notice.task_id is None or notice.generation is None:
            return
        # Stop reasons are causes by name; any other ending (shutdown) counts
        # as a disconnect.
        cause = (
            ReclaimCause(notice.reason)
            if notice.reason in _STOP_CAUSES
            else ReclaimCause.DISCONNECTED
        )
        self.reclaim(notice.task_id, notice.generation, cause)

    # --- several hubs (a PostgreSQL store, ``agentcom.cluster``) ----------------------

    def changed_elsewhere(self, task_ids: Sequence[str]) -> None:
        """Another hub committed changes to these tasks (its NOTIFY): re-read them."""
        found = {task.id: task for task in self._store.get_many(task_ids)}
        for task_id in task_ids:
            self._reconcile(task_id, found.get(task_id))

    def resync(self) -> int:
        """Make the queued tasks in memory those of the store; how many were wrong.

        The safety net under the notices: run after the listener (re)connects,
        and by the cluster poll when the counts differ (``poll``).
        """
        stored = self._store.queued_ids()
        kept = [task_id for task_id, task in self._live.items() if task.status is TaskStatus.QUEUED]
        wrong = [task_id for task_id in kept if task_id not in stored]
        missing = [task_id for task_id in stored if task_id not in self._queued]
        found = {task.id: task for task in self._store.get_many(wrong + missing)}
        for task_id in wrong + missing:
            self._reconcile(task_id, found.get(task_id))
        if wrong or missing:
            log.info("task_queue_resynced", dropped=len(wrong), added=len(missing))
        return len(wrong) + len(missing)

    def rejoin(self, hub_id: str) -> None:
        """This hub lost its lease and joined again as ``hub_id`` (HubLease): what its
        agents held under the old id is another hub's to rescue, or theirs to recover."""
        self._hub_id = hub_id
        self._load()

    def poll(self) -> None:
        """The cluster's periodic check: rescue tasks of hubs whose lease expired,
        and resync the queue if a notice was missed."""
        self._rescue()
        if self._store.count_queued() != len(self._queued):
            self.resync()

    def _rescue(self) -> None:
        """Tasks held through a hub whose lease expired go back to their lanes (cause
        ``hub_lost``), each a conditional update: a task its agent recovered on a
        live hub meanwhile, or that another hub rescued first, is left alone."""
        now = self._clock()
        for task in self._store.orphaned(RESCUED_PER_POLL):
            agent_id, lost_hub = task.assigned_to, task.hub_id
            assert agent_id is not None
            self._reconcile(task.id, task)
            task = self._live.get(task.id, task)
            try:
                self._take_back(task, agent_id, ReclaimCause.HUB_LOST, now, hub_id=lost_hub)
            except TaskChanged:
                # The copy in memory was changed before the write failed: drop it.
                self._live.pop(task.id, None)
                self._release(agent_id, task.id)
                self._reconcile(task.id, self._store.get(task.id))
                continue
            log.warning("task_rescued", task_id=task.id, agent_id=agent_id, hub_id=lost_hub)

    def _adopt(self, task: TaskRecord) -> TaskRecord:
        """Take over a task assigned to one of this hub's agents through another hub
        (which died, or which the agent left). Its next write (``recover``, as a
        rule) makes it this hub's, if it is still as read: the other hub's late
        reclaim, or a rescue, then finds it changed and does nothing."""
        assert task.assigned_to is not None
        task.hub_id = self._hub_id
        self._live[task.id] = task
        self._held_by[task.assigned_to] = task.id
        log.info("task_adopted", task_id=task.id, agent_id=task.assigned_to)
        return task

    def _lost_claim(self, task: TaskRecord) -> None:
        log.info("task_claimed_elsewhere", task_id=task.id)
        self._live.pop(task.id, None)
        self._reconcile(task.id, self._store.get(task.id))

    def _reconcile(self, task_id: str, fresh: TaskRecord | None) -> None:
        """Make memory agree with the store's row for one task, which another hub may
        have changed: queued tasks are matched here, and the tasks this hub's agents
        hold are watched; an agent whose task was taken from it is told (its FSM)."""
        old = self._live.get(task_id)
        if old is not None and fresh is not None and old.stored_key == fresh.stored_key:
            return
        if old is not None:
            del self._live[task_id]
            if old.status is TaskStatus.QUEUED:
                self._queued.remove(task_id, old.priority, old.needed_capabilities)
            holder = old.assigned_to
            if holder is not None and self._held_by.get(holder) == task_id:
                del self._held_by[holder]
                if not _still_held(old, holder, fresh):
                    self._tell_holder(old, holder, fresh)
        if fresh is None:
            return
        if fresh.status is TaskStatus.QUEUED:
            self._remember(fresh)
            if old is None or old.status is not TaskStatus.QUEUED:
                self._publish(QUEUE_TOPIC, TaskQueued(task_id, "queued_elsewhere"))
        elif fresh.status is TaskStatus.ASSIGNED and fresh.hub_id == self._hub_id:
            self._remember(fresh)

    def _tell_holder(self, old: TaskRecord, holder: str, fresh: TaskRecord | None) -> None:
        """The FSM of ``holder`` must let go of a task another hub took from it."""
        if fresh is not None and fresh.status is TaskStatus.CANCELLED:
            reason = fresh.history[-1]["details"].get("reason") if fresh.history else None
            self._publish(
                RECLAIMS_TOPIC,
                TaskCancelled(old.id, holder, old.generation, reason or "cancelled"),
            )
        else:
            self._publish(
                RECLAIMS_TOPIC, TaskReclaimed(old.id, holder, old.generation, _cause_of(fresh))
            )

    # --- internals ------------------------------------------------------------------

    def _wire(self, task: TaskRecord, now: int) -> dict[str, Any]:
        """The task as clients see it, with the lane it competes in if it is queued."""
        lane = None
        if task.status is TaskStatus.QUEUED:
            lane = effective_priority(task.priority, task.created_at, now, self._aging_ms).lane
        return {**task.to_wire(), "effective_priority": lane}

    def _find(self, task_id: str) -> TaskRecord | None:
        if self._hub_id is None:
            return self._live.get(task_id) or self._store.get(task_id)
        # Another hub may have changed it: the store's row is the truth.
        fresh = self._store.get(task_id)
        self._reconcile(task_id, fresh)
        return self._live.get(task_id) or fresh

    def _assigned_to(
        self, task_id: str, agent_id: str, generation: int | None = None
    ) -> TaskRecord:
        task = self._held(task_id, agent_id)
        if task is None:
            known = task_id in self._live or self._store.get(task_id) is not None
            raise TaskRefused("not_assigned" if known else "not_found")
        if generation is not None and generation != task.generation:
            raise TaskRefused("stale_generation")
        return task

    def _held(self, task_id: str, agent_id: str) -> TaskRecord | None:
        """The task if it is assigned to ``agent_id`` right now."""
        task = self._live.get(task_id)
        if task is None and self._hub_id is not None:
            fresh = self._store.get(task_id)
            # Only this agent's: a copy of another agent's task would go stale here
            # (its holder's writes do not change its key) and be swept from it.
            if fresh is not None and _still_held(fresh, agent_id, fresh):
                task = self._adopt(fresh)
        if task is None or task.status is not TaskStatus.ASSIGNED or task.assigned_to != agent_id:
            return None
        return task

    def _fail(self, task: TaskRecord, error: str | None, now: int, *, overdue: bool) -> str:
        agent_id = task.assigned_to
        task.retry_count += 1
        task.last_error = error
        if task.retry_count >= task.max_retries:
            task.record("dead_letter", now, error=error, retry_count=task.retry_count)
            self._move(task, TaskStatus.DEAD_LETTER)
            # assigned_to keeps its last holder, so an operator sees who failed it
            # (and that agent may still read it); a retry clears it (_requeue).
            task.assigned_at = task.accepted_at = None
            self._save(task)
            self._forget(task, agent_id)
            self._watched("task_dead_letter", task, now, agent_id=agent_id, error=error)
            log.warning("task_dead_lettered", task_id=task.id, agent_id=agent_id, error=error)
            return "dead_letter"
        if overdue:
            assert agent_id is not None
            generation = task.generation
            task.record(
                "reclaimed",
                now,
                cause=ReclaimCause.OVERDUE.value,
                agent_id=agent_id,
                generation=generation,
                retry_count=task.retry_count,
            )
            self._requeue(task, "reclaimed", now)
            self._watched(
                "task_reclaimed", task, now, agent_id=agent_id, cause=ReclaimCause.OVERDUE.value
            )
        else:
            task.record("retry", now, error=error, retry_count=task.retry_count, agent_id=agent_id)
            self._requeue(task, "retry", now)
            self._watched(
                "task_failed",
                task,
                now,
                agent_id=agent_id,
                error=error,
                retry_count=task.retry_count,
            )
        log.info("task_retried", task_id=task.id, agent_id=agent_id, retry_count=task.retry_count)
        return "retried"

    def _requeue(
        self, task: TaskRecord, cause: str, now: int, changed: str = "not_assigned"
    ) -> None:
        holder = task.assigned_to
        self._move(task, TaskStatus.QUEUED)
        task.assigned_to = task.assigned_at = task.accepted_at = None
        task.updated_at = now
        self._save(task, changed)
        self._release(holder, task.id)
        self._remember(task)
        self._publish(QUEUE_TOPIC, TaskQueued(task.id, cause))

    def _move(self, task: TaskRecord, status: TaskStatus) -> None:
        self._counts[task.status, task.priority] -= 1
        task.status = status
        self._counts[task.status, task.priority] += 1
        if status is not TaskStatus.ASSIGNED:
            task.hub_id = None

    def _save(self, task: TaskRecord, changed: str = "not_assigned") -> None:
        """Write ``task``, unless another hub changed it since it was read:
        then ``TaskChanged(changed)``, and nothing of the request is stored."""
        if not self._store.update(task):
            log.info("task_changed_elsewhere", task_id=task.id)
            raise TaskChanged(changed)
        self._changed.add(task.id)

    def _remember(self, task: TaskRecord) -> None:
        self._live[task.id] = task
        if task.status is TaskStatus.QUEUED:
            assert task.seq is not None
            self._queued.add(task.id, task.seq, task.priority, task.needed_capabilities)
        elif task.assigned_to is not None:
            self._held_by[task.assigned_to] = task.id

    def _new_index(self) -> QueuedIndex:
        return QueuedIndex(self._aging_ms, lambda task_id: self._live[task_id].created_at)

    def _forget(self, task: TaskRecord, holder: str | None = None) -> None:
        self._live.pop(task.id, None)
        self._release(holder or task.assigned_to, task.id)

    def _release(self, holder: str | None, task_id: str) -> None:
        if holder is not None and self._held_by.get(holder) == task_id:
            del self._held_by[holder]
