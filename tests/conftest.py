"""Fixtures every suite shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.helpers import ClientLoop


@pytest.fixture(scope="session")
def clients() -> Iterator[ClientLoop]:
    """One loop on its own thread for every WebSocket client of the session."""
    loop = ClientLoop()
    yield loop
    loop.stop()
