"""The HTTP layer's token check on either store: another process's changes count.

On SQLite the token file's ``data_version`` moves at the other connection's
commit; on PostgreSQL a trigger's ``NOTIFY`` arrives a moment after it. A
token made elsewhere must be accepted on the very next request all the same
(an unknown token makes the check look again, exactly), and a revoked one
refused within the hub's token watch interval.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from agentcom.actors.token_registry import TokenRegistry
from agentcom.clock import now_ms
from agentcom.http.auth import TokenCheck
from agentcom.hub import TOKEN_WATCH_INTERVAL_MS
from agentcom.store import TokenStore
from agentcom.stores import open_stores
from agentcom.stores.interface import Stores
from tests.waiting import wait_until

ROUNDS = 30


@pytest.fixture
def stores(store_url: str | None, tmp_path: Path) -> Iterator[Stores]:
    yield open_stores(store_url, tmp_path)
    pykka.ActorRegistry.stop_all()


def test_a_token_made_by_another_process_counts_from_the_next_request(stores: Stores) -> None:
    registry = TokenRegistry.start(stores).proxy()
    check = TokenCheck(registry, stores)
    cli_side = TokenStore(stores.connect("tokens"))

    async def scenario() -> None:
        for n in range(ROUNDS):
            made = cli_side.create(f"agent-{n}", "agent", now_ms())
            info = await check.verify(made)
            assert info is not None and info.agent_id == f"agent-{n}", f"round {n}"

    asyncio.run(scenario())
    check.close()
    cli_side.close()


def test_a_token_revoked_by_another_process_is_refused_within_the_watch_interval(
    stores: Stores,
) -> None:
    registry = TokenRegistry.start(stores).proxy()
    check = TokenCheck(registry, stores)
    cli_side = TokenStore(stores.connect("tokens"))
    token = cli_side.create("erin", "agent", now_ms())

    async def scenario() -> Any:
        assert await check.verify(token) is not None
        cli_side.revoke("erin")
        deadline = asyncio.get_running_loop().time() + TOKEN_WATCH_INTERVAL_MS / 1000
        while await check.verify(token) is not None:
            assert asyncio.get_running_loop().time() < deadline, "still accepted"
            await asyncio.sleep(0.001)

    asyncio.run(scenario())
    check.close()
    cli_side.close()


@pytest.mark.stores("postgresql")
def test_the_postgresql_watch_waits_in_its_own_thread_and_comes_back_after_a_kill(
    stores: Stores, store_url: str
) -> None:
    """The IOLoop only reads a counter; connecting, waiting for notices and
    reconnecting happen in the watch's thread, which ``close`` ends."""
    import psycopg  # only this store's test needs the driver

    watch = stores.token_watch()
    cli_side = TokenStore(stores.connect("tokens"))
    try:
        before = watch.version()
        cli_side.create("ada", "agent", now_ms())
        wait_until(lambda: watch.version() > before, what="the create's notice")
        with psycopg.connect(store_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'agentcom-token-watch'"
                " AND datname = current_database()"
            )
        killed = watch.version()
        wait_until(lambda: watch.version() > killed, what="the reconnect, counted as a change")
        listening = watch.version()
        cli_side.revoke("ada")
        wait_until(lambda: watch.version() > listening, what="the revoke's notice")
    finally:
        watch.close()
        cli_side.close()
    assert "token-watch" not in {thread.name for thread in threading.enumerate()}
