"""The queued-task index and the matching rule, as pure data structures.

The rule: lanes are served from urgent to low; inside a lane the oldest task
(lowest seq) among the tasks some free agent can serve goes to the first agent
in the given order that can serve it (the Scheduler sets that order: unflagged
agents idle longest first). A task nobody can take never blocks the tasks
behind it.

Priority aging (``aging_ms`` > 0) changes only which lane a task competes in:
its effective lane rises by one for every full ``aging_ms`` since it was
queued (``queued_at``: the caller's lookup), up to urgent, and the next task is
the servable one with the best (effective lane, seq). It needs no re-sort: in
a lane the oldest servable task is also the one aged furthest, so only each
lane's head is compared, four heads per assignment. With ``aging_ms`` 0 the
lanes are strict and a lane is not even looked at until the ones above it
have nothing left for the free agents.

Queued tasks are grouped by lane and, within a lane, by the exact set of
capabilities they need; each group is a heap on submission order. A lane also
files every group that needs something under one of its capabilities, the
smallest by name. To find the groups an agent with capabilities C can serve,
matching takes the group that needs nothing and the groups filed under the
names in C, and tests each of those for needs ⊆ C. A group that needs a
capability no offered agent has is never looked at, unless it is filed under
another capability the agent does have. So matching costs in proportion to the
groups filed under the offered agents' capabilities, not to the groups in the
lane: 20,000 groups that each need a capability nobody has cost an agent with
no capabilities nothing.

Each group is filed once, under a single name, not under every name it needs
(with hits counted), so the filing costs one entry per group. A name with a
single group holds that group's key itself rather than a set, which keeps the
filing cost low in the common case. Enumerating the subsets of C instead would
cost 2^|C| lookups per agent whatever is queued.

A group that empties is dropped at once, from the lane and from its name, and a
table that empties is cleared (CPython does not shrink a dict or set as it
loses entries), so the memory of a drained backlog is given back.

A matching round works per distinct capability set among the offered agents,
not per agent: per lane it collects the servable groups once, keeps their
oldest tasks in a heap, and drops a group from the round when no agent left can
serve it. Agents do not come back within a round, so a dropped group stays
unservable until the round ends.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence

from agentcom.messages import IdleAgent, Priority

_Group = list[tuple[int, str]]  # a heap of (seq, task_id)
_Heads = list[tuple[tuple[int, str], frozenset[str]]]  # a heap of group heads
_Free = deque[tuple[int, IdleAgent]]  # free agents of one capability set, in the order given
_NOTHING: frozenset[str] = frozenset()


class _Lane:
    """One priority lane's groups, by what they need and filed by name."""

    __slots__ = ("_filed", "groups")

    def __init__(self) -> None:
        self.groups: dict[frozenset[str], _Group] = {}
        # smallest needed name -> the needs of the groups filed there (a bare
        # frozenset when it is the only one, which is the common case)
        self._filed: dict[str, frozenset[str] | set[frozenset[str]]] = {}

    def add(self, needs: frozenset[str], seq: int, task_id: str) -> None:
        group = self.groups.get(needs)
        if group is None:
            group = self.groups[needs] = []
            if needs:
                self._file(needs)
        heapq.heappush(group, (seq, task_id))

    def remove(self, needs: frozenset[str], task_id: str) -> None:
        group = self.groups[needs]
        group[:] = [entry for entry in group if entry[1] != task_id]
        if group:
            heapq.heapify(group)
        else:
            self.drop(needs)

    def candidates(self, capabilities: frozenset[str]) -> Iterator[frozenset[str]]:
        """The needs of every group an agent with ``capabilities`` might serve:
        the group that needs nothing, and those filed under its capabilities."""
        if _NOTHING in self.groups:
            yield _NOTHING
        filed = self._filed
        if len(capabilities) < len(filed):
            names: Iterable[str] = capabilities
        else:
            names = [name for name in filed if name in capabilities]
        for name in names:
            entry = filed.get(name)
            if isinstance(entry, set):
                yield from entry
            elif entry is not None:
                yield entry

    def drop(self, needs: frozenset[str]) -> None:
        """Forget an emptied group."""
        del self.groups[needs]
        if needs:
            self._unfile(needs)
        if not self.groups:
            self.groups.clear()
            self._filed.clear()

    def _file(self, needs: frozenset[str]) -> None:
        name = min(needs)
        entry = self._filed.get(name)
        if entry is None:
            self._filed[name] = needs
        elif isinstance(entry, set):
            entry.add(needs)
        else:
            self._filed[name] = {entry, needs}

    def _unfile(self, needs: frozenset[str]) -> None:
        name = min(needs)
        entry = self._filed[name]
        if isinstance(entry, set):
            entry.discard(needs)
            if len(entry) == 1:
                self._filed[name] = next(iter(entry))
        else:
            del self._filed[name]


def effective_priority(priority: Priority, queued_at: int, now: int, aging_ms: int) -> Priority:
    """The lane a task queued at ``queued_at`` competes in at ``now``: one higher
    per full ``aging_ms`` waited, up to urgent; its own lane when aging is off."""
    if aging_ms <= 0 or now <= queued_at:
        return priority
    return Priority(max(0, priority - (now - queued_at) // aging_ms))


class QueuedIndex:
    def __init__(self, aging_ms: int = 0, queued_at: Callable[[str], int] | None = None) -> None:
        """With ``aging_ms`` > 0, ``queued_at`` tells when a task was queued (the
        index keeps only seq and id per task, so aging costs it no memory)."""
        if aging_ms > 0 and queued_at is None:
            raise ValueError("aging needs queued_at")
        self._aging_ms = aging_ms
        self._queued_at: Callable[[str], int] = queued_at or (lambda task_id: 0)
        self._lanes = [_Lane() for _ in Priority]
        self._members: set[str] = set()
        # How many groups matching has tested against a capability set, in all:
        # the measure of its work.
        self.groups_examined = 0

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._members

    @property
    def group_count(self) -> int:
        """Capability groups held across all lanes; every one has a queued task."""
        return sum(len(lane.groups) for lane in self._lanes)

    def add(self, task_id: str, seq: int, priority: Priority, needs: Iterable[str]) -> None:
        if task_id in self._members:
            return
        self._lanes[priority].add(frozenset(needs), seq, task_id)
        self._members.add(task_id)

    def remove(self, task_id: str, priority: Priority, needs: Iterable[str]) -> None:
        """Take a queued task out (it was cancelled); it costs the size of its group."""
        if task_id not in self._members:
            return
        self._lanes[priority].remove(frozenset(needs), task_id)
        self._members.discard(task_id)

    def match(self, agents: Sequence[IdleAgent], now: int = 0) -> list[tuple[str, str]]:
        """Pairs (task_id, agent_id), removing the matched tasks from the index;
        ``now`` is when the round runs, for aging."""
        pairs: list[tuple[str, str]] = []
        if not self._members:
            return pairs
        free: dict[frozenset[str], _Free] = {}
        for order, agent in enumerate(agents):
            free.setdefault(agent.capabilities, deque()).append((order, agent))
        if self._aging_ms > 0:
            self._match_aged(free, pairs, now)
        else:
            for lane in self._lanes:
                if not free:
                    break
                if lane.groups:
                    self._match_lane(lane, free, pairs)
        if not self._members:
            self._members.clear()
        return pairs

    def _match_lane(
        self, lane: _Lane, free: dict[frozenset[str], _Free], pairs: list[tuple[str, str]]
    ) -> None:
        servable, heads = self._servable(lane, free)
        while free and _next_head(heads, servable):
            self._take(lane, servable, heads, free, pairs)

    def _match_aged(
        self, free: dict[frozenset[str], _Free], pairs: list[tuple[str, str]], now: int
    ) -> None:
        rounds = [
            (Priority(rank), lane, *self._servable(lane, free))
            for rank, lane in enumerate(self._lanes)
            if lane.groups
        ]
        aging_ms, queued_at = self._aging_ms, self._queued_at
        while free and rounds:
            best: tuple[int, int] | None = None
            chosen: tuple[Priority, _Lane, dict[frozenset[str], list[_Free]], _Heads] | None = None
            for state in rounds:
                rank, _, servable, heads = state
                if not _next_head(heads, servable):
                    continue
                seq, task_id = heads[0][0]
                key = (effective_priority(rank, queued_at(task_id), now, aging_ms), seq)
                if best is None or key < best:
                    best, chosen = key, state
            if chosen is None:
                return
            _, lane, servable, heads = chosen
            self._take(lane, servable, heads, free, pairs)

    def _servable(
        self, lane: _Lane, free: dict[frozenset[str], _Free]
    ) -> tuple[dict[frozenset[str], list[_Free]], _Heads]:
        """Each group of ``lane`` some free agent can serve, with the queues of
        those agents, and the heads of those groups in a heap."""
        servable: dict[frozenset[str], list[_Free]] = {}
        for capabilities, agents in free.items():
            for needs in lane.candidates(capabilities):
                self.groups_examined += 1
                if needs <= capabilities:
                    servable.setdefault(needs, []).append(agents)
        heads = [(lane.groups[needs][0], needs) for needs in servable]
        heapq.heapify(heads)
        return servable, heads

    def _take(
        self,
        lane: _Lane,
        servable: dict[frozenset[str], list[_Free]],
        heads: _Heads,
        free: dict[frozenset[str], _Free],
        pairs: list[tuple[str, str]],
    ) -> None:
        """Give the task at the top of ``heads`` to the first free agent that can serve it."""
        (_, task_id), needs = heads[0]
        takers = [agents for agents in servable[needs] if agents]
        agents = min(takers, key=lambda agents: agents[0][0])
        _, taker = agents.popleft()
        if not agents:
            del free[taker.capabilities]
        group = lane.groups[needs]
        heapq.heappop(group)
        self._members.discard(task_id)
        pairs.append((task_id, taker.agent_id))
        if group:
            heapq.heapreplace(heads, (group[0], needs))
        else:
            heapq.heappop(heads)
            lane.drop(needs)


def _next_head(heads: _Heads, servable: dict[frozenset[str], list[_Free]]) -> bool:
    """Drop from the top of ``heads`` the groups no agent left can serve; False
    when none is left."""
    while heads:
        if any(servable[heads[0][1]]):
            return True
        heapq.heappop(heads)  # every agent that could serve it has been taken
    return False
