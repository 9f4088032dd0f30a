"""Fixtures for the worker's tests: hubs and worker processes, all stopped at teardown.

Every worker process is killed at teardown (by its own pid), and so is every
command group the tests recorded in runs.log; each worker's log is printed,
which pytest shows when the test failed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentcom.hub import HubThread
from agentcom.worker.process import group_is_alive
from tests.worker.harness import Hubs, Workers, runs
from tests.worker.scripted_hub import ScriptedHub


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 022, the usual default: what is not made private explicitly is world-readable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.fixture
def hubs(tmp_path: Path) -> Iterator[Hubs]:
    hubs = Hubs(tmp_path / "hub-data")
    yield hubs
    if hubs.running is not None:
        hubs.stop()


@pytest.fixture
def hub(hubs: Hubs) -> HubThread:
    return hubs.start()


@pytest.fixture
def scripted_hub() -> Iterator[ScriptedHub]:
    with ScriptedHub() as hub:
        yield hub


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    workers = Workers(tmp_path)
    yield workers
    for worker in workers.started:
        worker.kill()
    # A test that failed midway may leave a command its killed worker started.
    for pgid in runs(tmp_path):
        if group_is_alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
    for worker in workers.started:
        print(f"--- {worker.log_path.name}\n{worker.log_path.read_text()}")
