"""Several hubs on one PostgreSQL database (issue 10): the fixtures their tests share.

Every test here starts real hubs (``HubThread``, through ``LiveHub``) on one
fresh database of the session's PostgreSQL server (``postgres_server``,
tests/conftest.py: without a server the tests skip, saying what to install;
under ``CI=true`` they fail). Only PostgreSQL is shared by several hubs, so
these tests have no ``[sqlite]`` case.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.scratch_database import scratch_database
from tests.integration.conftest import QUIET_TIMING, LiveHub
from tests.integration.helpers import ClientLoop

CLUSTER_TIMING = {"hub_lease_ms": 1_500, "cluster_poll_ms": 200}

StartHub = Callable[..., LiveHub]


@pytest.fixture
def shared_db(postgres_server: str) -> Iterator[str]:
    """One new database every hub of the test shares."""
    with scratch_database(postgres_server, "cluster") as url:
        yield url


@pytest.fixture
def start_hub(shared_db: str, tmp_path: Path, clients: ClientLoop) -> Iterator[StartHub]:
    """``start_hub(**settings)``: one more hub on the test's one database."""
    started: list[LiveHub] = []

    def start(**settings: Any) -> LiveHub:
        hub = LiveHub(
            tmp_path / f"hub{len(started)}",
            clients,
            **{**QUIET_TIMING, **CLUSTER_TIMING, "store": shared_db, **settings},
        )
        started.append(hub)
        return hub

    yield start
    for hub in reversed(started):
        with contextlib.suppress(Exception):
            hub.close()


def hub_id(hub: LiveHub) -> str:
    """The id this hub has in the cluster now."""
    cluster = hub.thread.hub.cluster
    assert cluster is not None, "a hub on PostgreSQL is a member of a cluster"
    return cluster.hub_id


def tokens_known(*hubs: LiveHub) -> None:
    """Every token made so far is in every hub's snapshot (the unknown-recipient check).

    On PostgreSQL a hub hears of a token made through another connection by a
    NOTIFY, a moment after its commit; a message sent in that moment would
    find its recipient unknown. This reads the store on each hub, exactly.
    """
    for hub in hubs:
        loop = hub.thread._loop
        assert loop is not None
        refresh = hub.thread.hub.token_check.refresh(exact=True)
        asyncio.run_coroutine_threadsafe(refresh, loop).result(timeout=10)
