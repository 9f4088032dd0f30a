"""Client and AsyncClient: every task and agent method against a real hub, and each error."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest

from agentcom.client import (
    AgentState,
    BadRequest,
    Cancelled,
    Client,
    Forbidden,
    HubUnavailable,
    NotFound,
    Submitted,
    Task,
    TaskCancelled,
    TaskFailed,
    TaskFinished,
    TaskNotDone,
    TaskRequest,
    Unauthorized,
)
from agentcom.client import api as client_api
from tests.integration.conftest import LiveHub
from tests.integration.helpers import fail_to_dead_letter, work_through

# The client speaks to the hub over HTTP only; which store the hub runs on is the
# integration suite's concern, so these run on the default one.
pytestmark = pytest.mark.stores("sqlite")


def in_background(work: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=work, args=args, daemon=True)
    thread.start()
    return thread


def test_submit_sends_every_field_and_get_reads_them_back(api: Any) -> None:
    submitted = api.submit(
        "summarise README.md",
        priority="high",
        metadata={"repo": "agentcom"},
        needed_capabilities=["code", "python"],
        max_retries=2,
        complete_by=1_900_000_000_000,
    )
    assert isinstance(submitted, Submitted)
    assert submitted.status == "queued" and submitted.priority == "high"
    task = api.get(submitted.task_id)
    assert isinstance(task, Task)
    assert (task.id, task.description, task.status) == (
        submitted.task_id,
        "summarise README.md",
        "queued",
    )
    assert task.metadata == {"repo": "agentcom"}
    assert task.needed_capabilities == ["code", "python"]
    assert (task.priority, task.max_retries, task.complete_by) == ("high", 2, 1_900_000_000_000)
    assert [entry.event for entry in task.history] == ["queued"]
    assert task.raw["id"] == task.id  # the hub's JSON as it came


def test_an_idempotency_key_submits_once(api: Any) -> None:
    first = api.submit("charge order 42", idempotency_key="order-42")
    again = api.submit("charge order 42", idempotency_key="order-42")
    assert again.task_id == first.task_id
    assert len(api.list().tasks) == 1


def test_submit_many_submits_in_order(api: Any) -> None:
    answers = api.submit_many(["one", TaskRequest("two", priority="low"), "three"])
    assert [answer.priority for answer in answers] == ["normal", "low", "normal"]
    listed = api.list(status="queued").tasks
    assert [task.id for task in listed] == [answer.task_id for answer in answers]
    assert [task.description for task in listed] == ["one", "two", "three"]


def test_submit_many_is_one_batch_all_or_nothing(api: Any) -> None:
    with pytest.raises(BadRequest) as refused:
        api.submit_many(["fine", TaskRequest("bad", priority="asap"), "fine too"])
    assert refused.value.body["index"] == 1 and "priority must be one of" in str(refused.value)
    assert api.list().tasks == []  # one at a time would have queued "fine"


def test_submit_many_splits_past_the_batch_limit(api: Any) -> None:
    descriptions = [f"task {n}" for n in range(1_001)]
    answers = api.submit_many(descriptions)
    assert len({answer.task_id for answer in answers}) == 1_001
    first = api.list(limit=1_000)
    rest = api.list(limit=1_000, cursor=first.next_cursor)
    assert [task.description for task in first.tasks + rest.tasks] == descriptions


def test_submit_many_sends_a_keyed_task_alone_so_a_rerun_skips_it(api: Any) -> None:
    tasks = ["a", TaskRequest("b", idempotency_key="order-b"), "c"]
    first = api.submit_many(tasks)
    assert [task.description for task in api.list().tasks] == ["a", "b", "c"]
    again = api.submit_many([TaskRequest("b", idempotency_key="order-b")])
    assert again[0].task_id == first[1].task_id
    assert len(api.list().tasks) == 3


def test_list_pages_with_next_cursor_and_filters(api: Any) -> None:
    ids = [answer.task_id for answer in api.submit_many(["a", "b", "c"])]
    api.submit("urgent one", priority="urgent")
    first = api.list(priority="normal", limit=2)
    assert [task.id for task in first.tasks] == ids[:2]
    assert first.next_cursor is not None
    second = api.list(priority="normal", limit=2, cursor=first.next_cursor)
    assert [task.id for task in second.tasks] == ids[2:]
    assert second.next_cursor is None
    assert [task.description for task in api.list(priority="urgent").tasks] == ["urgent one"]


def test_stats_count_by_status_and_lane(api: Any) -> None:
    api.submit_many([TaskRequest("x", priority="high"), "y", "z"])
    stats = api.stats()
    assert stats.by_status["queued"] == 3
    assert (stats.by_priority["high"], stats.by_priority["normal"]) == (1, 2)
    assert stats.dead_letter == 0


def test_wait_returns_as_soon_as_an_agent_completes_the_task(api: Any, hub: LiveHub) -> None:
    task_id = api.submit("do it").task_id
    agent = hub.agent("worker-1")
    started = time.monotonic()
    worker = in_background(work_through, agent, 1)
    task = api.wait(task_id, timeout=30)
    worker.join(5)
    assert task.status == "completed" and task.assigned_to == "worker-1"
    assert time.monotonic() - started < 10, "wait() should answer at the completion"


def test_wait_raises_task_failed_with_the_last_error_for_a_dead_letter(
    api: Any, hub: LiveHub
) -> None:
    task_id = api.submit("doomed", max_retries=0).task_id
    worker = in_background(fail_to_dead_letter, hub.agent("worker-1"), task_id, "disk on fire")
    with pytest.raises(TaskFailed) as failed:
        api.wait(task_id, timeout=30)
    worker.join(5)
    assert failed.value.last_error == "disk on fire"
    assert failed.value.task.status == "dead_letter"


def test_wait_raises_a_timeout_error_when_the_task_is_not_done_in_time(api: Any) -> None:
    task_id = api.submit("nobody takes this").task_id
    started = time.monotonic()
    with pytest.raises(TimeoutError) as late:
        api.wait(task_id, timeout=0.5)
    assert 0.4 < time.monotonic() - started < 5
    assert isinstance(late.value, TaskNotDone) and late.value.task.status == "queued"


def test_a_wait_longer_than_one_long_poll_polls_again_until_its_deadline(
    api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_api, "MAX_WAIT_S", 0.2)  # the hub's 60 s, made short
    task_id = api.submit("nobody takes this").task_id
    started = time.monotonic()
    with pytest.raises(TaskNotDone):
        api.wait(task_id, timeout=1.0)
    assert 0.9 < time.monotonic() - started < 5


def test_a_long_poll_outlasts_the_clients_own_read_timeout(hub: LiveHub) -> None:
    task_id = hub.submit("nobody takes this")
    client = Client(hub.http_url, hub.token, timeout=0.3)
    with client, pytest.raises(TaskNotDone):  # not HubUnavailable: the hub held it for 1 s
        client.wait(task_id, timeout=1.0)


def test_dead_letter_and_retry(api: Any, hub: LiveHub) -> None:
    task_id = api.submit("flaky", max_retries=0).task_id
    worker = hub.agent("worker-1")
    fail_to_dead_letter(worker, task_id)
    worker.close()  # so that the retried task stays queued
    page = api.dead_letter()
    assert [task.id for task in page.tasks] == [task_id] and page.next_cursor is None
    requeued = api.retry(task_id)
    assert (requeued.task_id, requeued.status) == (task_id, "requeued")
    assert api.get(task_id).status == "queued"
    with pytest.raises(NotFound) as not_dead:
        api.retry(task_id)
    assert not_dead.value.error == "dead_letter_task_not_found"


def test_cancel_a_queued_task_then_cancel_again(api: Any) -> None:
    task_id = api.submit("never mind").task_id
    cancelled = api.cancel(task_id, reason="changed my mind")
    assert isinstance(cancelled, Cancelled)
    assert (cancelled.status, cancelled.previous_status) == ("cancelled", "queued")
    assert api.get(task_id).status == "cancelled"
    with pytest.raises(TaskFinished) as finished:
        api.cancel(task_id)
    assert finished.value.task_status == "cancelled" and finished.value.http_status == 409
    with pytest.raises(TaskCancelled):
        api.wait(task_id, timeout=5)


def test_agents_and_agent_state(api: Any, hub: LiveHub) -> None:
    hub.agent("worker-1", capabilities=["code"])
    agents = api.agents()
    assert [(a.agent_id, a.fsm_state) for a in agents] == [("worker-1", "idle")]
    state = api.agent_state("worker-1")
    assert isinstance(state, AgentState)
    assert (state.fsm_state, state.current_task_id, state.capabilities) == ("idle", None, ["code"])
    with pytest.raises(NotFound) as gone:
        api.agent_state("ghost")
    assert gone.value.error == "agent_not_connected"


def test_unknown_task_is_not_found(api: Any) -> None:
    with pytest.raises(NotFound) as missing:
        api.get("task-0000000000000000")
    assert (missing.value.http_status, missing.value.error) == (404, "task_not_found")


def test_an_id_with_a_slash_stays_one_path_segment(api: Any) -> None:
    with pytest.raises(NotFound) as missing:
        api.get("../stats")
    assert missing.value.error == "task_not_found"


def test_bad_request_carries_the_hubs_message(api: Any) -> None:
    with pytest.raises(BadRequest) as refused:
        api.submit("x", priority="asap")
    assert refused.value.http_status == 400
    assert "priority must be one of" in str(refused.value)


def test_a_wrong_token_is_unauthorized(connect: Any, hub: LiveHub) -> None:
    with pytest.raises(Unauthorized):
        connect(hub.http_url, "not-a-token").stats()
    with pytest.raises(Unauthorized):
        connect(hub.http_url, None).stats()


def test_a_viewer_may_not_submit(connect: Any, hub: LiveHub) -> None:
    viewer = connect(hub.http_url, hub.thread.create_token("screen", role="viewer"))
    assert viewer.stats().dead_letter == 0  # reading is fine
    with pytest.raises(Forbidden):
        viewer.submit("x")


def test_nothing_listening_is_hub_unavailable(connect: Any) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(HubUnavailable) as down:
            connect(f"http://127.0.0.1:{port}", "t").stats()
    assert down.value.http_status == 0 and "unreachable" in str(down.value)


def test_a_hub_that_never_answers_is_hub_unavailable_after_the_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never answers
        client = Client(f"http://127.0.0.1:{silent.getsockname()[1]}", "t", timeout=0.3)
        started = time.monotonic()
        with client, pytest.raises(HubUnavailable) as down:
            client.stats()
    assert time.monotonic() - started < 5
    assert str(down.value).startswith("hub unreachable at http://127.0.0.1:")


def test_a_client_is_a_context_manager(hub: LiveHub) -> None:
    with Client(hub.http_url, hub.token) as client:
        assert client.stats().by_status["queued"] == 0
