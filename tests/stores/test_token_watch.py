"""The HTTP layer's token check on either store: another process's changes count.

On SQLite the token file's ``data_version`` moves at the other connection's
commit; on PostgreSQL a trigger's ``NOTIFY`` arrives a moment after it. A
token made elsewhere must be accepted on the very next request all the same
(an unknown token makes the check look again, exactly), and a revoked one
refused within the hub's token watch interval.
"""

from __future__ import annotations

import asyncio
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
