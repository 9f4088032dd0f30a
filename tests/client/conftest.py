"""The client against a real hub: tests/integration's hub fixtures, and each test run
once with ``Client`` and once with ``AsyncClient`` where it asks for ``api``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agentcom.client import AsyncClient, Client

# Every fixture of tests/integration (the hubs and what they ask for), shared
# rather than copied; a star import keeps up as that conftest grows fixtures.
from tests.integration.conftest import *  # noqa: F403
from tests.integration.conftest import LiveHub
from tests.integration.helpers import ClientLoop


class AsyncCalls:
    """An ``AsyncClient`` whose methods are called like ``Client``'s: each coroutine runs to
    its end on the session's client loop, so one test body checks both clients."""

    def __init__(self, client: AsyncClient, loop: ClientLoop) -> None:
        self._client, self._loop = client, loop

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run(method(*args, **kwargs), timeout=120)

        return call

    def close(self) -> None:
        self._loop.run(self._client.aclose())


@pytest.fixture(params=["sync", "async"])
def connect(request: pytest.FixtureRequest, clients: ClientLoop) -> Iterator[Any]:
    """``connect(url, token)``: a ``Client``, or an ``AsyncClient`` called the same way."""
    opened: list[Client | AsyncCalls] = []

    def open_(url: str, token: str | None) -> Client | AsyncCalls:
        client = (
            Client(url, token)
            if request.param == "sync"
            else AsyncCalls(AsyncClient(url, token), clients)
        )
        opened.append(client)
        return client

    yield open_
    for client in opened:
        client.close()


@pytest.fixture
def api(connect: Any, hub: LiveHub) -> Any:
    """The test's hub as its submitter (an ``agent`` token) sees it, sync or async."""
    return connect(hub.http_url, hub.token)
