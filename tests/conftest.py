"""Fixtures every suite shares: the client loop, and the store each hub runs on.

A test that asks for ``store_kind`` (directly or through a fixture such as
``store_url``, which every hub-starting fixture uses) runs once per store:
``[sqlite]`` and ``[postgresql]``. One suite, two stores. A test about
something only one store has says so with ``@pytest.mark.stores("sqlite")``
and a comment saying why.

The PostgreSQL server is one per test session (``tests/pg_server.py``: ours
in a temp dir, or the one ``AGENTCOM_TEST_POSTGRES`` names); every hub gets a
database of its own on it. Without server binaries or psycopg the postgresql
cases skip, saying what to install; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from simulator.scratch_database import scratch_database
from tests.integration.helpers import ClientLoop
from tests.pg_server import (
    PostgresServer,
    PostgresUnavailable,
    require_psycopg,
    running_server,
)
from tests.unavailable import unavailable

STORE_KINDS = ("sqlite", "postgresql")

# A store URL for one hub; None is the hub's default (SQLite in its data dir).
NewStoreUrl = Callable[[], str | None]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "stores(*kinds): run only on these stores (default: sqlite and postgresql)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("stores")
        kinds = marker.args if marker else STORE_KINDS
        unknown = set(kinds) - set(STORE_KINDS)
        assert not unknown, f"no such store: {unknown}"
        metafunc.parametrize("store_kind", kinds)


@pytest.fixture(scope="session")
def clients() -> Iterator[ClientLoop]:
    """One loop on its own thread for every WebSocket client of the session."""
    loop = ClientLoop()
    yield loop
    loop.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A superuser DSN of the session's PostgreSQL server."""
    try:
        with running_server() as dsn:
            yield dsn
    except PostgresUnavailable as why:
        unavailable(f"no PostgreSQL server for the postgresql cases: {why}")


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A server for this test alone, which it may stop and start (``halt``, ``launch``)."""
    try:
        require_psycopg()
        server = PostgresServer()
    except PostgresUnavailable as why:
        unavailable(f"no PostgreSQL server: {why}")
    with server:
        yield server


@pytest.fixture
def new_store_url(store_kind: str, request: pytest.FixtureRequest) -> Iterator[NewStoreUrl]:
    """Each call, a store of its own for one more hub (dropped after the test's hubs stop)."""
    with contextlib.ExitStack() as databases:

        def new() -> str | None:
            if store_kind == "sqlite":
                return None
            server: str = request.getfixturevalue("postgres_server")
            return databases.enter_context(scratch_database(server, "test"))

        yield new


@pytest.fixture
def store_url(new_store_url: NewStoreUrl) -> str | None:
    """The store of the test's one hub: None on sqlite (its data dir), a fresh database."""
    return new_store_url()
