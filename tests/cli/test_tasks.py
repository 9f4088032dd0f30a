"""``agentcom task …``, ``stats`` and ``agents`` against a real hub: tables, --json, exit codes."""

from __future__ import annotations

import re
import threading

import pytest

from agentcom.cli import (
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_TASK_FAILED,
    EXIT_TASK_FINISHED,
    EXIT_TIMEOUT,
)
from tests.cli.conftest import Cli
from tests.integration.conftest import LiveHub
from tests.integration.helpers import fail_to_dead_letter, work_through

pytestmark = pytest.mark.stores("sqlite")  # over HTTP only: the store is not what is tested

TASK_ID = re.compile(r"task-[0-9a-f]{16}")


def test_submit_prints_the_id_and_sends_every_option(cli: Cli, hub: LiveHub) -> None:
    out = cli.ok(
        "task",
        "submit",
        "Write number 7 to a file",
        "--priority",
        "high",
        "--needs",
        "code, python",
        "--metadata",
        '{"repo": "agentcom"}',
        "--max-retries",
        "1",
        "--complete-by",
        "1900000000000",
    )
    assert TASK_ID.fullmatch(out.strip()), out
    task = hub.task(out.strip())
    assert (task["description"], task["priority"], task["max_retries"]) == (
        "Write number 7 to a file",
        "high",
        1,
    )
    assert task["needed_capabilities"] == ["code", "python"]
    assert (task["metadata"], task["complete_by"]) == ({"repo": "agentcom"}, 1900000000000)


def test_submit_json_is_the_hubs_answer(cli: Cli) -> None:
    answer = cli.json("task", "submit", "x")
    assert answer["status"] == "queued" and TASK_ID.fullmatch(answer["task_id"])


def test_get_shows_the_task_and_its_history(cli: Cli, hub: LiveHub) -> None:
    task_id = hub.submit("look at me", metadata={"a": 1})
    out = cli.ok("task", "get", task_id)
    assert re.search(rf"^id\s+{task_id}$", out, re.M)
    assert re.search(r"^status\s+queued$", out, re.M)
    assert re.search(r"^description\s+look at me$", out, re.M)
    assert re.search(r"^WHEN\s+EVENT\s+DETAILS$", out, re.M)
    assert re.search(r"\squeued\s", out.split("WHEN")[1])
    assert cli.json("task", "get", task_id)["metadata"] == {"a": 1}


def test_list_shows_a_table_and_filters(cli: Cli, hub: LiveHub) -> None:
    low = hub.submit("low one", priority="low")
    high = hub.submit("high one", priority="high")
    lines = cli.ok("task", "list").splitlines()
    assert lines[0].split() == ["TASK", "STATUS", "PRIORITY", "AGENT", "CREATED", "DESCRIPTION"]
    assert [line.split()[0] for line in lines[1:]] == [low, high]
    assert [
        line.split()[0] for line in cli.ok("task", "list", "--priority", "high").splitlines()[1:]
    ] == [high]
    listed = cli.json("task", "list", "--status", "queued")
    assert [task["id"] for task in listed["tasks"]] == [low, high] and listed["count"] == 2
    assert cli.json("task", "list", "--status", "completed")["tasks"] == []


def test_list_follows_pages_up_to_its_limit(cli: Cli, hub: LiveHub) -> None:
    ids = [hub.submit(f"task {n}") for n in range(3)]
    shown = cli.json("task", "list", "--limit", "2")
    assert [task["id"] for task in shown["tasks"]] == ids[:2]
    assert shown["next_cursor"] is not None
    assert "raise --limit" in cli.ok("task", "list", "--limit", "2")


def test_submit_wait_prints_the_completed_task(cli: Cli, hub: LiveHub) -> None:
    worker = threading.Thread(target=work_through, args=(hub.agent("worker-1"), 1), daemon=True)
    worker.start()
    out = cli.ok("task", "submit", "quick", "--wait")  # no SECONDS: for as long as it takes
    worker.join(5)
    assert re.search(r"^status\s+completed$", out, re.M)
    assert re.search(r"^assigned_to\s+worker-1$", out, re.M)


def test_submit_wait_that_runs_out_exits_with_the_timeout_status(cli: Cli) -> None:
    done = cli("task", "submit", "nobody takes it", "--wait", "0.3")
    assert done.returncode == EXIT_TIMEOUT
    assert re.fullmatch(r"agentcom: task task-\w+ is still queued after 0.3s\n", done.stderr)
    assert re.search(r"^status\s+queued$", done.stdout, re.M)


def test_wait_on_a_dead_letter_task_exits_with_the_failed_status(cli: Cli, hub: LiveHub) -> None:
    task_id = hub.submit("doomed", max_retries=0)
    fail_to_dead_letter(hub.agent("worker-1"), task_id, "disk on fire")
    done = cli("task", "wait", task_id, "--timeout", "10")
    assert done.returncode == EXIT_TASK_FAILED
    assert done.stderr == f"agentcom: task {task_id} failed: disk on fire\n"
    assert re.search(r"^last_error\s+disk on fire$", done.stdout, re.M)
    as_json = cli("task", "wait", task_id, "--json")
    assert as_json.returncode == EXIT_TASK_FAILED
    assert '"status": "dead_letter"' in as_json.stdout


def test_retry_puts_a_dead_letter_task_back(cli: Cli, hub: LiveHub) -> None:
    task_id = hub.submit("flaky", max_retries=0)
    agent = hub.agent("worker-1")
    fail_to_dead_letter(agent, task_id)
    agent.close()
    assert cli.ok("task", "retry", task_id) == f"{task_id} requeued (normal)\n"
    assert hub.task(task_id)["status"] == "queued"
    again = cli("task", "retry", task_id)
    assert again.returncode == EXIT_NOT_FOUND
    assert again.stderr == "agentcom: not found: dead_letter_task_not_found\n"


def test_cancel_then_cancel_again(cli: Cli, hub: LiveHub) -> None:
    task_id = hub.submit("never mind")
    out = cli.ok("task", "cancel", task_id, "--reason", "changed my mind")
    assert out == f"{task_id} cancelled (was queued)\n"
    assert hub.task(task_id)["status"] == "cancelled"
    again = cli("task", "cancel", task_id)
    assert again.returncode == EXIT_TASK_FINISHED
    assert again.stderr == "agentcom: task already finished: cancelled\n"


def test_an_unknown_task_exits_not_found(cli: Cli) -> None:
    done = cli("task", "get", "task-0000000000000000")
    assert (done.returncode, done.stdout) == (EXIT_NOT_FOUND, "")
    assert done.stderr == "agentcom: not found: task_not_found\n"


def test_a_refused_submission_shows_the_hubs_message(cli: Cli) -> None:
    done = cli("task", "submit", "   ")
    assert done.returncode == EXIT_REFUSED
    assert done.stderr == "agentcom: refused (400): invalid_field: description must not be empty\n"


def test_stats_table_and_json(cli: Cli, hub: LiveHub) -> None:
    hub.submit("a", priority="urgent")
    hub.submit("b")
    out = cli.ok("stats")
    assert re.search(r"^queued\s+2$", out, re.M)
    assert re.search(r"^urgent\s+1$", out, re.M) and re.search(r"^dead_letter\s+0$", out, re.M)
    assert cli.json("stats")["by_priority"]["normal"] == 1


def test_agents_lists_connected_agents_with_their_state(cli: Cli, hub: LiveHub) -> None:
    hub.agent("worker-1", capabilities=["code", {"name": "python"}])
    lines = cli.ok("agents").splitlines()
    assert lines[0].split() == ["AGENT", "STATE", "TASK", "FLAGS", "CAPABILITIES", "SINCE"]
    assert lines[1].split()[:5] == ["worker-1", "idle", "-", "-", "code,python"]
    [agent] = cli.json("agents")["agents"]
    assert (agent["agent_id"], agent["fsm_state"]) == ("worker-1", "idle")
