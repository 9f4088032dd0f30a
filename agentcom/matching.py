"""The queued-task index and the matching rule, as pure data structures.

Queued tasks are grouped by lane and, within a lane, by the exact set of
capabilities they need; each group is a heap on submission order. Matching
walks lanes from urgent to low and, inside a lane, takes the oldest task among
the groups that some free agent can serve, so a task nobody can take never
blocks the tasks behind it, and picking the next task never scans every queued
task. The agent for a task is the first capable one in the order given, which
the Scheduler sets (unflagged agents idle longest first).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence

from agentcom.messages import IdleAgent, Priority


class QueuedIndex:
    def __init__(self) -> None:
        self._lanes: list[dict[frozenset[str], list[tuple[int, str]]]] = [{} for _ in Priority]
        self._members: set[str] = set()

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._members

    def add(self, task_id: str, seq: int, priority: Priority, needs: Iterable[str]) -> None:
        if task_id in self._members:
            return
        group = self._lanes[priority].setdefault(frozenset(needs), [])
        heapq.heappush(group, (seq, task_id))
        self._members.add(task_id)

    def match(self, agents: Sequence[IdleAgent]) -> list[tuple[str, str]]:
        """Pairs (task_id, agent_id), removing the matched tasks from the index."""
        free = list(agents)
        pairs: list[tuple[str, str]] = []
        for lane in self._lanes:
            while free:
                candidates = [
                    (group[0], needs)
                    for needs, group in lane.items()
                    if group and any(needs <= agent.capabilities for agent in free)
                ]
                if not candidates:
                    break
                (_, task_id), needs = min(candidates)
                heapq.heappop(lane[needs])
                self._members.discard(task_id)
                taker = next(agent for agent in free if needs <= agent.capabilities)
                free.remove(taker)
                pairs.append((task_id, taker.agent_id))
        return pairs
