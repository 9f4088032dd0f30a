"""``agentcom watch`` in a pseudo-terminal (pexpect): a task moves from queued to completed
on the live view, and Ctrl-C leaves it cleanly."""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Iterator

import pexpect
import pytest

from agentcom.cli import EXIT_UNAUTHORIZED, EXIT_UNREACHABLE
from agentcom.client import AgentState, Event, Task
from agentcom.client.watch import HubView
from tests.cli.conftest import Cli
from tests.integration.conftest import LiveHub
from tests.integration.helpers import work_through

pytestmark = pytest.mark.stores("sqlite")  # over HTTP only: the store is not what is tested

WAIT_S = 15


@pytest.fixture
def watch(cli: Cli) -> Iterator[pexpect.spawn]:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "agentcom", "watch"],
        env=cli.env,
        encoding="utf-8",
        dimensions=(50, 120),
        timeout=WAIT_S,
        # As at a terminal: a suite started in the background (`tox &`, nohup)
        # ignores SIGINT, and a child would inherit that and never see Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    yield child
    child.close(force=True)


def test_a_task_moves_from_queued_to_completed(watch: pexpect.spawn, hub: LiveHub) -> None:
    watch.expect(r"AGENTS 0")  # loaded: the stream is attached, the state read
    task_id = hub.submit("watch me", priority="high")
    watch.expect(rf"{task_id}\s+queued\s+high")
    watch.expect(r"QUEUED  urgent 0 · high 1 · normal 0 · low 0")
    agent = hub.agent("worker-1")
    watch.expect(r"AGENTS 1")
    work_through(agent, 1)
    watch.expect(rf"{task_id}\s+completed\s+high\s+worker-1")
    watch.expect(r"QUEUED  urgent 0 · high 0 · normal 0 · low 0")
    watch.expect(r"worker-1\s+idle\s+-")
    watch.expect(rf"task_completed\s+{task_id}")

    watch.sendintr()  # Ctrl-C
    watch.expect(pexpect.EOF)
    assert watch.before.endswith("\x1b[?25h\x1b[?1049l"), repr(watch.before[-40:])
    watch.close()
    assert watch.exitstatus == 0, (watch.exitstatus, watch.signalstatus)


def test_a_wrong_token_ends_watch_with_one_line(cli: Cli) -> None:
    done = cli("watch", AGENTCOM_TOKEN="wrong")
    assert (done.returncode, done.stdout) == (EXIT_UNAUTHORIZED, "")
    assert done.stderr.startswith("agentcom: unauthorized: the hub refused the token")


def test_a_hub_down_at_the_start_ends_watch_with_one_line(cli: Cli) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"
        done = cli("watch", AGENTCOM_HUB=url)
    assert (done.returncode, done.stdout) == (EXIT_UNREACHABLE, "")
    assert done.stderr.startswith(f"agentcom: hub unreachable at {url}")


# --- the view's state, event by event (no hub needed) ------------------------------------


def event(event_id: int, kind: str, **fields: object) -> Event:
    return Event.from_json({"id": event_id, "type": kind, "timestamp": 1_700_000_000_000, **fields})


def test_a_failed_reclaimed_or_rejected_task_is_back_in_its_lane() -> None:
    view = HubView()
    view.load([], [])
    view.apply(event(1, "task_queued", task_id="t1", priority="high"))
    assert view.queued_by_lane()["high"] == 1
    for n, back in enumerate(("task_failed", "task_reclaimed", "task_rejected"), start=2):
        view.apply(event(n * 2, "task_assigned", task_id="t1", agent_id="a1"))
        assert view.queued_by_lane()["high"] == 0
        view.apply(event(n * 2 + 1, back, task_id="t1", agent_id="a1"))
        assert view.queued_by_lane()["high"] == 1, back
    view.apply(event(20, "task_cancelled", task_id="t1"))
    assert view.queued_by_lane()["high"] == 0 and view.tasks["t1"].status == "cancelled"


def test_agents_join_change_state_and_leave() -> None:
    view = HubView()
    view.load([AgentState.from_json({"agent_id": "a1", "fsm_state": "idle"})], [])
    view.apply(event(1, "agent_joined", agent_id="a2"))
    view.apply(
        event(2, "agent_state", agent_id="a2", fsm_state="working", current_task_id="t1", flags=[])
    )
    assert (view.agents["a2"].state, view.agents["a2"].task_id) == ("working", "t1")
    view.apply(event(3, "agent_left", agent_id="a1"))
    assert list(view.agents) == ["a2"]


def test_only_the_recent_finished_tasks_are_kept() -> None:
    view = HubView(recent_tasks=2)
    view.load([], [Task.from_json({"id": "old", "status": "queued", "priority": "low"})])
    for n in range(5):
        view.apply(event(2 * n, "task_queued", task_id=f"t{n}", priority="normal"))
        view.apply(event(2 * n + 1, "task_completed", task_id=f"t{n}", agent_id="a1"))
    assert sorted(view.tasks) == ["old", "t3", "t4"]  # the queued one stays: it counts
    assert view.queued_by_lane()["low"] == 1


def test_a_reset_loads_the_state_again() -> None:
    view = HubView()
    view.load([], [Task.from_json({"id": "t1", "status": "queued", "priority": "urgent"})])
    view.load([], [])
    assert view.queued_by_lane()["urgent"] == 0 and view.tasks == {}
