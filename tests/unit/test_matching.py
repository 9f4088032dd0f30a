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
