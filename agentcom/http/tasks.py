"""Task routes: submit, read, list, stats, dead letter, retry."""

from __future__ import annotations

from agentcom.http.base import BaseHandler, HttpError
from agentcom.messages import Priority, TaskSpec, TaskStatus
from agentcom.validation import LANES, TASK_SUBMISSION


class TasksHandler(BaseHandler):
    async def post(self) -> None:
        submitter = await self.authenticate()
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
        self.send_json(await self.ask(self.services.task_queue.submit(spec)), 201)

    async def get(self) -> None:
        await self.authenticate()
        status = self._choice("status", [s.value for s in TaskStatus])
        priority = self._choice("priority", list(LANES))
        limit = self.get_query_argument("limit", None)
        if limit is not None and not limit.isdigit():
            raise HttpError(400, "invalid_query: limit must be a non-negative integer")
        tasks = await self.ask(
            self.services.task_queue.list_tasks(
                status=TaskStatus(status) if status else None,
                priority=Priority.from_lane(priority) if priority else None,
                assigned_to=self.get_query_argument("assigned_to", None) or None,
                limit=int(limit) if limit is not None else None,
            )
        )
        self.send_json({"tasks": tasks, "count": len(tasks)})

    def _choice(self, name: str, allowed: list[str]) -> str | None:
        value = self.get_query_argument(name, None) or None
        if value is not None and value not in allowed:
            raise HttpError(400, f"invalid_query: {name} must be one of {', '.join(allowed)}")
        return value


class TaskStatsHandler(BaseHandler):
    async def get(self) -> None:
        await self.authenticate()
        self.send_json(await self.ask(self.services.task_queue.stats()))


class DeadLetterHandler(BaseHandler):
    async def get(self) -> None:
        await self.authenticate()
        tasks = await self.ask(self.services.task_queue.dead_letter())
        self.send_json({"tasks": tasks, "count": len(tasks)})


class TaskHandler(BaseHandler):
    async def get(self, task_id: str) -> None:
        await self.authenticate()
        task = await self.ask(self.services.task_queue.get(task_id))
        if task is None:
            raise HttpError(404, "task_not_found")
        self.send_json(task)


class TaskRetryHandler(BaseHandler):
    async def post(self, task_id: str) -> None:
        await self.authenticate()
        requeued = await self.ask(self.services.task_queue.retry(task_id))
        if requeued is None:
            raise HttpError(404, "dead_letter_task_not_found")
        self.send_json(requeued)
