"""Task routes: submit (one, or a batch), read, list, stats, dead letter, retry, cancel.

Every query value and the ``Idempotency-Key`` header are checked
(``validation``) before TaskQueue is asked anything. An ``agent`` token reads
and retries only the tasks it submitted or holds (TaskQueue filters by
``TokenInfo.task_scope``); any other task is "not found" to it, exactly as an
unknown id, so that it learns nothing of other agents' work. ``?wait=`` waits
on the EventHub (``http/events.py``), never by polling the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from agentcom.http.base import BaseHandler, HttpError
from agentcom.messages import (
    FINISHED_STATUSES,
    IdempotencyKeyReused,
    Priority,
    Submitted,
    TaskFinished,
    TaskRefused,
    TaskSpec,
)
from agentcom.validation import (
    CANCELLATION,
    TASK_BATCH,
    TASK_SUBMISSION,
    BatchElementInvalid,
    Invalid,
    TaskListQuery,
    batch_elements,
    idempotency_key,
    page_query,
    task_list_query,
    wait_query,
)


def _spec(body: Mapping[str, Any], submitted_by: str) -> TaskSpec:
    """A checked submission body as TaskQueue takes it, with the defaults filled in."""
    return TaskSpec(
        description=body["description"],
        submitted_by=submitted_by,
        priority=Priority.from_lane(body.get("priority") or "normal"),
        metadata=body.get("metadata") or {},
        needed_capabilities=tuple(body.get("needed_capabilities") or ()),
        max_retries=3 if body.get("max_retries") is None else body["max_retries"],
        complete_by=body.get("complete_by"),
    )


class TasksHandler(BaseHandler):
    async def post(self) -> None:
        submitter = await self.authenticate()
        try:
            key = idempotency_key(self.request.headers.get_list("Idempotency-Key"))
        except Invalid as invalid:
            raise HttpError(400, str(invalid)) from None
        spec = _spec(self.json_body(TASK_SUBMISSION), submitter.agent_id)
        if key is None:
            self.send_json(await self.ask(self.services.task_queue.submit(spec)), 201)
            return
        try:
            submitted: Submitted = await self.ask(self.services.task_queue.submit_once(spec, key))
        except IdempotencyKeyReused:
            raise HttpError(422, "idempotency_key_reused") from None
        if submitted.replayed:
            self.set_header("Idempotent-Replayed", "true")
        self.send_json(submitted.reply, 200 if submitted.replayed else 201)

    async def get(self) -> None:
        reader = await self.authenticate()
        query = _checked_query(self)
        page = await self.ask(
            self.services.task_queue.list_tasks(
                status=query.status,
                priority=query.priority,
                assigned_to=query.assigned_to,
                limit=query.limit,
                cursor=query.cursor,
                visible_to=reader.task_scope,
            )
        )
        self.send_json({**page, "count": len(page["tasks"])})


class TaskBatchHandler(BaseHandler):
    """``POST /api/tasks/batch``: up to 1,000 submissions, all or none, in one commit.

    Every element is checked before TaskQueue is asked anything, and TaskQueue
    queues the whole batch in one message, so one savepoint and one commit: a
    refusal (a bad element, a full disk) leaves nothing of it queued.
    """

    async def post(self) -> None:
        submitter = await self.authenticate()
        if self.request.headers.get_list("Idempotency-Key"):
            # Refused rather than ignored, so that nobody retries a batch
            # believing the key protects it from running twice.
            raise HttpError(400, "idempotency_key_not_supported: send keys with single tasks")
        try:
            bodies = batch_elements(self.json_body(TASK_BATCH)["tasks"])
        except BatchElementInvalid as invalid:
            raise HttpError(400, str(invalid), index=invalid.index) from None
        specs = [_spec(body, submitter.agent_id) for body in bodies]
        queued = await self.ask(self.services.task_queue.submit_many(specs))
        self.send_json({"tasks": queued, "count": len(queued)}, 201)


def _checked_query(handler: BaseHandler) -> TaskListQuery:
    try:
        return task_list_query(handler.request.query_arguments)
    except Invalid as invalid:
        raise HttpError(400, str(invalid)) from None


class TaskStatsHandler(BaseHandler):
    async def get(self) -> None:
        await self.authenticate()
        self.send_json(await self.ask(self.services.task_queue.stats()))


class DeadLetterHandler(BaseHandler):
    async def get(self) -> None:
        reader = await self.authenticate()
        try:
            limit, cursor = page_query(self.request.query_arguments)
        except Invalid as invalid:
            raise HttpError(400, str(invalid)) from None
        page = await self.ask(
            self.services.task_queue.dead_letter(
                limit=limit, cursor=cursor, visible_to=reader.task_scope
            )
        )
        self.send_json({**page, "count": len(page["tasks"])})


class TaskHandler(BaseHandler):
    """``GET /api/tasks/{id}``, and with ``?wait=S`` (0 < S <= 60) a long poll: the
    answer comes once the task is completed, dead-lettered or cancelled, or after S seconds.

    The waiter is registered with the EventHub before the task is read, so an
    end that lands in between is not missed; it is one future, not a thread.
    """

    _waiter: asyncio.Future[str] | None = None
    _gone = False

    async def get(self, task_id: str) -> None:
        reader = await self.authenticate()
        try:
            wait_s = wait_query(self.request.query_arguments)
        except Invalid as invalid:
            raise HttpError(400, str(invalid)) from None
        events = self.services.events
        if wait_s is None or events is None:
            self.send_json(await self._read(task_id, reader.task_scope))
            return
        self._waiter = events.wait_for_end(task_id)
        try:
            task = await self._read(task_id, reader.task_scope)
            if task["status"] not in FINISHED_STATUSES:
                with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(self._waiter), wait_s)
                if self._gone:
                    return
                task = await self._read(task_id, reader.task_scope)
        finally:
            events.stop_waiting(task_id, self._waiter)
        self.send_json(task)

    async def _read(self, task_id: str, scope: str | None) -> dict[str, Any]:
        task: dict[str, Any] | None = await self.ask(self.services.task_queue.get(task_id, scope))
        if task is None:
            raise HttpError(404, "task_not_found")
        return task

    def on_connection_close(self) -> None:
        # The caller hung up: stop waiting for it now rather than after S seconds.
        self._gone = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result("gone")


class TaskRetryHandler(BaseHandler):
    async def post(self, task_id: str) -> None:
        caller = await self.authenticate()
        requeued = await self.ask_while_changed(
            lambda: self.services.task_queue.retry(task_id, caller.task_scope)
        )
        if requeued is None:
            raise HttpError(404, "dead_letter_task_not_found")
        self.send_json(requeued)


class TaskCancelHandler(BaseHandler):
    """``POST /api/tasks/{id}/cancel``: its submitter or an admin calls a task off."""

    async def post(self, task_id: str) -> None:
        caller = await self.authenticate()
        body = self.json_body(CANCELLATION, optional=True)
        submitter = None if caller.role == "admin" else caller.agent_id
        try:
            cancelled = await self.ask_while_changed(
                lambda: self.services.task_queue.cancel(
                    task_id, caller.agent_id, body.get("reason"), submitter
                )
            )
        except TaskFinished as finished:
            # Not an HttpError: its ``status`` keyword is the HTTP status.
            self.send_json({"error": "task_finished", "status": finished.status.value}, 409)
            return
        except TaskRefused as refused:
            if refused.reason != "forbidden":
                raise
            raise HttpError(403, "forbidden") from None
        if cancelled is None:
            raise HttpError(404, "task_not_found")
        self.send_json(cancelled)
