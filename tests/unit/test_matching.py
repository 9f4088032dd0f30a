import random
import tracemalloc

from agentcom import matching
from agentcom.matching import QueuedIndex
from agentcom.messages import IdleAgent, Priority


def agent(agent_id: str, *caps: str) -> IdleAgent:
    return IdleAgent(agent_id, frozenset(caps))


def test_lanes_are_served_urgent_first_then_in_submission_order() -> None:
    index = QueuedIndex()
    index.add("low-1", 1, Priority.LOW, ())
    index.add("normal-1", 2, Priority.NORMAL, ())
    index.add("urgent-1", 3, Priority.URGENT, ())
    index.add("normal-2", 4, Priority.NORMAL, ())
    index.add("high-1", 5, Priority.HIGH, ())

    pairs = index.match([agent(f"a{i}") for i in range(5)])

    assert [task for task, _ in pairs] == ["urgent-1", "high-1", "normal-1", "normal-2", "low-1"]


def test_agents_are_taken_in_the_order_given() -> None:
    index = QueuedIndex()
    index.add("t1", 1, Priority.NORMAL, ())
    index.add("t2", 2, Priority.NORMAL, ())

    assert index.match([agent("longest-idle"), agent("newest")]) == [
        ("t1", "longest-idle"),
        ("t2", "newest"),
    ]


def test_a_task_goes_only_to_an_agent_with_every_needed_capability() -> None:
    index = QueuedIndex()
    index.add("needs-gpu-and-python", 1, Priority.URGENT, ("gpu", "python"))

    assert index.match([agent("a", "gpu"), agent("b", "python")]) == []
    assert index.match([agent("a", "gpu"), agent("c", "gpu", "python", "x")]) == [
        ("needs-gpu-and-python", "c")
    ]


def test_a_task_nobody_can_take_does_not_block_the_tasks_behind_it() -> None:
    index = QueuedIndex()
    index.add("needs-gpu", 1, Priority.URGENT, ("gpu",))
    index.add("plain-urgent", 2, Priority.URGENT, ())
    index.add("plain-low", 3, Priority.LOW, ())

    pairs = index.match([agent("a"), agent("b")])

    assert pairs == [("plain-urgent", "a"), ("plain-low", "b")]
    assert "needs-gpu" in index
    assert len(index) == 1


def test_order_wins_over_saving_a_specialist_for_a_later_task() -> None:
    index = QueuedIndex()
    index.add("plain", 1, Priority.NORMAL, ())
    index.add("needs-gpu", 2, Priority.NORMAL, ("gpu",))

    pairs = index.match([agent("gpu-box", "gpu"), agent("plain-box")])

    # FIFO within the lane: the older plain task takes the first agent offered.
    assert pairs == [("plain", "gpu-box")]
    assert "needs-gpu" in index


def test_adding_a_task_twice_queues_it_once() -> None:
    index = QueuedIndex()
    index.add("t1", 1, Priority.NORMAL, ())
    index.add("t1", 1, Priority.NORMAL, ())

    assert index.match([agent("a"), agent("b")]) == [("t1", "a")]


def test_an_emptied_group_is_removed() -> None:
    index = QueuedIndex()
    index.add("plain", 1, Priority.NORMAL, ())
    index.add("gpu-1", 2, Priority.NORMAL, ("gpu",))
    index.add("gpu-2", 3, Priority.NORMAL, ("gpu",))
    index.add("gpu-python", 4, Priority.HIGH, ("python", "gpu"))
    assert index.group_count == 3

    index.match([agent("a")])
    assert index.group_count == 2

    index.match([agent("b", "gpu"), agent("c", "gpu", "python")])
    assert index.group_count == 1  # gpu-python and gpu-1 went; gpu-2 is still queued

    index.match([agent("d", "gpu")])
    assert index.group_count == 0
    assert len(index) == 0


def test_a_drained_backlog_gives_its_memory_back() -> None:
    def held_by_the_index() -> int:
        traces = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, matching.__file__)]
        )
        return sum(stat.size for stat in traces.statistics("filename"))

    tracemalloc.start()
    try:
        index = QueuedIndex()
        for n in range(10_000):
            index.add(f"rare-{n}", n, Priority.NORMAL, (f"rare-{n}",))
        full = held_by_the_index()

        pairs = index.match([agent(f"a{n}", f"rare-{n}") for n in range(10_000)])
        assert len(pairs) == 10_000
        del pairs
        drained = held_by_the_index()
    finally:
        tracemalloc.stop()

    # What stays is CPython's freelists, not groups, names or tables.
    assert drained < full / 20, (drained, full)
    assert index.group_count == 0
    # Nothing is left filed under those capabilities either.
    index.add("plain", 10_000, Priority.NORMAL, ())
    examined = index.groups_examined
    assert index.match([agent("z", *(f"rare-{n}" for n in range(100)))]) == [("plain", "z")]
    assert index.groups_examined - examined == 1


def test_groups_needing_a_capability_no_agent_has_are_never_examined() -> None:
    index = QueuedIndex()
    for n in range(20_000):
        index.add(f"rare-{n}", n, Priority.NORMAL, (f"rare-{n}",))
    index.add("plain", 20_000, Priority.NORMAL, ())
    index.add("gpu", 20_001, Priority.NORMAL, ("gpu",))
    index.add("gpu-python", 20_002, Priority.NORMAL, ("gpu", "python"))
    examined = index.groups_examined

    pairs = index.match([agent("a"), agent("b", "gpu"), agent("c", "gpu", "python")])

    assert pairs == [("plain", "a"), ("gpu", "b"), ("gpu-python", "c")]
    # Each of the three capability sets tests at most the three groups that are
    # not rare; a scan tests all 20,003 groups for each task it hands out.
    assert index.groups_examined - examined <= 3 * 3
    assert len(index) == 20_000


def reference_match(
    queued: dict[str, tuple[int, Priority, frozenset[str]]], agents: list[IdleAgent]
) -> list[tuple[str, str]]:
    """The matching rule, written as plainly as possible: lanes urgent to low;
    in a lane, the oldest task some free agent can serve, to the first such agent."""
    free = list(agents)
    pairs = []
    for lane in Priority:
        while free:
            servable = [
                (seq, task_id, needs)
                for task_id, (seq, priority, needs) in queued.items()
                if priority is lane and any(needs <= a.capabilities for a in free)
            ]
            if not servable:
                break
            _, task_id, needs = min(servable)
            taker = next(a for a in free if needs <= a.capabilities)
            free.remove(taker)
            del queued[task_id]
            pairs.append((task_id, taker.agent_id))
    return pairs


def test_matching_agrees_with_the_rule_on_random_queues() -> None:
    rng = random.Random(16)
    capabilities = ["gpu", "python", "rust", "web", "x"]
    for _ in range(200):
        index = QueuedIndex()
        queued: dict[str, tuple[int, Priority, frozenset[str]]] = {}
        seq = 0
        for _ in range(rng.randrange(1, 6)):
            for _ in range(rng.randrange(0, 15)):
                seq += 1
                task = (
                    seq,
                    rng.choice(list(Priority)),
                    frozenset(rng.sample(capabilities, rng.randrange(0, 3))),
                )
                queued[f"t{seq}"] = task
                index.add(f"t{seq}", *task)
            agents = [
                agent(f"a{n}", *rng.sample(capabilities, rng.randrange(0, 4)))
                for n in range(rng.randrange(0, 8))
            ]

            assert index.match(agents) == reference_match(queued, agents)
            assert len(index) == len(queued)
            assert index.group_count == len({(p, needs) for _, p, needs in queued.values()})


def test_a_removed_task_is_never_matched_and_its_emptied_group_goes() -> None:
    index = QueuedIndex()
    index.add("keep", 1, Priority.NORMAL, ())
    index.add("gone", 2, Priority.HIGH, ("gpu",))
    index.add("gone-too", 3, Priority.NORMAL, ())
    index.remove("gone", Priority.HIGH, ("gpu",))
    index.remove("gone-too", Priority.NORMAL, ())
    index.remove("never-queued", Priority.LOW, ())  # nothing to do
    assert "gone" not in index and len(index) == 1
    assert index.group_count == 1

    assert index.match([agent("a", "gpu"), agent("b", "gpu")]) == [("keep", "a")]
