"""End to end matching: priority lanes, first-in first-out, capability subsets."""

from __future__ import annotations

from tests.integration.helpers import events, work_through


def test_priority_first_then_first_in_first_out(hub):
    submitted = {}
    for name, lane in [
        ("low1", "low"),
        ("normal1", "normal"),
        ("high1", "high"),
        ("urgent1", "urgent"),
        ("normal2", "normal"),
        ("high2", "high"),
        ("low2", "low"),
        ("urgent2", "urgent"),
        ("default", None),
    ]:
        fields = {} if lane is None else {"priority": lane}
        submitted[hub.submit(name, **fields)] = name
    agent = hub.agent("a1")
    order = [submitted[task_id] for task_id in work_through(agent, len(submitted))]
    assert order == [
        "urgent1",
        "urgent2",
        "high1",
        "high2",
        "normal1",
        "normal2",
        "default",
        "low1",
        "low2",
    ]


def test_a_task_goes_only_to_an_agent_with_every_capability(hub):
    gpu = hub.submit("needs a gpu", priority="urgent", needed_capabilities=["gpu"])
    both = hub.submit("needs both", priority="high", needed_capabilities=["code", "review"])
    code = hub.submit("needs code", needed_capabilities=["code"])
    anyone = hub.submit("anyone", priority="low")

    coder = hub.agent("coder", ["code"])
    # the urgent gpu task and the high one needing review do not block the rest
    assert work_through(coder, 2) == [code, anyone]
    coder.round_trip()
    assert coder.pending("task_assign") == []
    assert hub.task(gpu)["status"] == "queued"
    assert hub.task(both)["status"] == "queued"

    reviewer = hub.agent("reviewer", [{"name": "review"}])
    reviewer.round_trip()
    assert reviewer.pending("task_assign") == []

    full = hub.agent("full", ["review", {"name": "code"}, "docs"])
    assert work_through(full, 1) == [both]
    gpu_agent = hub.agent("gpu-box", [{"name": "gpu"}])
    assert work_through(gpu_agent, 1) == [gpu]
    assert events(hub.task(gpu)) == ["queued", "assigned", "completed"]


def test_a_new_task_goes_to_an_idle_capable_agent_at_once(hub):
    busy = hub.agent("busy", ["code"])
    blocker = hub.submit("keeps busy busy")
    busy.recv("task_assign", task_id=blocker)
    idle = hub.agent("idle", ["code"])
    task_id = hub.submit("urgent code", priority="urgent", needed_capabilities=["code"])
    idle.recv("task_assign", task_id=task_id)
    assert hub.task(task_id)["assigned_to"] == "idle"
