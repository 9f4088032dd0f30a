"""``agentcom watch`` in a pseudo-terminal (pexpect): a task moves from queued to completed
on the live view, and Ctrl-C leaves it cleanly."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pexpect
import pytest

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
    env = {**cli.env, "AGENTCOM_TOKEN": "wrong"}
    child = pexpect.spawn(
        sys.executable, ["-m", "agentcom", "watch"], env=env, encoding="utf-8", timeout=WAIT_S
    )
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 3
    assert "agentcom: unauthorized: the hub refused the token" in child.before
