"""Worker: the one place that decides what this agent does with its task.

Everything that can happen (a frame from the hub, the connection coming or
going, the command starting or ending, a progress tick, a signal, a timer)
becomes an event on one queue, and `Worker` handles them one at a time, so no
two decisions interleave. The rules:

- `task_assign` with a task id not of the hub's shape (`task-` and 16
  lowercase hex digits, see `assignment`): `task_rejected` `invalid_task_id`,
  before anything is written; one missing its generation: `task_rejected`
  `malformed_assignment`.
- `task_assign` while idle: record the task in the state file, then send
  `task_accepted`, then run it. While holding another task: `task_rejected`
  `busy`; while draining: `task_rejected` `shutdown`. For the task already
  held (the hub took it back and offers it again): adopt the new generation
  and carry on; the command is not started a second time.
- The hubs (`--hub`, one or more URLs sharing one queue) are tried in turn:
  a hub that cannot be reached or drops the connection is followed by the
  next, with the backoff's wait once per pass over the list
  (`connection.HubRotation`).
- Each new connection with a task held (found in the state file after a
  crash, or still running across a lost connection), to whichever hub:
  `task_recovering`, and nothing is reported until the hub answers.
  `task_continue`: adopt its generation, then report the outcome if there is
  one, else keep the command running, else run it. `task_reassign`: end the
  command, forget the task.
- `task_cancelled` for the held task (the hub cancelled it, or took it back
  from us while we are connected: stuck, overdue, acceptance_timeout): end
  the command (SIGTERM to its group, SIGKILL after `--kill-grace`), report
  nothing, forget the task; the hub counts us idle again and offers the next
  one. For any other task id (stale, or one already finished): log, ignore.
  Whichever of the command's end and the cancel is handled first wins, as
  events are handled one at a time: a cancel handled first leaves nothing to
  report, even if the command had just exited (its run is cancelled before it
  yields an outcome, and any outcome it queued is dropped with the run); an
  outcome handled first was sent before the worker knew of the cancel, and
  the hub settles it (done if it came before the cancel, else refused).
- The command ends: the outcome goes to the state file, then to the hub under
  the held generation, once per connection. The task is forgotten when the hub
  acknowledges the outcome or refuses it (such as `stale_generation`). A
  refused report is not retried, unless the hub gave the task to us again
  after it was sent: then it is said once more, under the new generation.
  Nothing is completed twice: the hub accepts one report per generation.
- Shutdown (SIGTERM/SIGINT): take no new task; let the running one finish
  for `--drain-timeout`, then end it and hand it back with `task_rejected`
  `shutdown`; exit once the hub has answered, or after a short bound.

What the hub has not acknowledged stays in the state file, so a restart picks
up where this process stopped; a command the dead process left running is
ended first, so that the task never runs twice at once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import structlog

from agentcom.worker.assignment import Assignment, MalformedAssignment
from agentcom.worker.config import WorkerConfig
from agentcom.worker.connection import (
    CredentialsRejected,
    HubConnection,
    HubRotation,
    HubUnavailable,
    hub_is_leaving,
    open_connection,
)
from agentcom.worker.outcome import Completed, Failed, Outcome
from agentcom.worker.process import CommandGroup, end_process_group, group_is_alive
from agentcom.worker.runner import RunHooks, Runner
from agentcom.worker.state import HeldTask, StateFile

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_CREDENTIALS_REJECTED = 3
# After the drain timeout, how long to wait for the hub to acknowledge what was
# sent before exiting anyway; the state file still has it for the next start.
FINAL_ACK_SECONDS = 5.0
REPORT_REFUSED_ERRORS = ("task_complete_failed", "task_fail_failed")


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    connection: HubConnection


@dataclass(frozen=True, slots=True)
class FrameReceived:
    connection: HubConnection
    frame: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Disconnected:
    connection: HubConnection
    reason: str | None


@dataclass(frozen=True, slots=True)
class CredentialsRefused:
    error: str


@dataclass(frozen=True, slots=True)
class AgentStarted:
    run: asyncio.Task[None]


@dataclass(frozen=True, slots=True)
class RunEnded:
    run: asyncio.Task[None]
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class ProgressDue:
    pass


@dataclass(frozen=True, slots=True)
class ShutdownRequested:
    signal_name: str


@dataclass(frozen=True, slots=True)
class DrainTimedOut:
    pass


@dataclass(frozen=True, slots=True)
class GiveUpDue:
    pass


Event = (
    Connected
    | FrameReceived
    | Disconnected
    | CredentialsRefused
    | AgentStarted
    | RunEnded
    | ProgressDue
    | ShutdownRequested
    | DrainTimedOut
    | GiveUpDue
)
Connect = Callable[[str, str], Awaitable[HubConnection]]  # (url, status)


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        runner: Runner,
        state: StateFile,
        connect: Connect | None = None,
    ) -> None:
        self._config = config
        self._runner = runner
        self._state = state
        self._connect: Connect = connect or partial(open_connection, config)
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._exit_code: int | None = None

        self._held: HeldTask | None = None
        self._resume_on_next_run = False  # the held task came from an earlier process
        self._run: asyncio.Task[None] | None = None

        self._connection: HubConnection | None = None
        # What the current connection has settled about the held task:
        self._confirmed = False  # the hub holds it as ours under held.assignment.generation
        self._accepting = False  # task_accepted sent, no ack yet
        self._reported: int | None = None  # generation of an outcome sent, no ack or refusal yet
        self._handing_back = False  # task_rejected shutdown sent, no ack yet

        self._draining = False
        self._timers: list[asyncio.TimerHandle] = []

    # --- main loop ------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until shutdown; returns the process exit status."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._events.put_nowait, ShutdownRequested(signum.name))
        background: list[asyncio.Task[None]] = []
        try:
            await self._recover_state()
            background += [
                asyncio.create_task(self._keep_connected(), name="hub-connection"),
                asyncio.create_task(self._tick_progress(), name="progress-ticker"),
            ]
            while self._exit_code is None:
                await self._handle(await self._events.get())
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            for timer in self._timers:
                timer.cancel()
            await self._stop_run()
            await self._close(background)
        log.info("worker_stopped", exit_code=self._exit_code)
        return self._exit_code

    async def _recover_state(self) -> None:
        """Pick up the task an earlier process held; end the command it left running."""
        held = self._state.load()
        if held is None:
            return
        log.info(
            "task_found_in_state_file",
            task_id=held.assignment.task_id,
            generation=held.assignment.generation,
            finished=held.outcome is not None,
        )
        group = held.command_group
        if group is not None:
            # Its output pipes died with the old worker, so its result is lost
            # anyway; left running, it would work alongside the rerun.
            if group.may_still_run() and group_is_alive(group.pgid):
                orphan_log = log.bind(task_id=held.assignment.task_id)
                orphan_log.warning("orphaned_command_ending", pgid=group.pgid)
                await end_process_group(group.pgid, self._config.kill_grace, orphan_log)
            held = replace(held, command_group=None)
            self._state.save(held)
        self._held = held
        self._resume_on_next_run = True

    async def _handle(self, event: Event) -> None:
        match event:
            case Connected(connection):
                await self._on_connected(connection)
            case FrameReceived(connection, frame) if connection is self._connection:
                await self._on_frame(frame)
            case Disconnected(connection, reason) if connection is self._connection:
                self._on_disconnected(connection, reason)
            case CredentialsRefused(error):
                log.error(
                    "hub_rejected_credentials",
                    error=error,
                    hint="check --agent-id and --token; create a token with "
                    "`python -m agentcom token create AGENT_ID`",
                )
                self._exit_code = EXIT_CREDENTIALS_REJECTED
            case AgentStarted(run) if run is self._run:
                await self._send_progress()
            case RunEnded(run, outcome) if run is self._run:
                await self._on_run_ended(outcome)
            case ProgressDue() if self._run is not None:
                await self._send_progress()
            case ShutdownRequested(signal_name):
                await self._on_shutdown_requested(signal_name)
            case DrainTimedOut():
                await self._on_drain_timed_out()
            case GiveUpDue():
                log.warning("shutdown_without_ack", task_id=self._held_task_id())
                self._exit_code = EXIT_OK
        if self._draining and self._exit_code is None and self._drained():
            self._exit_code = EXIT_OK

    # --- the connection --------------------------------------------------------------------

    async def _keep_connected(self) -> None:
        """Connect, pass frames on as events, and after any loss connect again, to the next hub."""
        hubs = HubRotation(self._config.hubs)
        attempt = 0
        while True:
            attempt += 1
            url = hubs.current
            log.info("hub_connecting", hub=url, attempt=attempt)
            try:
                connection = await self._connect(url, "working" if self._held else "idle")
            except CredentialsRejected as rejected:
                self._events.put_nowait(CredentialsRefused(rejected.error))
                return
            except HubUnavailable as error:
                log.warning("hub_connect_failed", hub=url, attempt=attempt, error=str(error))
                await hubs.next_hub("unreachable")
                continue
            hubs.connected()
            attempt = 0
            self._events.put_nowait(Connected(connection))
            while (frame := await connection.receive()) is not None:
                self._events.put_nowait(FrameReceived(connection, frame))
            self._events.put_nowait(Disconnected(connection, connection.close_reason))
            leaving = hub_is_leaving(connection.close_code, connection.close_reason)
            await hubs.next_hub("leaving" if leaving else "lost", leaving=leaving)

    async def _on_connected(self, connection: HubConnection) -> None:
        self._connection = connection
        self._reset_exchanges()
        log.info("hub_connected", hub=connection.url)
        if self._held is not None:
            # Whatever we believe, only the hub knows whether the task is still ours.
            log.info("task_recovering", task_id=self._held.assignment.task_id)
            await self._send({"type": "task_recovering", "task_id": self._held.assignment.task_id})

    def _on_disconnected(self, connection: HubConnection, reason: str | None) -> None:
        self._connection = None
        self._reset_exchanges()
        log.warning(
            "hub_connection_lost",
            hub=connection.url,
            reason=reason,
            task_id=self._held_task_id(),
            command_running=self._run is not None,
        )

    async def _send(self, frame: dict[str, Any]) -> bool:
        if self._connection is None:
            return False
        return await self._connection.send(frame)

    async def _close(self, background: list[asyncio.Task[None]]) -> None:
        for task in background:  # first, so nothing reconnects or reads meanwhile
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    # --- frames from the hub ---------------------------------------------------------------

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        match frame.get("type"):
            case "task_assign":
                await self._on_assign(frame)
            case "task_continue":
                await self._on_continue(frame)
            case "task_reassign":
                await self._on_reassign(frame)
            case "task_cancelled":
                await self._on_cancelled(frame)
            case "task_ack":
                self._on_ack(frame)
            case "error":
                await self._on_error(str(frame.get("error")))
            case other:
                log.debug("hub_frame_ignored", frame_type=other)

    async def _on_assign(self, frame: dict[str, Any]) -> None:
        try:
            assignment = Assignment.from_fields(frame)
        except MalformedAssignment as error:
            # Refused before anything is written: no state record, no file.
            log.error("task_assign_malformed", error=str(error), reason=error.reason)
            if isinstance(frame.get("task_id"), str):
                await self._reject(frame["task_id"], error.reason)
            return
        task_id, held = assignment.task_id, self._held
        if held is not None and held.assignment.task_id == task_id:
            # Not new work: the hub took our task back (a lost connection, a
            # sweep) and gives it to us again. Keep what was done; a report
            # already sent for the old generation is refused, and then repeated.
            log.info("task_assigned_again", task_id=task_id, generation=assignment.generation)
            self._hold(replace(held, assignment=assignment))
        elif self._draining:
            await self._reject(task_id, "shutdown")
            return
        elif held is not None:
            await self._reject(task_id, "busy")
            return
        else:
            log.info("task_assigned", task_id=task_id, generation=assignment.generation)
            self._hold(HeldTask(assignment))
        # The record is on disk before the hub hears that we took the task.
        self._accepting = await self._send({"type": "task_accepted", "task_id": task_id})
        self._confirmed = True
        await self._advance()

    async def _on_continue(self, frame: dict[str, Any]) -> None:
        task_id, generation = frame.get("task_id"), frame.get("generation")
        held = self._held
        if held is None or held.assignment.task_id != task_id or not isinstance(generation, int):
            log.warning("task_continue_unexpected", task_id=task_id, generation=generation)
            return
        log.info("task_continued", task_id=task_id, generation=generation)
        if generation != held.assignment.generation:
            self._hold(replace(held, assignment=held.assignment.with_generation(generation)))
        self._confirmed = True
        await self._advance()

    async def _on_reassign(self, frame: dict[str, Any]) -> None:
        if self._held is None or self._held.assignment.task_id != frame.get("task_id"):
            log.warning("task_reassign_unexpected", task_id=frame.get("task_id"))
            return
        await self._drop("reassigned")

    async def _on_cancelled(self, frame: dict[str, Any]) -> None:
        task_id = frame.get("task_id")
        cancel_log = log.bind(task_id=task_id, reason=frame.get("reason"))
        if self._held is None or self._held.assignment.task_id != task_id:
            # Sent before the hub saw our report, or about a task we never had:
            # whatever we hold now is not concerned.
            cancel_log.info("task_cancelled_ignored", held_task_id=self._held_task_id())
            return
        cancel_log.info(
            "task_cancelled",
            command_running=self._run is not None,
            outcome_known=self._held.outcome is not None,
        )
        # The hub refuses any report for the task from now on (not_assigned), so
        # none is sent, and an outcome known but unacknowledged goes with the task.
        await self._drop("cancelled")

    def _on_ack(self, frame: dict[str, Any]) -> None:
        task_id, status = frame.get("task_id"), frame.get("status")
        if self._held is None or self._held.assignment.task_id != task_id:
            log.debug("task_ack_ignored", task_id=task_id, status=status)
            return
        if status == "accepted":
            self._accepting = False
            log.info("task_accept_acknowledged", task_id=task_id)
        elif self._reported is not None and status in ("complete", "retried", "dead_letter"):
            self._forget(f"report_acknowledged_{status}")
        elif self._handing_back and status == "rejected":
            self._forget("handed_back")
        else:
            log.warning("task_ack_unexpected", task_id=task_id, status=status)

    async def _on_error(self, error: str) -> None:
        # Errors name no task, but this worker has at most one exchange about its
        # task in flight, so the error's prefix says which one it answers.
        held = self._held
        if (
            held is not None
            and self._reported is not None
            and error.startswith(REPORT_REFUSED_ERRORS)
        ):
            log.warning(
                "report_refused",
                task_id=held.assignment.task_id,
                generation=self._reported,
                error=error,
            )
            if self._reported == held.assignment.generation:
                self._forget("report_refused")
            else:  # sent before the hub gave us the task again: say it under the new generation
                self._reported = None
                await self._advance()
        elif self._handing_back and error.startswith("task_reject_failed"):
            self._forget("hand_back_refused")
        elif self._accepting and error.startswith("task_accept_failed"):
            log.warning("acceptance_refused", task_id=self._held_task_id(), error=error)
            await self._drop("acceptance_refused")
        else:
            log.warning("hub_error", error=error, task_id=self._held_task_id())

    # --- the held task ---------------------------------------------------------------------

    async def _advance(self) -> None:
        """Take the next step the held task needs, now that the hub confirmed it."""
        held = self._held
        if held is None or not self._confirmed:
            return
        if held.outcome is not None:
            if self._reported is None:
                await self._report(held.assignment, held.outcome)
        elif self._run is None:
            if self._draining:
                await self._hand_back()
            else:
                self._start_run(held.assignment)

    def _start_run(self, assignment: Assignment) -> None:
        resume, self._resume_on_next_run = self._resume_on_next_run, False
        log.info("task_started", task_id=assignment.task_id, resume=resume)
        self._run = asyncio.create_task(self._execute(assignment, resume), name="task-run")

    async def _execute(self, assignment: Assignment, resume: bool) -> None:
        run = asyncio.current_task()
        assert run is not None

        hooks = RunHooks(
            agent_started=lambda: self._events.put_nowait(AgentStarted(run)),
            command_spawned=lambda pgid: self._record_command_group(run, pgid),
        )
        try:
            outcome = await self._runner.run(assignment, resume=resume, hooks=hooks)
        except Exception as error:  # a bug in a runner must not leave the task hanging
            log.exception("task_run_crashed", task_id=assignment.task_id)
            outcome = Failed(f"worker error while running the task: {error!r}")
        self._events.put_nowait(RunEnded(run, outcome))

    def _record_command_group(self, run: asyncio.Task[None], pgid: int) -> None:
        # Called from inside the run, not through the event queue: the command
        # waits for this record before it starts (see runner.GATED_SHELL).
        if run is self._run and self._held is not None:
            self._hold(replace(self._held, command_group=CommandGroup.started_now(pgid)))

    async def _on_run_ended(self, outcome: Outcome) -> None:
        self._run = None
        assert self._held is not None
        log.info(
            "task_finished",
            task_id=self._held.assignment.task_id,
            outcome="completed" if isinstance(outcome, Completed) else "failed",
            error=outcome.error if isinstance(outcome, Failed) else None,
        )
        self._hold(replace(self._held, outcome=outcome, command_group=None))
        await self._advance()

    async def _send_progress(self) -> None:
        if self._held is not None and self._confirmed:
            await self._send({"type": "task_progress", "task_id": self._held.assignment.task_id})

    async def _report(self, assignment: Assignment, outcome: Outcome) -> None:
        frame = outcome.frame(assignment.task_id, assignment.generation)
        sent = await self._send(frame)
        self._reported = assignment.generation if sent else None
        log.info(
            "task_reported",
            task_id=assignment.task_id,
            generation=assignment.generation,
            frame_type=frame["type"],
            sent=sent,
        )

    async def _reject(self, task_id: str, reason: str) -> bool:
        log.info("task_rejected", task_id=task_id, reason=reason)
        return await self._send({"type": "task_rejected", "task_id": task_id, "reason": reason})

    async def _hand_back(self) -> None:
        assert self._held is not None
        self._handing_back = await self._reject(self._held.assignment.task_id, "shutdown")

    def _hold(self, held: HeldTask) -> None:
        self._state.save(held)
        self._held = held

    async def _drop(self, why: str) -> None:
        """Stop working on the held task (killing its command) and forget it."""
        await self._stop_run()
        self._forget(why)

    def _forget(self, why: str) -> None:
        log.info("task_forgotten", task_id=self._held_task_id(), why=why)
        self._state.clear()
        self._held = None
        self._resume_on_next_run = False
        self._reset_exchanges()

    def _reset_exchanges(self) -> None:
        """Nothing is settled with the hub about a task: a new connection, or no task."""
        self._confirmed = self._accepting = self._handing_back = False
        self._reported = None

    async def _stop_run(self) -> None:
        run, self._run = self._run, None
        if run is not None:
            run.cancel()  # the runner ends the command's process group before it returns
            await asyncio.gather(run, return_exceptions=True)

    def _held_task_id(self) -> str | None:
        return self._held.assignment.task_id if self._held is not None else None

    # --- shutdown ---------------------------------------------------------------------------

    async def _on_shutdown_requested(self, signal_name: str) -> None:
        if self._draining:
            log.warning("shutdown_forced", signal=signal_name, task_id=self._held_task_id())
            if self._run is None:
                self._exit_code = EXIT_OK  # only answers from the hub were left to wait for
            else:
                await self._on_drain_timed_out()
            return
        self._draining = True
        log.info(
            "shutdown_requested",
            signal=signal_name,
            task_id=self._held_task_id(),
            drain_timeout_s=self._config.drain_timeout,
        )
        drain = self._config.drain_timeout
        self._after(drain, DrainTimedOut())
        self._after(drain + self._config.kill_grace + FINAL_ACK_SECONDS, GiveUpDue())

    async def _on_drain_timed_out(self) -> None:
        if self._run is None:
            return
        log.warning("drain_timed_out", task_id=self._held_task_id())
        await self._stop_run()
        if self._confirmed:
            await self._hand_back()
        # Either way exit soon: a task handed back without an answer is still in
        # the state file, and the next start asks the hub about it.
        self._after(FINAL_ACK_SECONDS, GiveUpDue())

    def _drained(self) -> bool:
        """While draining: nothing left that is worth waiting for."""
        if self._held is None:
            return True
        if self._run is not None:
            return False
        awaiting_hub = not self._confirmed or self._reported is not None or self._handing_back
        return self._connection is None or not awaiting_hub

    def _after(self, delay: float, event: Event) -> None:
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(delay, self._events.put_nowait, event))

    # --- progress ---------------------------------------------------------------------------

    async def _tick_progress(self) -> None:
        while True:
            await asyncio.sleep(self._config.progress_interval)
            self._events.put_nowait(ProgressDue())
