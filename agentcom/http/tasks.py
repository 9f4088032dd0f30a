"""Task routes: submit, read, list, stats, dead letter, retry.

Every query value and the ``Idempotency-Key`` header are checked
(``validation``) before TaskQueue is asked anything. An ``agent`` token reads
and retries only the tasks it submitted or holds (TaskQueue filters by
``TokenInfo.task_scope``); any other task is "not found" to it, exactly as an
unknown id, so that it learns nothing of other agents' work.
"""

from __future__ import annotations

from agentcom.http.base import BaseHandler, HttpError
from agentcom.messages import IdempotencyKeyReused, Priority, Submitted, TaskSpec
from agentcom.validation import (
    TASK_SUBMISSION,
    Invalid,
    TaskListQuery,
    idempotency_key,
    page_query,
    task_list_query,
)


class TasksHandler(BaseHandler):
    async def post(self) -> None:
        submitter = await self.authenticate()
        try:
            key = idempotency_key(self.request.headers.get_list("Idempotency-Key"))
        except Invalid as invalid:
            raise HttpError(400, str(invalid)) from None
        body = self.json_body(TASK_SUBMISSION)
        spec = TaskSpec(
            description=body["description"],
            submitted_by=submitter.agent_id,
            priority=Priority.from_lane(body.get("priority") or "normal"),
            metadata=body.get("metadata") or {},
            needed_capabilities=tuple(body.get("needed_capabilities") or ()),
            max_retries=3 if body.get("max_retries") is None else body["max_retries"],
            complete_by=body.get("complete_by"),
        )
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
    async def get(self, task_id: str) -> None:
        reader = await self.authenticate()
        task = await self.ask(self.services.task_queue.get(task_id, reader.task_scope))
        if task is None:
            raise HttpError(404, "task_not_found")
        self.send_json(task)


class TaskRetryHandler(BaseHandler):
    async def post(self, task_id: str) -> None:
        caller = await self.authenticate()
        requeued = await self.ask(self.services.task_queue.retry(task_id, caller.task_scope))
        if requeued is None:
            raise HttpError(404, "dead_letter_task_not_found")
        self.send_json(requeued)
