"""Setup for the smoke suite: a fresh real hub per test, tokens, simulated agents.

Each test gets its own hub on a free port with its own data directory (or,
on PostgreSQL, database) and tokens, so tests share nothing and pass alone or
together. Every test runs on both stores, ``[sqlite]`` and ``[postgresql]``. Teardown stops the
agents first, then the hub.

Every hub timer is set long. Recovery in these tests must come from events (a
dropped connection), so a sweep or timeout that fired mid-test could only hide
a broken event path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentcom.config import HubConfig
from agentcom.hub import HubThread
from tests.smoke.helpers.agents import AgentPool


@pytest.fixture
def hub_config(tmp_path: Path, store_url: str | None) -> HubConfig:
    return HubConfig(
        host="127.0.0.1",
        port=0,
        data_dir=tmp_path,
        store=store_url,
        acceptance_timeout_ms=60_000,
        stuck_threshold_ms=600_000,
        sweep_interval_ms=600_000,
        ping_timeout_ms=60_000,
    )


@pytest.fixture
def hub(hub_config: HubConfig) -> Iterator[HubThread]:
    with HubThread(hub_config) as running_hub:
        yield running_hub


@pytest.fixture
def submitter_token(hub: HubThread) -> str:
    """A token for submitting tasks over HTTP; its agent never connects, so never gets work."""
    return hub.create_token("smoke-submitter", role="agent")


@pytest.fixture
def agents(hub: HubThread) -> Iterator[AgentPool]:
    pool = AgentPool(hub)
    yield pool
    pool.stop_all()
