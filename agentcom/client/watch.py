"""``agentcom watch``: the hub's state as its event stream tells it, drawn as text.

``HubView`` holds what the screen shows — connected agents, the tasks not
yet finished (and so the queue per lane), the tasks touched last and the
last events — loaded once over HTTP and then kept up to date by applying
each event; it does no I/O, so it is tested event by event. ``Screen``
redraws it in place on a terminal (the alternate screen, restored on exit).
"""

from __future__ import annotations

import collections
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from agentcom.client.models import AgentState, Event, Task
from agentcom.client.text import table

LANES = ("urgent", "high", "normal", "low")
_STATUS_AFTER = {
    "task_queued": "queued",
    "task_assigned": "assigned",
    "task_completed": "completed",
    "task_failed": "queued",  # back in its lane
    "task_reclaimed": "queued",
    "task_rejected": "queued",
    "task_dead_letter": "dead_letter",
    "task_requeued": "queued",
    "task_cancelled": "cancelled",
}
_FINISHED = frozenset({"completed", "dead_letter", "cancelled"})


@dataclass(slots=True)
class TaskRow:
    status: str
    priority: str
    agent: str | None = None
    progress: Any = None


@dataclass(slots=True)
class AgentRow:
    state: str
    task_id: str | None = None
    flags: tuple[str, ...] = ()


class HubView:
    def __init__(self, recent_tasks: int = 10, recent_events: int = 10) -> None:
        self.agents: dict[str, AgentRow] = {}
        self.tasks: dict[str, TaskRow] = {}
        self._recent_tasks: collections.deque[str] = collections.deque(maxlen=recent_tasks)
        self.events: collections.deque[Event] = collections.deque(maxlen=recent_events)
        self.loaded = False

    def load(self, agents: Iterable[AgentState], tasks: Iterable[Task]) -> None:
        """Start again from the hub's state (at start, and after a ``reset`` event)."""
        self.agents = {
            agent.agent_id: AgentRow(agent.fsm_state, agent.current_task_id, tuple(agent.flags))
            for agent in agents
        }
        self.tasks = {
            task.id: TaskRow(task.status, task.priority, task.assigned_to) for task in tasks
        }
        self._recent_tasks.clear()
        self.loaded = True

    def apply(self, event: Event) -> None:
        self.events.append(event)
        data = event.raw
        if event.task_id is not None and event.type.startswith("task_"):
            self._task_event(event.task_id, event.type, data)
        elif event.type == "agent_left" and event.agent_id is not None:
            self.agents.pop(event.agent_id, None)
        elif event.type in ("agent_joined", "agent_state") and event.agent_id is not None:
            row = self.agents.setdefault(event.agent_id, AgentRow("idle"))
            if event.type == "agent_state":
                row.state = data.get("fsm_state") or row.state
                row.task_id = data.get("current_task_id")
                row.flags = tuple(data.get("flags") or ())

    def _task_event(self, task_id: str, kind: str, data: dict[str, Any]) -> None:
        row = self.tasks.setdefault(task_id, TaskRow("queued", data.get("priority") or "?"))
        row.status = _STATUS_AFTER.get(kind, row.status)
        if kind == "task_queued":
            row.priority = data.get("priority") or row.priority
        if data.get("agent_id"):
            row.agent = data["agent_id"]
        if kind == "task_progress":
            row.progress = data.get("progress")
        if task_id in self._recent_tasks:
            self._recent_tasks.remove(task_id)
        self._recent_tasks.append(task_id)
        self._forget_finished()

    def _forget_finished(self) -> None:
        """Keep finished tasks only while they are among the recent ones shown."""
        shown = set(self._recent_tasks)
        for task_id in [t for t, row in self.tasks.items() if row.status in _FINISHED]:
            if task_id not in shown:
                del self.tasks[task_id]

    def queued_by_lane(self) -> dict[str, int]:
        lanes = dict.fromkeys(LANES, 0)
        for row in self.tasks.values():
            if row.status == "queued" and row.priority in lanes:
                lanes[row.priority] += 1
        return lanes

    def lines(self, hub: str, max_agents: int = 20) -> list[str]:
        """The screen, top to bottom."""
        clock = time.strftime("%H:%M:%S")
        out = [f"agentcom watch  {hub}  {clock}  (Ctrl-C to quit)", ""]
        if not self.loaded:
            return [*out, "loading…"]
        out.append(f"AGENTS {len(self.agents)}")
        agents = sorted(self.agents.items())
        out += table(
            ("AGENT", "STATE", "TASK", "FLAGS"),
            [
                (agent_id, row.state, row.task_id or "-", ",".join(row.flags) or "-")
                for agent_id, row in agents[:max_agents]
            ],
        )
        if len(agents) > max_agents:
            out.append(f"… and {len(agents) - max_agents} more")
        lanes = self.queued_by_lane()
        out += ["", "QUEUED  " + " · ".join(f"{lane} {lanes[lane]}" for lane in LANES), ""]
        out.append("TASKS (last changed)")
        out += table(
            ("TASK", "STATUS", "LANE", "AGENT", "PROGRESS"),
            [
                (
                    task_id,
                    row.status,
                    row.priority,
                    row.agent or "-",
                    "-" if row.progress is None else f"{row.progress}%",
                )
                for task_id in reversed(self._recent_tasks)
                if (row := self.tasks.get(task_id)) is not None
            ],
        )
        out += ["", "EVENTS"]
        for event in reversed(self.events):
            at = time.strftime("%H:%M:%S", time.localtime(event.timestamp / 1000))
            out.append(f"{at}  {event.type:<17} {event.task_id or event.agent_id or ''}")
        return out


class Screen:
    """Redraws whole frames in place on the terminal's alternate screen."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        out.write("\x1b[?1049h\x1b[?25l")  # alternate screen, cursor hidden

    def draw(self, lines: list[str]) -> None:
        size = shutil.get_terminal_size()
        shown = [line[: size.columns] for line in lines[: size.lines - 1]]
        # Home, each line then "clear to its end", then clear below: no flicker.
        self._out.write("\x1b[H" + "".join(line + "\x1b[K\r\n" for line in shown) + "\x1b[J")
        self._out.flush()

    def close(self) -> None:
        self._out.write("\x1b[?25h\x1b[?1049l")
        self._out.flush()
